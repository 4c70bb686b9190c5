"""The ``liveos`` command: the library's main jobs from a shell.

liveos iso disk.qcow2 -o live.iso [--mode full-os] [--kernel-arg quiet] [--label MYLIVE]
liveos pxe disk.qcow2 -o pxe.tar.gz --base-url http://10.0.0.1/live/   # or a folder
liveos boot live.iso                 # QEMU + OVMF smoke boot, serial console to a log
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from liveos.errors import HostError, LiveOSError, UsageError
from liveos.live import LiveOS
from liveos.settings import Compression, InitramfsMode
from liveos.squashfs import SquashfsPreset


def _terminate(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so every mount and loop device is released."""
    raise SystemExit(128 + signum)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="liveos", description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("-v", "--verbose", action="store_true", help="log every command that runs")
    sub = parser.add_subparsers(dest="command", required=True)

    iso = sub.add_parser("iso", help="turn a disk image into a live ISO (CD and USB bootable)")
    _media_options(iso, output_help="the ISO to write")
    iso.add_argument("--no-hybrid", action="store_true", help="CD only: no USB partition tables")

    pxe = sub.add_parser("pxe", help="turn a disk image into PXE network-boot artifacts")
    _media_options(pxe, output_help="a folder, or a .tar.gz archive")
    urls = pxe.add_mutually_exclusive_group()
    urls.add_argument("--base-url", help="bootstrap: URL of the folder the bundled ISO is served from")
    urls.add_argument("--file-url", help="bootstrap: full URL of the bundled ISO")
    pxe.add_argument("--overwrite", action="store_true", help="empty a non-empty output folder first")

    boot = sub.add_parser(
        "boot", help="boot an ISO in QEMU + OVMF and wait for a marker on the serial console"
    )
    boot.add_argument("iso", type=Path)
    boot.add_argument("--marker", default="login:", help="text that proves the boot (default: login:)")
    boot.add_argument("--timeout", type=float, default=300.0)
    boot.add_argument("--memory", type=int, default=2048, help="guest RAM in MiB")
    return parser


def _media_options(parser: argparse.ArgumentParser, *, output_help: str) -> None:
    """Options shared by every media kind: input, output, label, mode, kernel args, compression."""
    parser.add_argument("image", type=Path, help="raw, qcow2, vhd or vhdx disk image, or a liveos ISO")
    parser.add_argument("-o", "--output", type=Path, required=True, help=output_help)
    parser.add_argument("--label", help="volume label (default: unique LIVEOS_xxxxxxxx)")
    parser.add_argument(
        "--mode", choices=[m.value for m in InitramfsMode], default=InitramfsMode.BOOTSTRAP.value
    )
    parser.add_argument(
        "--kernel-arg", action="append", default=[], metavar="ARG", help="append ARG (repeatable)"
    )
    parser.add_argument(
        "--squashfs", choices=[p.value for p in SquashfsPreset], default=SquashfsPreset.FAST.value
    )
    parser.add_argument(
        "--compression", choices=[c.value for c in Compression], default=Compression.ZSTD.value
    )
    parser.add_argument(
        "--workdir", type=Path, help="scratch space for the opened image (default: /var/tmp)"
    )


def _configured(live: LiveOS, args: argparse.Namespace) -> LiveOS:
    live = live.with_squashfs(args.squashfs).with_kernel_args(*args.kernel_arg)
    if args.label:
        live = live.with_label(args.label)
    return live.full_os(args.compression) if args.mode == InitramfsMode.FULL_OS else live.bootstrap()


def _print_steps(live: LiveOS) -> None:
    print("steps: " + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in live.timings.items()))


def _cmd_iso(args: argparse.Namespace) -> int:
    with LiveOS.open(args.image, workdir=args.workdir) as opened:
        live = _configured(opened, args).with_hybrid(not args.no_hybrid)
        out = live.write_iso(args.output)
    print(f"live ISO: {out}")
    _print_steps(live)
    print(f"boot it: liveos boot {out}   (or write it raw to a USB stick)")
    return 0


def _cmd_pxe(args: argparse.Namespace) -> int:
    with LiveOS.open(args.image, workdir=args.workdir) as opened:
        live = _configured(opened, args)
        out = live.write_pxe(
            args.output, base_url=args.base_url, file_url=args.file_url, overwrite=args.overwrite
        )
    print(f"PXE artifacts: {out}")
    _print_steps(live)
    print("serve them over TFTP with bootx64.efi as the boot file name")
    return 0


def _cmd_boot(args: argparse.Namespace) -> int:
    from liveos.boottest import BootConfig, CdRom, boot

    config = BootConfig(CdRom(args.iso), marker=args.marker, timeout=args.timeout, memory_mib=args.memory)
    result = boot(config)
    print(result.describe())
    return 0 if result.ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="liveos: %(message)s"
    )
    signal.signal(signal.SIGTERM, _terminate)
    try:
        commands = {"iso": _cmd_iso, "pxe": _cmd_pxe, "boot": _cmd_boot}
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
