"""Rich views: the HTML is well-formed, every value from an image is escaped, the key facts show.

Plain data objects (a plan, a result, a grub config, the summary of a directory tree) are built
here without root; tests/integration/test_views_image.py opens a real image.
"""

from __future__ import annotations

import html.parser
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from IPython.lib.pretty import pretty as ipython_pretty

from liveos import settings, views
from liveos.errors import ImageError
from liveos.grub.config import GrubConfig
from liveos.image.live_iso import LiveIsoImage
from liveos.image.summary import MountRow, PartitionRow, partition_type, summarize
from liveos.plan import (
    BootEntry,
    BuildPlan,
    Origin,
    PlannedFile,
    PlannedStep,
    Reuse,
    StepCache,
    StepKind,
    settings_rows,
    settings_text,
)
from liveos.result import BuildResult, StepResult
from liveos.rootfs import RootFs
from liveos.settings import Arch, InitramfsMode, LiveSettings, OutputKind
from liveos.state import DIGEST_ALGORITHM, MediaState, SourceDigest

#: IPython's own pretty printer (``_repr_pretty_`` is tested through it); untyped upstream.
pretty: Callable[[object], str] = ipython_pretty
HOSTILE = '<script>alert("x")</script>&<img src=x onerror=alert(1)>'
VOID = {"br", "hr", "img", "input", "meta", "link", "col", "wbr"}


class Checker(html.parser.HTMLParser):
    """Collects every tag and fails on a close tag that does not match the open one."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.attrs: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs += [name for name, _ in attrs]
        if tag not in VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(markup: str) -> Checker:
    """Parse ``markup``: balanced tags, no script, no event handler; the checker holds its text."""
    checker = Checker()
    checker.feed(markup)
    checker.close()
    assert checker.stack == [], f"unclosed: {checker.stack}"
    assert "script" not in checker.tags and "img" not in checker.tags
    assert not [a for a in checker.attrs if a.startswith("on")]
    return checker


def text_of(markup: str) -> str:
    return " ".join(parsed(markup).text)


# -- the helpers -------------------------------------------------------------------------------
def test_helpers_escape_every_value() -> None:
    pieces = [
        views.html_table([HOSTILE], [[HOSTILE, 1]], caption=HOSTILE),
        views.html_kv([(HOSTILE, HOSTILE)], title=HOSTILE),
        views.html_bars([(HOSTILE, 1.5)], unit=HOSTILE),
        views.html_details(HOSTILE, views.html_pre(HOSTILE)),
        views.html_block(HOSTILE, views.html_pre(HOSTILE)),
    ]
    for markup in pieces:
        assert "<script" not in markup
        assert HOSTILE in text_of(markup)  # shown as text, exactly


def test_bars_scale_to_the_longest() -> None:
    markup = views.html_bars([("a", 2.0), ("b", 1.0), ("c", 0.0)], width_px=200)
    assert "width:200px" in markup and "width:100px" in markup and "width:0px" in markup
    parsed(markup)
    assert "width:0px" in views.html_bars([("only", 0.0)])  # no division by zero


def test_human_size() -> None:
    assert views.human_size(None) == "?"
    assert views.human_size(512) == "512 B"
    assert views.human_size(3_250_000) == "3.2 MB"
    assert views.human_size(999) == "999 B" and views.human_size(1000) == "1.0 kB"
    assert views.human_size(5 * 10**15) == "5000.0 TB"


class Printer:
    """The part of IPython's printer a ``_repr_pretty_`` uses, recording what it got."""

    def __init__(self) -> None:
        self.out = ""

    def text(self, obj: str) -> None:
        self.out += obj


def test_pretty_text_and_the_fallbacks() -> None:
    p = Printer()
    views.pretty_text(p, True, "long text", short="<X>")
    assert p.out == "<X>"

    def broken() -> str:
        raise ImageError("the image is gone\nfix: reopen it")

    p = Printer()
    views.pretty_text(p, False, broken)
    assert "unavailable: the image is gone" in p.out and "fix" not in p.out
    assert views.safe_text(broken, "<Y>") == "<Y> (unavailable: the image is gone)"
    assert "unavailable: the image is gone" in text_of(views.safe_html(broken, HOSTILE))

    def bug() -> str:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):  # a bug in a view is not hidden as a fallback
        views.safe_text(bug)


