"""One table of settings drives the defaults, the ``with_*`` methods, the CLI flags and the docs."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, cast

import pytest

from liveos import settings
from liveos.cli import _parser
from liveos.errors import UsageError
from liveos.live import LiveOS
from liveos.settings import (
    Compression,
    InitramfsMode,
    KdumpBootFiles,
    LiveSettings,
    MediaFile,
    Preset,
    SELinux,
)

USAGE = Path(__file__).parent.parent.parent / "docs" / "usage.md"


def unopened() -> LiveOS:
    """A LiveOS whose image is never touched (setting methods only validate)."""
    return LiveOS(cast(Any, None))


def test_every_setting_has_its_method_and_the_method_sets_it() -> None:
    samples: dict[str, tuple[object, ...]] = {
        "label": ("MYLIVE",),
        "mode": ("full-os",),
        "kernel_args": ("quiet",),
        "selinux": ("disable",),
        "preset": ("small",),
        "rootfs_format": ("erofs",),
        "compression": ("xz",),
        "compression_level": (Compression.ZSTD, 9),
        "hybrid": (False,),
        "implant_md5": (False,),
        "bios": (False,),
        "persistence": ("256M",),
        "media_files": (MediaFile("/notes.txt", content=b"hi"),),
        "kdump_boot_files": ("keep",),
        "cache": (False,),
    }
    assert set(samples) == {name for name, _, _ in settings.table()}, "a new setting needs a sample here"
    for name, spec, default in settings.table():
        assert getattr(LiveSettings(), name) == default
        method = getattr(unopened(), spec.method)
        changed = method(*samples[name]).settings
        assert getattr(changed, name) != default, f"{spec.method} does not set {name}"


def test_every_setting_has_a_cli_flag_on_every_build_command() -> None:
    parser = _parser()
    flags = {spec.flag for _, spec, _ in settings.table()}
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for command in ("iso", "pxe", "plan"):
        known = {opt for action in sub.choices[command]._actions for opt in action.option_strings}
        assert flags <= known, f"liveos {command} lacks {flags - known}"


def test_cli_flags_map_to_the_same_settings_as_the_methods() -> None:
    args = _parser().parse_args(
        [
            "iso", "disk.raw", "-o", "x.iso", "--label", "MYLIVE", "--mode", "full-os",
            "--kernel-arg", "quiet", "--kernel-arg", "a b", "--selinux", "disable", "--preset", "small",
            "--compression", "xz", "--compression-level", "9", "--no-hybrid",
            "--no-implant-md5", "--no-bios",
            "--add-file", "/etc/hostname:/seed/host", "--add-file", "/etc/passwd:/seed/run.sh:755",
            "--kdump-boot-files", "keep",
        ]
    )  # fmt: skip
    from_cli = settings.from_cli(args)
    live = (
        unopened()
        .with_label("MYLIVE")
        .full_os("xz", 9)
        .with_kernel_args("quiet", "a b")
        .with_selinux("disable")
        .with_preset("small")
        .with_hybrid(False)
        .with_implant_md5(False)
        .with_bios(False)
        .with_files(MediaFile("/seed/host", source=Path("/etc/hostname")))
        .with_files(MediaFile("/seed/run.sh", source=Path("/etc/passwd"), mode=0o755))
        .with_kdump_boot_files(KdumpBootFiles.KEEP)
    )
    assert from_cli == live.settings
    assert settings.from_cli(_parser().parse_args(["iso", "d", "-o", "x"])) == LiveSettings()


def test_defaults_come_from_the_table_only() -> None:
    assert LiveSettings() == LiveSettings(
        **{name: default for name, _, default in settings.table()}  # type: ignore[arg-type]
    )
    assert LiveSettings().mode is InitramfsMode.BOOTSTRAP
    assert LiveSettings().selinux is SELinux.KEEP
    assert LiveSettings().preset is Preset.FAST
    assert LiveSettings().level == Compression.ZSTD.default_level == 3


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("label", "", "invalid ISO volume label"),
        ("label", "lower", "invalid ISO volume label"),
        ("label", "A" * 17, "invalid ISO volume label"),
        ("mode", "live", "not one of"),
        ("selinux", "enforcing", "not one of"),
        ("preset", "tiny", "not one of"),
        ("compression", "lz4", "not one of"),
        ("compression_level", "high", "not an integer"),
        ("kernel_args", ("",), "empty"),
        ("kernel_args", ("a\nb",), "control character"),
        ("hybrid", "yes", "not a boolean"),
        ("kdump_boot_files", "crash", "not one of"),
        ("media_files", ("nocolon",), "not SRC:DEST"),
        ("media_files", ("a:relative/dest",), "not absolute"),
        ("media_files", "/a:/b", "sequence of MediaFile"),
        ("colour", "blue", "unknown setting"),
    ],
)
def test_bad_values_are_usage_errors(name: str, value: object, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        LiveSettings().replace(**{name: value})


def test_level_range_follows_the_compressor() -> None:
    with pytest.raises(UsageError, match=r"out of range for gzip \(1..9\)"):
        unopened().with_compression("gzip", 12)
    assert unopened().with_compression("zstd", 19).settings.level == 19
    assert unopened().full_os().settings.compression is None  # the preset's
    assert unopened().full_os().settings.cpio_compression is Compression.ZSTD


def test_the_preset_sets_every_compressor_unless_told_otherwise() -> None:
    assert LiveSettings().cpio_compression is Compression.ZSTD and LiveSettings().level == 3
    small = unopened().with_preset("small").settings
    assert (small.cpio_compression, small.level) == (Compression.ZSTD, 19)
    assert unopened().with_preset("small").with_compression("gzip").settings.level == 6
    assert unopened().with_preset("small").with_compression("xz", 2).settings.level == 2


def test_settings_are_frozen_and_clones_independent() -> None:
    base = unopened()
    quiet = base.with_kernel_args("quiet")
    assert base.settings.kernel_args == () and quiet.settings.kernel_args == ("quiet",)
    assert quiet.with_kernel_args("x").settings.kernel_args == ("quiet", "x")
    with pytest.raises(AttributeError):
        base.settings.label = "X"  # type: ignore[misc]


def test_to_dict_is_json() -> None:
    data = LiveSettings(kernel_args=("a",)).to_dict()
    assert json.loads(json.dumps(data)) == {
        "label": None,
        "mode": "bootstrap",
        "kernel_args": ["a"],
        "selinux": "keep",
        "preset": "fast",
        "rootfs_format": "squashfs",
        "compression": None,
        "compression_level": None,
        "hybrid": True,
        "implant_md5": True,
        "bios": True,
        "persistence": None,
        "media_files": [],
        "kdump_boot_files": "none",
        "cache": True,
    }
    files = LiveSettings(
        media_files=(MediaFile("/a", content=b"xy"), MediaFile("/b", source=Path("/s"), mode=0o600))
    ).to_dict()["media_files"]
    assert json.loads(json.dumps(files)) == [
        {"destination": "/a", "content_size": 2, "mode": "0644"},
        {"destination": "/b", "source": "/s", "mode": "0600"},
    ]


def test_the_docs_show_the_table() -> None:
    assert settings.markdown_table() in USAGE.read_text(), "regenerate docs/usage.md's settings table"
