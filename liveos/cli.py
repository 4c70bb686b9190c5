"""The ``liveos`` command: the library's main jobs from a shell.

liveos iso disk.qcow2 -o live.iso [--mode full-os] [--kernel-arg quiet] [--label MYLIVE] [--json]
liveos pxe disk.qcow2 -o pxe.tar.gz --base-url http://10.0.0.1/live/   # or a folder
liveos build --config ic.yaml disk.qcow2 [-o OUT] [--format iso|pxe-dir|pxe-tar]   # Image Customizer config
liveos plan disk.qcow2 [--kind pxe --base-url URL] [--json]   # what a build would do, in seconds
liveos inspect live.iso|pxe/|pxe.tar.gz|disk.qcow2 [--json]   # what it holds
liveos verify live.iso|pxe/|pxe.tar.gz [--json]   # check finished media; exit 1 on any failure
liveos boot live.iso [--as usb] | pxe/ | pxe.tar.gz   # QEMU + OVMF smoke boot, serial log

Every build setting has a flag, generated from the settings table (:mod:`liveos.settings`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from liveos import settings as settings_table
from liveos.boottest import GUEST_HTTP_ADDR, BootConfig, CdRom, Disk, PxeBoot, boot
from liveos.customizer.apply import (
    check_bootstrap_url,
    configure,
    output_target,
    prepare_output,
    write_configured,
)
from liveos.customizer.schema import ImageFormat, load_config
from liveos.errors import HostError, LiveOSError, UsageError
from liveos.inspection import (
    ArchiveMedia,
    FolderMedia,
    MediaKind,
    carried_iso,
    grub_configs,
    inspect,
    media_kind,
    menu_entries,
)
from liveos.live import LiveOS
from liveos.progress_display import reporting
from liveos.pxe.urls import DEFAULT_ISO_NAME
from liveos.settings import Arch, OutputKind
from liveos.verification import verify


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
    _progress_option(iso)

    pxe = sub.add_parser("pxe", help="turn a disk image into PXE network-boot artifacts")
    _input_options(pxe)
    pxe.add_argument("-o", "--output", type=Path, required=True, help="a folder, or a .tar.gz archive")
    _url_options(pxe)
    pxe.add_argument("--overwrite", action="store_true", help="replace the contents of a non-empty folder")
    _json_option(pxe, "print the build result as JSON")
    _progress_option(pxe)

    build = sub.add_parser(
        "build", help="build what an Image Customizer config (YAML: iso/pxe, os, scripts, output) describes"
    )
    build.add_argument("--config", type=Path, required=True, help="the Image Customizer YAML config")
    _input_options(build)
    build.add_argument("-o", "--output", type=Path, help="overrides the config's output.image.path")
    build.add_argument(
        "--format",
        choices=[f.value for f in ImageFormat],
        help="overrides the config's output.image.format",
    )
    urls = build.add_mutually_exclusive_group()
    urls.add_argument("--base-url", help="bootstrap PXE: overrides pxe.bootstrapBaseUrl (ISO: image.iso)")
    urls.add_argument("--file-url", help="bootstrap PXE: overrides pxe.bootstrapFileUrl")
    build.add_argument("--overwrite", action="store_true", help="pxe-dir: replace a non-empty folder")
    _json_option(build, "print the build result as JSON")
    _progress_option(build)

    plan = sub.add_parser("plan", help="show what a build would do and put on the media (builds nothing)")
    _input_options(plan)
    plan.add_argument("--kind", choices=[k.value for k in OutputKind], default=OutputKind.ISO.value)
    _url_options(plan)
    _json_option(plan, "print the plan as JSON")

    inspect_cmd = sub.add_parser(
        "inspect", help="describe a disk image, a liveos ISO or a PXE bundle (folder or .tar.gz)"
    )
    inspect_cmd.add_argument("path", type=Path, help="disk image, ISO, PXE folder or PXE .tar.gz")
    inspect_cmd.add_argument("--workdir", type=Path, help="scratch space (default: /var/tmp)")
    _json_option(inspect_cmd, "print the description as JSON")

    verify_cmd = sub.add_parser(
        "verify", help="check a finished ISO or PXE bundle; exit 1 when a check fails"
    )
    verify_cmd.add_argument("path", type=Path, help="ISO, PXE folder or PXE .tar.gz")
    verify_cmd.add_argument("--workdir", type=Path, help="scratch space (default: /var/tmp)")
    _json_option(verify_cmd, "print the report as JSON")

    boot_cmd = sub.add_parser(
        "boot",
        help="boot an ISO (as CD or USB disk), a PXE folder or .tar.gz, or a disk image in QEMU + "
        "OVMF and wait for a marker on the serial console",
    )
    boot_cmd.add_argument("path", type=Path, help="ISO, PXE folder, PXE .tar.gz or disk image")
    boot_cmd.add_argument(
        "--as",
        dest="attach",
        choices=["cd", "usb"],
        help="an ISO: in a CD drive (default) or as a USB stick (the raw file as a disk)",
    )
    boot_cmd.add_argument("--marker", default="login:", help="text that proves the boot (default: login:)")
    boot_cmd.add_argument(
        "--timeout", type=float, help=f"seconds (default: {BOOT_TIMEOUT:.0f}, PXE {PXE_BOOT_TIMEOUT:.0f})"
    )
    boot_cmd.add_argument(
        "--memory", type=int, help="guest RAM in MiB (default: 2048; a bootstrap PXE bundle: more)"
    )
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


def _progress_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quiet",
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress on stderr (default: bars on a terminal, plain lines otherwise)",
    )


def _configured(live: LiveOS, args: argparse.Namespace) -> LiveOS:
    return LiveOS(live.image, args.settings)


def _print(data: dict[str, object] | str, as_json: bool) -> None:
    if as_json:
        print(json.dumps(data, indent=2, sort_keys=True))
    else:
        print(data)


def _cmd_iso(args: argparse.Namespace) -> int:
    with (
        LiveOS.open(args.image, workdir=args.workdir) as opened,
        reporting(enabled=args.progress) as progress,
    ):
        result = _configured(opened, args).write_iso(args.output, progress=progress)
    _print(result.to_dict() if args.json else result.describe(), args.json)
    if not args.json:
        print(f"boot it: liveos boot {result.output}   (or write it raw to a USB stick)")
    return 0


def _cmd_pxe(args: argparse.Namespace) -> int:
    with (
        LiveOS.open(args.image, workdir=args.workdir) as opened,
        reporting(enabled=args.progress) as progress,
    ):
        result = _configured(opened, args).write_pxe(
            args.output,
            base_url=args.base_url,
            file_url=args.file_url,
            iso_name=args.iso_name,
            overwrite=args.overwrite,
            progress=progress,
        )
    _print(result.to_dict() if args.json else result.describe(), args.json)
    if not args.json:
        print("serve it over TFTP with bootx64.efi as the boot file name")
    return 0


def _cmd_build(args: argparse.Namespace) -> int:
    """The config is checked whole before the image is opened; command-line settings override it."""
    config = load_config(args.config)
    target = output_target(config, args.output, args.format)
    check_bootstrap_url(config, target, base_url=args.base_url, file_url=args.file_url)
    prepare_output(target, overwrite=args.overwrite)
    with (
        LiveOS.open(args.image, workdir=args.workdir) as opened,
        reporting(enabled=args.progress) as progress,
    ):
        configured = configure(opened, config, target.format.kind)
        configured = LiveOS(configured.image, settings_table.from_cli(args, configured.settings))
        result = write_configured(
            configured,
            config,
            target,
            base_url=args.base_url,
            file_url=args.file_url,
            overwrite=args.overwrite,
            progress=progress,
        )
    _print(result.to_dict() if args.json else result.describe(), args.json)
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    with LiveOS.open(args.image, workdir=args.workdir) as opened:
        plan = _configured(opened, args).plan(
            args.kind, base_url=args.base_url, file_url=args.file_url, iso_name=args.iso_name
        )
    _print(plan.to_dict() if args.json else plan.describe(), args.json)
    return 0


def _cmd_inspect(args: argparse.Namespace) -> int:
    info = inspect(args.path, workdir=args.workdir)
    _print(info.to_dict() if args.json else info.describe(), args.json)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    report = verify(args.path, workdir=args.workdir)
    _print(report.to_dict() if args.json else report.describe(), args.json)
    return 0 if report.ok else 1


#: Boot timeouts: a network boot downloads the kernel, the initrd and (bootstrap) the ISO.
BOOT_TIMEOUT = 300.0
PXE_BOOT_TIMEOUT = 500.0
#: Guest RAM of a bootstrap PXE boot: livenet keeps the downloaded ISO in RAM beside the system.
PXE_BOOTSTRAP_MEMORY_MIB = 3584


def _cmd_boot(args: argparse.Namespace) -> int:
    with contextlib.ExitStack() as stack:
        config = _boot_config(args, stack)
        result = boot(config)
    print(result.describe())
    return 0 if result.ok else 1


def _boot_config(args: argparse.Namespace, stack: contextlib.ExitStack) -> BootConfig:
    """What ``liveos boot PATH`` boots, from what PATH is (the content decides, not the name)."""
    path: Path = args.path
    kind = media_kind(path)
    timeout = args.timeout if args.timeout is not None else BOOT_TIMEOUT
    memory = args.memory if args.memory is not None else 2048
    if kind is MediaKind.ISO:
        media = Disk(path, format="raw") if args.attach == "usb" else CdRom(path)
        return BootConfig(media, marker=args.marker, timeout=timeout, memory_mib=memory)
    if args.attach is not None:
        raise UsageError(f"--as {args.attach} applies to an ISO; {path} is a {kind.value}")
    if kind is MediaKind.DISK:
        return BootConfig(Disk(path), marker=args.marker, timeout=timeout, memory_mib=memory)
    bundle = stack.enter_context(FolderMedia(path) if kind is MediaKind.PXE_FOLDER else ArchiveMedia(path))
    loader = next((a.shim_name for a in Arch if bundle.is_file(f"/{a.shim_name}")), None)
    if loader is None:
        raise UsageError(
            f"{path} is not a PXE bundle: no {' or '.join(a.shim_name for a in Arch)} at its top",
            path=path,
            hint="boot a folder written by 'liveos pxe', a .tar.gz of it, an ISO or a disk image",
        )
    http_root = None
    entries = menu_entries(grub_configs(bundle))
    if carried_iso(bundle, entries) is not None:  # bootstrap: livenet downloads the ISO over HTTP
        http_root = bundle.root
        if args.memory is None:
            memory = PXE_BOOTSTRAP_MEMORY_MIB
        live = [
            a.removeprefix("root=live:") for e in entries for a in e.cmdline if a.startswith("root=live:")
        ]
        urls = sorted({url for url in live if "://" in url})
        if not all(url.startswith(f"http://{GUEST_HTTP_ADDR}/") for url in urls):
            print(
                f"liveos: note: the bundle downloads its ISO from {', '.join(urls)}; this boot serves "
                f"the folder at http://{GUEST_HTTP_ADDR}/ (build with --base-url "
                f"http://{GUEST_HTTP_ADDR}/ to boot it here)",
                file=sys.stderr,
            )
    return BootConfig(
        PxeBoot(bundle.root, loader),
        marker=args.marker,
        timeout=args.timeout if args.timeout is not None else PXE_BOOT_TIMEOUT,
        memory_mib=memory,
        http_root=http_root,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``liveos`` command; returns its exit code (see docs/usage.md)."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="liveos: %(message)s"
    )
    signal.signal(signal.SIGTERM, _terminate)
    commands = {
        "iso": _cmd_iso,
        "pxe": _cmd_pxe,
        "build": _cmd_build,
        "plan": _cmd_plan,
        "inspect": _cmd_inspect,
        "verify": _cmd_verify,
        "boot": _cmd_boot,
    }
    try:
        if args.command in ("iso", "pxe", "plan"):  # every setting is checked before the image is opened
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