# -- BuildPlan ---------------------------------------------------------------------------------
def make_plan(title: str = "Debian GNU/Linux", arg: str = "quiet") -> BuildPlan:
    entry = BootEntry(
        title,
        "/boot/vmlinuz-6.1.0-13-amd64",
        ("/boot/initrd.img-6.1.0-13-amd64",),
        ("root=live:CDLABEL=X", arg),
    )
    cache = StepCache("initrd", "slot", Reuse.CACHED, "same inputs as entry abc", entry="abc")
    steps = (
        PlannedStep(
            StepKind.DRACUT, "initrd-6.1.0-13-amd64", "dracut 059", kernel="6.1.0-13-amd64", cache=cache
        ),
        PlannedStep(StepKind.SQUASHFS, "rootfs.img", "mksquashfs zstd -3"),
    )
    files = (
        PlannedFile(
            PurePosixPath("/boot/vmlinuz-6.1.0-13-amd64"),
            Origin.IMAGE,
            "/boot/vmlinuz-6.1.0-13-amd64",
            8_000_000,
        ),
        PlannedFile(
            PurePosixPath("/liveos/rootfs.img"), Origin.BUILT, "rootfs.img", 700_000_000, estimated=True
        ),
        PlannedFile(PurePosixPath("/boot/grub/grub.cfg"), Origin.GENERATED, "grub.cfg", None),
    )
    return BuildPlan(
        output=OutputKind.ISO,
        mode=InitramfsMode.BOOTSTRAP,
        label="MYLABEL",
        arch=Arch.X64,
        source=Path("/images/disk.qcow2"),
        settings=LiveSettings(label="MYLABEL", kernel_args=(arg,)),
        entries=(entry,),
        files=files,
        steps=steps,
        grub_cfg=PurePosixPath("/boot/grub/grub.cfg"),
        warnings=("selinux is off",),
    )


def test_plan_views() -> None:
    plan = make_plan()
    line = repr(plan)
    assert "\n" not in line and line.startswith("<BuildPlan iso bootstrap MYLABEL x64")
    assert "1 entry, 3 files 708.0 MB" in line and "2 steps (1 from the cache)" in line
    text = text_of(plan._repr_html_())
    for fact in (
        "MYLABEL",
        "bootstrap",
        "root=live:CDLABEL=X quiet",
        "/liveos/rootfs.img",
        "~700.0 MB",  # an estimate says so
        "same inputs as entry abc",
        "cached",
        "selinux is off",
        "/images/disk.qcow2",
    ):
        assert fact in text, fact
    assert pretty(plan) == plan.describe()


def test_plan_views_show_every_setting_and_whether_it_is_the_default() -> None:
    rows = {name: (value, default) for name, value, default, _ in settings_rows(make_plan().settings)}
    assert list(rows) == [name for name, _, _ in settings.table()]
    assert rows["label"] == ("MYLABEL", False) and rows["kernel_args"] == ("quiet", False)
    assert rows["mode"] == ("bootstrap", True) and rows["hybrid"] == ("True", True)
    defaults = {name: value for name, value, _, _ in settings_rows(LiveSettings())}
    assert defaults["label"] == "None (unique LIVEOS_xxxxxxxx per build)"
    text = text_of(make_plan()._repr_html_())
    assert "compression_level" in text and "changed" in text and "default" in text
    assert "* label = MYLABEL" in settings_text(make_plan().settings)


def test_plan_views_escape_hostile_titles_and_arguments() -> None:
    plan = make_plan(title=HOSTILE, arg=HOSTILE)
    markup = plan._repr_html_()
    assert "<script" not in markup
    assert HOSTILE in text_of(markup)


# -- BuildResult -------------------------------------------------------------------------------
def make_result(title: str = "Debian GNU/Linux") -> BuildResult:
    plan = make_plan(title)
    steps = (
        StepResult(
            StepKind.DRACUT, "initrd-6.1.0-13-amd64", 12.5, 40_000_000, "zstd", 3, "dracut 059", cached=True
        ),
        StepResult(StepKind.SQUASHFS, "rootfs.img", 50.0, 650_000_000, "zstd", 3, "mksquashfs"),
        StepResult(StepKind.ISO, "live.iso", 0.0, None),
    )
    return BuildResult(
        output=Path("/out/live.iso"),
        kind=OutputKind.ISO,
        archive=False,
        size=700_000_000,
        sha256="ab" * 32,
        label="MYLABEL",
        mode=InitramfsMode.BOOTSTRAP,
        entries=plan.entries,
        steps=steps,
        seconds=63.2,
        plan=plan,
    )


