"""liveos: turn an existing OS disk image into a bootable Live OS (UEFI ISO and PXE).

    from liveos import LiveOS

    with LiveOS.open("disk.qcow2") as live:
        live.rootfs.write_text("/etc/motd", "hello\\n")
        plan = live.with_kernel_args("quiet").plan()      # what will be built, in seconds
        result = live.with_kernel_args("quiet").write_iso("live.iso")

The building blocks are public too: :class:`SourceImage` (an input opened read-only as an OS
tree, from :func:`open_image`), :class:`RootFs` (the customisable tree), :class:`GrubConfig`
(lossless grub.cfg edits), :class:`Initramfs` (a built bootstrap or full-os initrd),
:class:`IsoWriter`, :class:`PxeBundle`. Finished media are checked by :func:`verify` and
described by :func:`inspect`. Errors are split by fault; see :mod:`liveos.errors`.
"""

from __future__ import annotations

from liveos._version import __version__
from liveos.errors import (
    CommandError,
    HostError,
    ImageError,
    InternalError,
    LiveOSError,
    MissingToolError,
    UsageError,
)
from liveos.grub import BlsEntry, GrubConfig
from liveos.image import DiskImage, IsoReader, LiveIsoImage, SourceImage, open_image
from liveos.initramfs import Initramfs
from liveos.inspection import DiskInfo, MediaInfo, inspect
from liveos.iso import IsoWriter
from liveos.live import LiveOS
from liveos.plan import BootEntry, BuildPlan, Origin, PlannedFile, PlannedStep, StepKind
from liveos.progress import ProgressCallback, ProgressEvent
from liveos.progress_display import BarReporter, LineReporter, reporter_for
from liveos.pxe import PxeBundle
from liveos.result import BuildResult, StepResult
from liveos.rootfs import RootFs
from liveos.settings import (
    Arch,
    Compression,
    InitramfsMode,
    KdumpBootFiles,
    LiveSettings,
    MediaFile,
    OutputKind,
    Preset,
    RootFsFormat,
    SELinux,
)
from liveos.verification import Check, CheckKind, VerifyReport, verify

__all__ = [
    "Arch",
    "BarReporter",
    "BlsEntry",
    "BootEntry",
    "BuildPlan",
    "BuildResult",
    "Check",
    "CheckKind",
    "CommandError",
    "Compression",
    "DiskImage",
    "DiskInfo",
    "GrubConfig",
    "HostError",
    "ImageError",
    "Initramfs",
    "InitramfsMode",
    "InternalError",
    "IsoReader",
    "IsoWriter",
    "KdumpBootFiles",
    "LineReporter",
    "LiveIsoImage",
    "LiveOS",
    "LiveOSError",
    "LiveSettings",
    "MediaFile",
    "MediaInfo",
    "MissingToolError",
    "Origin",
    "OutputKind",
    "PlannedFile",
    "PlannedStep",
    "Preset",
    "ProgressCallback",
    "ProgressEvent",
    "PxeBundle",
    "RootFs",
    "RootFsFormat",
    "SELinux",
    "SourceImage",
    "StepKind",
    "StepResult",
    "UsageError",
    "VerifyReport",
    "__version__",
    "inspect",
    "open_image",
    "reporter_for",
    "verify",
]
