"""The ``liveos`` command: the library's main jobs from a shell.

liveos iso disk.qcow2 -o live.iso [--mode full-os] [--kernel-arg quiet] [--label MYLIVE] [--json]
liveos pxe disk.qcow2 -o pxe.tar.gz --base-url http://10.0.0.1/live/   # or a folder
liveos plan disk.qcow2 [--kind pxe --base-url URL] [--json]   # what a build would do, in seconds
liveos boot live.iso                 # QEMU + OVMF smoke boot, serial console to a log

Every build setting has a flag, generated from the settings table (:mod:`liveos.settings`).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from liveos import settings as settings_table
from liveos.boottest import BootConfig, CdRom, boot
from liveos.errors import HostError, LiveOSError, UsageError
from liveos.live import LiveOS
from liveos.pxe.urls import DEFAULT_ISO_NAME
from liveos.settings import OutputKind


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every mount and loop device is released."""
    raise SystemExit(128 + signum)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liveos", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command that runs")
    sub = parser.add_subparsers(dest="command", required=True)

    iso = sub.add_parser("iso", help="turn a disk image into a live ISO (CD and USB bootable)")
    _input_options(iso)
    iso.add_argument("-o", "--output", type=Path, required=True, help="the ISO to write")
    _json_option(iso, "print the build result as JSON")

    pxe = sub.add_parser("pxe", help="turn a disk image into PXE network-boot artifacts")
    _input_options(pxe)
    pxe.add_argument("-o", "--output", type=Path, required=True, help="a folder, or a .tar.gz archive")
    _url_options(pxe)
    pxe.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty folder")
    _json_option(pxe, "print the build result as JSON")

    plan = sub.add_parser("plan", help="show what a build would do and put on the media (builds nothing)")
    _input_options(plan)
    plan.add_argument("--kind", choices=[k.value for k in OutputKind], default=OutputKind.ISO.value)
    _url_options(plan)
    _json_option(plan, "print the plan as JSON")

    boot_cmd = sub.add_parser(
        "boot", help="boot an ISO in QEMU + OVMF and wait for a marker on the serial console"
    )
    boot_cmd.add_argument("iso", type=Path)
    boot_cmd.add_argument("--marker", default="login:", help="text that proves the boot (default: login:)")
    boot_cmd.add_argument("--timeout", type=float, default=300.0)
    boot_cmd.add_argument("--memory", type=int, default=2048, help="guest RAM in MiB")
    return parser


def _input_options(parser: argparse.ArgumentParser) -> None:
    """The input, the scratch space and every build setting (from the settings table)."""
    parser.add_argument("image", type=Path, help="raw, qcow2, vhd or vhdx disk image, or a liveos ISO")
    parser.add_argument(
        "--workdir", type=Path, help="scratch space for the opened image (default: /var/tmp)"
    )
    settings_table.add_cli_arguments(parser.add_argument_group("build settings"))


def _url_options(parser: argparse.ArgumentParser) -> None:
    urls = parser.add_mutually_exclusive_group()
    urls.add_argument("--base-url", help="bootstrap: URL of the folder the bundled ISO is served from")
    urls.add_argument("--file-url", help="bootstrap: full URL of the bundled ISO")
    parser.add_argument(
        "--iso-name",
        default=DEFAULT_ISO_NAME,
        help=f"bootstrap: the ISO's name with --base-url ({DEFAULT_ISO_NAME})",
    )


def _json_option(parser: argparse.ArgumentParser, help_text: str) -> None:
    parser.add_argument("--json", action="store_true", help=help_text)


def _configured(live: LiveOS, args: argparse.Namespace) -> LiveOS:
    return LiveOS(live.image, args.settings)


def _print(data: dict[str, object] | str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(data)


def _cmd_iso(args: argparse.Namespace) -> int:
    with LiveOS.open(args.image, workdir=args.workdir) as opened:
        result = _configured(opened, args).write_iso(args.output)
    _print(result.to_dict() if args.json else result.describe(), args.json)
    if not args.json:
        print(f"boot it: liveos boot {result.output}   (or write it raw to a USB stick)")
    return 0


def _cmd_pxe(args: argparse.Namespace) -> int:
    with LiveOS.open(args.image, workdir=args.workdir) as opened:
        result = _configured(opened, args).write_pxe(
            args.output,
            base_url=args.base_url,
            file_url=args.file_url,
            iso_name=args.iso_name,
            overwrite=args.overwrite,
        )
    _print(result.to_dict() if args.json else result.describe(), args.json)
    if not args.json:
        print("serve it over TFTP with bootx64.efi as the boot file name")
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    with LiveOS.open(args.image, workdir=args.workdir) as opened:
        plan = _configured(opened, args).plan(
            args.kind, base_url=args.base_url, file_url=args.file_url, iso_name=args.iso_name
        )
    _print(plan.to_dict() if args.json else plan.describe(), args.json)
    return 0


def _cmd_boot(args: argparse.Namespace) -> int:
    config = BootConfig(CdRom(args.iso), marker=args.marker, timeout=args.timeout, memory_mib=args.memory)
    result = boot(config)
    print(result.describe())
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``liveos`` command; returns its exit code (see docs/usage.md)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="liveos: %(message)s"
    )
    signal.signal(signal.SIGTERM, _terminate)
    commands = {"iso": _cmd_iso, "pxe": _cmd_pxe, "plan": _cmd_plan, "boot": _cmd_boot}
    try:
        if args.command != "boot":  # every setting is checked before the image is opened
            args.settings = settings_table.from_cli(args)
        return commands[args.command](args)
    except UsageError as exc:
        print(f"liveos: error: {exc}", file=sys.stderr)
        return 2
    except HostError as exc:
        print(f"liveos: host problem: {exc}", file=sys.stderr)
        return 3
    except LiveOSError as exc:
        print(f"liveos: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:  # e.g. an unwritable output directory or a full disk
        print(f"liveos: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("liveos: interrupted; everything mounted was released", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