def test_result_views() -> None:
    result = make_result()
    line = repr(result)
    assert "\n" not in line and line.startswith("<BuildResult iso bootstrap /out/live.iso 700.0 MB")
    assert "sha256 abababababab..." in line and "3 steps 63.2 s" in line
    markup = result._repr_html_()
    text = text_of(markup)
    for fact in (
        "ab" * 32,
        "MYLABEL",
        "root=live:CDLABEL=X quiet",
        "12.50",
        "50.00",
        "dracut 059",
        "reused",
        "zstd -3",
    ):
        assert fact in text, fact
    # the bar chart: the longest step is the full width, the others in proportion
    assert "width:240px" in markup and "width:60px" in markup and "width:0px" in markup
    assert pretty(result) == result.describe()


def test_result_views_escape_hostile_titles() -> None:
    markup = make_result(HOSTILE)._repr_html_()
    assert "<script" not in markup and HOSTILE in text_of(markup)


# -- GrubConfig --------------------------------------------------------------------------------
GRUB_CFG = f"""\
search --no-floppy --set=root --label OLD
set timeout=5
menuentry 'Debian {HOSTILE}' {{
    linux /boot/vmlinuz-6.1.0 root=UUID=1234 ro quiet
    initrd /boot/initrd.img-6.1.0
}}
submenu 'Advanced' {{
    menuentry 'recovery' {{
        linux /boot/vmlinuz-6.1.0 root=UUID=1234 ro single
    }}
}}
"""


def test_grub_config_views() -> None:
    config = GrubConfig.parse(GRUB_CFG, "/boot/grub/grub.cfg")
    assert repr(config) == "<GrubConfig /boot/grub/grub.cfg: 3 menu entries, 2 kernel lines>"
    markup = config._repr_html_()
    assert "<script" not in markup
    text = text_of(markup)
    for fact in (
        f"Debian {HOSTILE}",
        "Advanced > recovery",
        "root=UUID=1234 ro single",
        "/boot/initrd.img-6.1.0",
        "OLD",
    ):
        assert fact in text, fact
    shown = pretty(config)
    assert (
        "menuentry Debian" in shown
        and "Advanced > recovery: linux /boot/vmlinuz-6.1.0 root=UUID=1234 ro single" in shown
    )
    assert shown.index("menuentry Debian") < shown.index("submenu Advanced")  # file order
    assert config.render() == GRUB_CFG  # looking changes nothing


def test_grub_config_views_survive_an_unreadable_config() -> None:
    config = GrubConfig.parse("set a=x\n" + "set a=$a$a\n" * 40 + "menuentry m {\n linux /k $a\n}\n")
    with pytest.raises(ImageError):
        config.kernel_lines()
    assert "unavailable" in pretty(config)
    assert "kernel lines" in text_of(config._repr_html_())  # the rest still shows


# -- an image's summary, from a directory tree -----------------------------------------------------
def make_tree(root: Path, pretty_name: str) -> RootFs:
    for d in ("etc", "boot/grub", "boot/efi/EFI/BOOT", "boot/efi/EFI/debian", "boot/loader/entries"):
        (root / d).mkdir(parents=True)
    (root / "etc/os-release").write_text(
        f'PRETTY_NAME="{pretty_name}"\nNAME=Debian\nVERSION_ID="12"\nID=debian\n'
    )
    (root / "boot/vmlinuz-6.1.0-13-amd64").write_bytes(b"k")
    (root / "boot/initrd.img-6.1.0-13-amd64").write_bytes(b"i")
    (root / "boot/grub/grub.cfg").write_text("linux /vmlinuz\n")
    return RootFs(root)


