"""BLS entries, grubenv and the PXE menu rendered from BLS; grub tools check what we write."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from liveos.errors import ImageError
from liveos.grub import (
    BlsEntry,
    GrubConfig,
    GrubEnv,
    KernelArgs,
    boot_order,
    inline_bls,
    render_menu,
)
from liveos.grub.kernelargs import ArgSyntax
from liveos.versions import rpmvercmp

FEDORA = Path(__file__).parent.parent / "data" / "grub" / "fedora"
ENTRIES = FEDORA / "loader" / "entries"
MID = "8f3e2a1b9c4d4e5f8a7b6c5d4e3f2a1b"
NEW = ENTRIES / f"{MID}-6.12.9-200.fc41.x86_64.conf"
OLD = ENTRIES / f"{MID}-6.11.4-301.fc41.x86_64.conf"
FS_UUID = "3a8b6f2d-1c4e-4d7a-9e0b-5f2c8d1a6e43"


def read_entry(path: Path) -> BlsEntry:
    return BlsEntry.parse(path.read_text(), str(path))


def load_entries() -> list[BlsEntry]:
    return [read_entry(path) for path in sorted(ENTRIES.glob("*.conf"))]


def needs(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"{tool} (grub-common) not installed")


@pytest.mark.parametrize("path", sorted(ENTRIES.glob("*.conf")), ids=lambda p: p.name)
def test_entries_round_trip(path: Path) -> None:
    entry = read_entry(path)
    assert entry.render() == path.read_text()
    assert entry.linux.startswith("/boot/vmlinuz-")


def test_model() -> None:
    entry = read_entry(OLD)
    assert entry.version == "6.11.4-301.fc41.x86_64"
    assert entry.initrds == ["/boot/initramfs-6.11.4-301.fc41.x86_64.img"]
    assert entry.options.texts() == [f"root=UUID={FS_UUID}", "ro", "rhgb", "quiet"]
    assert entry.get("grub_arg") == "--unrestricted"
    assert [e.version for e in boot_order(load_entries())] == [
        "6.12.9-200.fc41.x86_64",
        "6.11.4-301.fc41.x86_64",
    ]


def test_options_edits_are_minimal_and_idempotent() -> None:
    entry = read_entry(OLD)
    for _ in range(2):
        entry.set_root_live(label="LIVEOS")
        entry.append_args(["rd.live.overlay.overlayfs=1"])
        entry.disable_selinux()
    expected = OLD.read_text().replace(
        f"options root=UUID={FS_UUID} ro rhgb quiet",
        "options root=live:CDLABEL=LIVEOS ro rhgb quiet rd.live.image rd.live.dir=liveos"
        " rd.live.squashimg=rootfs.img rd.live.overlay.overlayfs=1 selinux=0",
    )
    assert entry.render() == expected
    entry.remove_root()
    assert "root=" not in entry.render()


def test_kernelopts_entry_is_inlined_before_editing() -> None:
    env = GrubEnv.parse((FEDORA / "grubenv").read_bytes())
    kernelopts = env.kernelopts
    assert kernelopts is not None and kernelopts.get("root") == f"UUID={FS_UUID}"
    entry = read_entry(NEW)
    entry.inline_kernelopts(kernelopts)
    entry.set_root_live(url="http://10.0.2.100/live.iso")
    assert entry.options.values("root") == ["live:http://10.0.2.100/live.iso"]
    assert "options root=live:http://10.0.2.100/live.iso ro rhgb quiet rd.live.image" in entry.render()


def test_paths_and_initrd() -> None:
    entry = BlsEntry.parse(
        "title T\nlinux /vmlinuz-6.1\ninitrd /initrd-6.1.img\ninitrd /ucode.img\noptions ro\n", "t.conf"
    )
    entry.prefix_boot_paths("/boot")
    entry.prefix_boot_paths("/boot")
    assert entry.linux == "/boot/vmlinuz-6.1"
    assert entry.initrds == ["/boot/initrd-6.1.img", "/boot/ucode.img"]
    entry.set_initrd("/boot/initrd.img")
    assert entry.render() == "title T\nlinux /boot/vmlinuz-6.1\ninitrd /boot/initrd.img\noptions ro\n"
    bare = BlsEntry.parse("linux /boot/vmlinuz")
    bare.append_args(["quiet"])
    assert bare.render() == "linux /boot/vmlinuz\noptions quiet\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("title x\nefi /EFI/Linux/x.efi\n", "'efi' key"),
        ("title x\nuki /EFI/Linux/x.efi\nlinux /k\n", "'uki' key"),
        ("title x\noptions ro\n", "no 'linux'"),
        ("linux /a\nlinux /b\n", "more than one 'linux'"),
    ],
)
def test_entry_errors(text: str, message: str) -> None:
    with pytest.raises(ImageError, match=message) as error:
        BlsEntry.parse(text, "/boot/loader/entries/x.conf")
    assert "/boot/loader/entries/x.conf" in str(error.value)


def test_pxe_menu_from_bls() -> None:
    env = GrubEnv.parse((FEDORA / "grubenv").read_bytes())
    menu = render_menu(load_entries(), env.kernelopts)
    assert menu == (
        "set default=0\n"
        "menuentry 'Fedora Linux (6.12.9-200.fc41.x86_64) 41 (Workstation Edition)' {\n"
        f"\tlinux /boot/vmlinuz-6.12.9-200.fc41.x86_64 root=UUID={FS_UUID} ro rhgb quiet\n"
        "\tinitrd /boot/initramfs-6.12.9-200.fc41.x86_64.img\n"
        "}\n"
        "menuentry 'Fedora Linux (6.11.4-301.fc41.x86_64) 41 (Workstation Edition)' {\n"
        f"\tlinux /boot/vmlinuz-6.11.4-301.fc41.x86_64 root=UUID={FS_UUID} ro rhgb quiet\n"
        "\tinitrd /boot/initramfs-6.11.4-301.fc41.x86_64.img\n"
        "}\n"
    )
    quoted = BlsEntry.parse("title It's \"new\"\nlinux /k\noptions a=$x 'b c'\n").to_menuentry()
    assert quoted == "menuentry 'It'\\''s \"new\"' {\n\tlinux /k a=$x 'b c'\n}\n"
    with pytest.raises(ImageError, match="no bootable"):
        render_menu([BlsEntry.parse("title rescue\nlinux /k\n")])


def test_inline_bls_into_grub_cfg_is_valid_grub() -> None:
    needs("grub-script-check")
    config = GrubConfig.parse((FEDORA / "grub.cfg").read_text())
    assert config.has_blscfg()
    inline_bls(config, load_entries())
    text = config.render()
    assert not config.has_blscfg() and "insmod blscfg\nset default=0\nmenuentry 'Fedora" in text
    assert config.kernel_paths() == [
        "/boot/vmlinuz-6.12.9-200.fc41.x86_64",
        "/boot/vmlinuz-6.11.4-301.fc41.x86_64",
    ]
    result = subprocess.run(["grub-script-check"], input=text.encode(), capture_output=True, check=False)
    assert result.returncode == 0, result.stderr
    with pytest.raises(ImageError, match="blscfg"):
        inline_bls(config, load_entries())


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1.0", "1.0", 0),
        ("6.12.9-200.fc41", "6.11.4-301.fc41", 1),
        ("6.6.10", "6.6.9", 1),
        ("1.0~rc1", "1.0", -1),
        ("1.0^git1", "1.0", 1),
        ("1.0a", "1.0", 1),
        ("1.0", "1.0.1", -1),
        ("2.a", "2.1", -1),
        ("0-rescue-abc", "6.1.0", -1),
        ("1_0", "1.0", 0),
    ],
)
def test_rpmvercmp(a: str, b: str, expected: int) -> None:
    assert rpmvercmp(a, b) == expected
    assert rpmvercmp(b, a) == -expected


# ---------------------------------------------------------------------- grubenv
def test_grubenv_round_trip_and_edit_read_back_by_grub_editenv(tmp_path: Path) -> None:
    needs("grub-editenv")
    raw = (FEDORA / "grubenv").read_bytes()
    env = GrubEnv.parse(raw)
    assert env.render() == raw
    assert env.get("saved_entry") == f"{MID}-6.12.9-200.fc41.x86_64"
    args = KernelArgs.parse('root=live:CDLABEL=LIVEOS rd.live.image x="a b"', ArgSyntax.KERNEL)
    env.set_kernelopts(args)
    env.set("multi", "line1\nline2\\")
    data = env.render()
    assert len(data) == 1024 and data.endswith(b"#")
    out = tmp_path / "grubenv"
    out.write_bytes(data)
    listed = subprocess.run(["grub-editenv", str(out), "list"], capture_output=True, check=True, text=True)
    assert 'kernelopts=root=live:CDLABEL=LIVEOS rd.live.image x="a b"' in listed.stdout
    assert GrubEnv.parse(data).get("multi") == "line1\nline2\\"
    # what grub-editenv writes, we read
    subprocess.run(["grub-editenv", str(out), "set", "k=v\\w"], check=True)
    assert GrubEnv.parse(out.read_bytes()).get("k") == "v\\w"


def test_grubenv_errors() -> None:
    with pytest.raises(ImageError, match="header"):
        GrubEnv.parse(b"kernelopts=x\n")
    env = GrubEnv.new()
    assert len(env.render()) == 1024
    env.set("kernelopts", "x" * 1100)
    with pytest.raises(ImageError, match="too small"):
        env.render()


# ---------------------------------------------------------------------- hostile input (regressions)
@pytest.mark.parametrize(
    "text",
    [
        "linux /k\ninitrd\noptions ro\n",  # set_initrd glued the path to the key: 'initrd/boot/...'
        "linux /k\ninitrd\x0c /i.img\noptions ro\n",  # \f ended a line for splitlines, not for BLS
        "linux /k\noptions root\r=UUID=x ro\n",  # removing root= glued the rest to 'options'
        "linux /k\noptions\n",
    ],
)
def test_edits_of_odd_entries_are_idempotent(text: str) -> None:
    def edit(entry: BlsEntry) -> str:
        entry.set_root_live(label="L").append_args(["q"]).remove_root().set_initrd("/boot/initrd.img")
        return entry.render()

    once = edit(BlsEntry.parse(text, "x.conf"))
    assert edit(BlsEntry.parse(once, "x.conf")) == once
    assert BlsEntry.parse(once).initrds == ["/boot/initrd.img"]


def test_options_errors_name_the_line() -> None:
    with pytest.raises(ImageError, match=r"x\.conf:3:11"):
        _ = BlsEntry.parse("title t\nlinux /k\noptions a 'b\n", "x.conf").options
    with pytest.raises(ImageError, match=r"x\.conf:2:11"):
        _ = BlsEntry.parse("linux /k\noptions a ; b\n", "x.conf").options
    with pytest.raises(ImageError, match="more than 4096 arguments"):
        _ = BlsEntry.parse("linux /k\noptions " + "a " * 5000 + "\n", "x.conf").options


def test_absurd_versions_are_refused() -> None:
    """rpmvercmp int()s number segments: 5000 digits raised a plain ValueError while sorting."""
    with pytest.raises(ImageError, match="version is 5000 characters"):
        BlsEntry.parse("version " + "9" * 5000 + "\nlinux /k\n", "x.conf")
    with pytest.raises(ImageError, match="linux file name"):
        BlsEntry.parse(f"linux /boot/vmlinuz-{'9' * 5000}\n", "x.conf")


def test_kernelopts_inlining_keeps_every_option() -> None:
    kernelopts = KernelArgs.parse(" ".join(f"a{i}" for i in range(4000)), ArgSyntax.KERNEL)
    entry = BlsEntry.parse("linux /k\noptions $kernelopts\n")
    entry.inline_kernelopts(kernelopts)
    assert len(entry.options) == 4000


def test_kernel_syntax_round_trips_odd_arguments() -> None:
    for text in ('a "" b', '" a=" b', '"x y"', 'k="v w"'):
        args = KernelArgs.parse(text, ArgSyntax.KERNEL)
        assert KernelArgs.parse(args.render(ArgSyntax.KERNEL), ArgSyntax.KERNEL) == args