def test_image_summary_views(tmp_path: Path) -> None:
    rootfs = make_tree(tmp_path / "root", HOSTILE)
    partitions = [
        PartitionRow(1, 1 << 20, 100 << 20, "ESP", "EFI", "vfat", "ESP", ("/boot/efi",)),
        PartitionRow(2, 101 << 20, 2 << 30, "0fc63daf", HOSTILE, "ext4", "root", ("/",)),
    ]
    summary = summarize(
        rootfs,
        kind="DiskImage",
        path=Path("/images/d.qcow2"),
        format="qcow2",
        arch=lambda: "x64",
        table="gpt",
        disk_id="abcd",
        partitions=partitions,
        mounts=[MountRow("/", "ext4", "partition 2"), MountRow("/boot/efi", "vfat", "partition 1")],
    )
    assert summary.problems == ()
    assert summary.os_version == "12" and [k.version for k in summary.kernels] == ["6.1.0-13-amd64"]
    assert summary.boot is not None and summary.boot.grub_dir == "/boot/grub" and not summary.boot.bls
    assert summary.boot.efi_dirs == ("/boot/efi/EFI/BOOT", "/boot/efi/EFI/debian")
    assert summary.line() == f"<DiskImage qcow2 /images/d.qcow2 gpt 2 partitions, {HOSTILE}, 1 kernel>"
    markup = summary.html()
    assert "<script" not in markup
    text = text_of(markup)
    for fact in (
        "6.1.0-13-amd64",
        "/boot/grub",
        "/boot/efi/EFI/debian",
        "2.1 GB",
        "ext4",
        "partition 2",
        "x64",
    ):
        assert fact in text, fact
    assert "partition table: gpt abcd" in summary.describe()
    assert summary.to_dict()["os"] == {"name": HOSTILE, "version": "12", "id": "debian"}


def test_partition_types_are_named_when_well_known() -> None:
    assert partition_type("0FC63DAF-8483-4772-8E79-3D69D8477DE4", None) == "Linux filesystem"
    assert (
        partition_type("01234567-0000-0000-0000-000000000000", None)
        == "01234567-0000-0000-0000-000000000000"
    )
    assert partition_type(None, 0x83) == "Linux" and partition_type(None, 0x42) == "0x42"
    assert partition_type(None, 0x83, esp=True) == "ESP" and partition_type(None, None) == "?"


def test_image_summary_lists_problems_instead_of_raising(tmp_path: Path) -> None:
    rootfs = make_tree(tmp_path / "root", "Debian")
    (rootfs.root / "etc/os-release").unlink()
    (rootfs.root / "etc/os-release").mkdir()  # no longer a file: os_release() finds none
    (rootfs.root / "usr/lib").mkdir(parents=True)
    (rootfs.root / "usr/lib/os-release").symlink_to("/etc/os-release")  # a directory too
    (rootfs.root / "boot/loader/entries/a.conf").write_text("title a\n")

    def no_arch() -> str:
        raise ImageError("no EFI binary")

    summary = summarize(rootfs, kind="DiskImage", path=Path("/d.raw"), format="raw", arch=no_arch)
    assert summary.problems == ("architecture: no EFI binary",)
    assert summary.boot is not None and summary.boot.bls and summary.boot.bls_entries == 1
    assert "unknown OS" in summary.line()
    assert "no EFI binary" in text_of(summary.html())
    closed = summarize(
        RootFs(tmp_path / "gone"), kind="DiskImage", path=Path("/d.raw"), format="raw", arch=no_arch
    )
    assert closed.closed and closed.line() == "<DiskImage raw /d.raw (closed)>"


def test_a_reopened_live_iso_shows_what_built_it(tmp_path: Path) -> None:
    """The class's own views on a plain tree (the opener needs root; the views do not)."""
    make_tree(tmp_path / "root", "Debian GNU/Linux 12 (bookworm)")
    state = MediaState(
        liveos_version="0.1.0",
        mode=InitramfsMode.FULL_OS,
        label="LIVE_VIEW",
        live_args=("rd.live.image",),
        user_args=(HOSTILE,),
        source=SourceDigest(DIGEST_ALGORITHM, 1, "ab" * 32),
        build_time=1_700_000_000,
    )
    iso = LiveIsoImage(
        path=Path("/m/live.iso"), root=tmp_path / "root", scratch=tmp_path, state=state, layers=()
    )
    line = repr(iso)
    os_name = "Debian GNU/Linux 12 (bookworm)"
    assert line == f"<LiveIsoImage iso /m/live.iso {os_name}, 1 kernel, mode full-os, label LIVE_VIEW>"
    assert "arch: " not in pretty(iso)  # no shim on this tree: the arch is unreadable, not an error
    assert "architecture:" in pretty(iso) and "full-os CPIO" in pretty(iso)
    markup = iso._repr_html_()
    assert "<script" not in markup and f"rd.live.image {HOSTILE}" in text_of(markup)
