"""GrubConfig: lossless round trips, golden edits on real-world configs, idempotency, grub validity.

Edited configs are checked with grub's own parser (``grub-script-check`` from grub-common).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from liveos.errors import ImageError, UsageError
from liveos.grub import GrubConfig, KernelArg, KernelArgs, parse_env_vars, quote
from liveos.grub.kernelargs import ArgSyntax
from liveos.initramfs.liveargs import check_args, live_args
from liveos.versions import DracutVersion

DATA = Path(__file__).parent.parent / "data" / "grub"
SAMPLES = sorted([*DATA.glob("*.cfg"), DATA / "fedora" / "grub.cfg"])
UUID = "4b1f3c2e-8d7a-4e51-9a0f-2c6d1b7e9f30"
KVER = "6.1.0-56-amd64"


def sample(name: str) -> GrubConfig:
    path = DATA / name
    return GrubConfig.parse(path.read_text(), str(path))


def grub_verdict(text: str) -> tuple[bool, str]:
    """What grub's own parser says about ``text`` (grub-script-check, from grub-common)."""
    if shutil.which("grub-script-check") is None:
        pytest.skip("grub-script-check (grub-common) not installed")
    result = subprocess.run(["grub-script-check"], input=text.encode(), capture_output=True, check=False)
    empty = b"contains no commands" in result.stderr  # only comments: valid, grub just warns
    return result.returncode == 0 or empty, result.stderr.decode()


def grub_accepts(text: str) -> None:
    ok, stderr = grub_verdict(text)
    assert ok, f"grub rejects the edited config:\n{stderr}\n{text}"


EDITS: dict[str, Callable[[GrubConfig], object]] = {
    "set_search_label": lambda c: c.set_search_label("LIVEOS"),
    "remove_search": lambda c: c.remove_search(),
    "set_root_live_label": lambda c: c.set_root_live("/liveos/rootfs.img", label="LIVEOS"),
    "set_root_live_url": lambda c: c.set_root_live(url="http://10.0.2.100/live.iso"),
    "remove_root": lambda c: c.remove_root(),
    "set_initrd": lambda c: c.set_initrd("/boot/initrd.img"),
    "prefix_boot_paths": lambda c: c.prefix_boot_paths("/boot"),
    "disable_selinux": lambda c: c.disable_selinux(),
    "append_args": lambda c: c.append_args(["rd.live.image", "quiet", "x=a b", "y=$z"]),
    "set_arg": lambda c: c.set_arg("console", "ttyS0,115200"),
    "remove_args": lambda c: c.remove_args("ro", "quiet"),
}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_unedited_round_trip_is_byte_identical(path: Path) -> None:
    text = path.read_text()
    assert GrubConfig.parse(text, str(path)).render() == text


@pytest.mark.parametrize("edit", EDITS, ids=str)
@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_edit_is_idempotent_and_valid_grub(path: Path, edit: str) -> None:
    config = GrubConfig.parse(path.read_text(), str(path))
    EDITS[edit](config)
    once = config.render()
    EDITS[edit](config)
    assert config.render() == once
    assert GrubConfig.parse(once).render() == once
    grub_accepts(once)


def test_fixture_bootstrap_golden() -> None:
    """The whole ISO bootstrap edit of the fixture config: exact expected bytes."""
    config = sample("fixture-debian.cfg")
    config.set_search_label("LIVEOS")
    config.set_root_live("/liveos/rootfs.img", label="LIVEOS")
    config.append_args(["rd.live.overlay.overlayfs=1"])
    config.disable_selinux()
    original = (DATA / "fixture-debian.cfg").read_text()
    expected = original.replace(
        f"search --no-floppy --fs-uuid --set=root {UUID}", "search --no-floppy --set=root --label LIVEOS"
    ).replace(
        f"root=UUID={UUID} ro console=tty0 console=ttyS0,115200 systemd.firstboot=off",
        "root=live:CDLABEL=LIVEOS ro console=tty0 console=ttyS0,115200 systemd.firstboot=off"
        " rd.live.image rd.live.dir=liveos rd.live.squashimg=rootfs.img"
        " rd.live.overlay.overlayfs=1 selinux=0",
    )
    assert config.render() == expected
    assert config.kernel_paths() == [f"/boot/vmlinuz-{KVER}"]
    assert config.initrd_paths() == [f"/boot/initrd.img-{KVER}"]


def test_fixture_full_os_golden() -> None:
    config = sample("fixture-azure.cfg")
    config.remove_root()
    config.set_initrd("/boot/initrd.img")
    text = config.render()
    assert "root=PARTUUID" not in text
    assert f"\tlinux $bootprefix/vmlinuz-{KVER} ro console=tty0" in text
    assert "\tinitrd /boot/initrd.img\n" in text
    assert config.initrd_paths() == ["/boot/initrd.img"]


def test_esp_redirectors() -> None:
    debian = sample("esp-debian-redirect.cfg")
    assert len(debian.search_commands()) == 1
    assert debian.set_search_label("LIVEOS") is debian
    assert debian.render() == (
        "search --no-floppy --set=root --label LIVEOS\nset prefix=($root)'/boot/grub'\n"
        "configfile $prefix/grub.cfg\n"
    )
    azure = sample("esp-azure-redirect.cfg")
    azure.set_search_label("MY LABEL")
    assert azure.render().startswith('search --no-floppy --set=root --label "MY LABEL"\n')
    assert azure.remove_search() is azure and not azure.search_commands()
    assert azure.render() == 'set prefix=($root)"/boot/grub2"\nconfigfile $prefix/grub.cfg\n'


def test_debian_mkconfig_model() -> None:
    config = sample("debian-bookworm.cfg")
    titles = [entry.path for entry in config.menu_entries if entry.kind == "menuentry"]
    assert (
        "Advanced options for Debian GNU/Linux",
        f"Debian GNU/Linux, with Linux {KVER} (recovery mode)",
    ) in titles
    assert len(config.linux_commands()) == 3
    assert [c.menu for c in config.linux_commands()][1][0] == "Advanced options for Debian GNU/Linux"
    assert config.variables()["menuentry_id_option"] == ""  # last assignment in file order
    assert len(config.search_commands()) == 10


def test_debian_search_var_is_kept_and_empty_branches_get_a_command() -> None:
    fedora = sample("fedora/grub.cfg")
    fedora.set_search_label("LIVEOS")
    assert "search --no-floppy --set=boot --label LIVEOS" in fedora.render()
    assert "search --no-floppy --set=root --label LIVEOS" in fedora.render()
    config = sample("debian-bookworm.cfg")
    config.remove_search()
    text = config.render()
    assert config.search_commands() == []
    assert "then\n  true\nelse\n  true\nfi" in text
    grub_accepts(text)


def test_debian_bootstrap_edit_touches_only_linux_lines() -> None:
    config = sample("debian-bookworm.cfg")
    before = config.render().splitlines()
    config.set_root_live(label="LIVEOS")
    after = config.render().splitlines()
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) == 3
    for old, new in changed:
        assert old.lstrip().startswith("linux\t")
        assert new.rstrip().endswith(" rd.live.image rd.live.dir=liveos rd.live.squashimg=rootfs.img")
        assert "root=live:CDLABEL=LIVEOS ro" in new


def test_azure_linux_paths_need_env_and_resolve_with_it() -> None:
    config = sample("azurelinux3.cfg")
    with pytest.raises(ImageError, match=r"mariner_linux.*\n.*mariner\.cfg"):
        config.kernel_paths()
    assert config.env_files()[0] == "/boot/mariner.cfg"
    env = parse_env_vars((DATA / "azurelinux3-mariner.cfg").read_text())
    assert config.kernel_paths(env) == ["/boot/vmlinuz-6.6.57.1-1.azl3"]
    assert config.initrd_paths(env) == ["/boot/initramfs-6.6.57.1-1.azl3.img"]
    assert config.kernel_args()[0].get("root") is None  # root=$rootdevice: value unknown statically
    assert "root" in config.kernel_args()[0]


def test_azure_linux_edits() -> None:
    config = sample("azurelinux3.cfg")
    config.set_root_live(label="CDROM")
    config.append_args(["rd.live.overlay.overlayfs=1"])
    config.disable_selinux()
    (line,) = [ln for ln in config.render().splitlines() if ln.lstrip().startswith("linux")]
    assert line == (
        "\tlinux $bootprefix/$mariner_linux selinux=0 rd.auto=1 root=live:CDLABEL=CDROM $mariner_cmdline"
        " lockdown=integrity sysctl.kernel.unprivileged_bpf_disabled=1 $systemd_cmdline console=ttyS0"
        " rd.live.image rd.live.dir=liveos rd.live.squashimg=rootfs.img"
        " rd.live.overlay.overlayfs=1 $kernelopts"
    )
    config.set_initrd("/boot/initrd.img")
    text = config.render()
    assert "\tif [ -f /boot/initrd.img ]; then\n\t\tinitrd /boot/initrd.img\n" in text


def test_prefix_boot_paths_for_a_separate_boot_partition() -> None:
    text = (DATA / "debian-bookworm.cfg").read_text().replace("\t/boot/", "\t/")
    config = GrubConfig.parse(text)
    assert config.kernel_paths() == [f"/vmlinuz-{KVER}"]
    config.prefix_boot_paths("/boot")
    assert config.render() == (DATA / "debian-bookworm.cfg").read_text()
    # device-qualified and quoted paths
    config = GrubConfig.parse("linux (hd0,gpt2)/vmlinuz ro\ninitrd '/initrd.img' /boot/ucode.img\n")
    config.prefix_boot_paths()
    assert config.render() == "linux (hd0,gpt2)/boot/vmlinuz ro\ninitrd /boot'/initrd.img' /boot/ucode.img\n"
    assert config.initrd_paths() == ["/boot/initrd.img", "/boot/ucode.img"]
    # '$bootprefix/...' with an empty bootprefix: the one literal 'set' gets the prefix
    config = GrubConfig.parse("set bootprefix=\nmenuentry x {\n linux $bootprefix/vmlinuz\n}\n")
    config.prefix_boot_paths()
    assert config.render().startswith("set bootprefix=/boot\n")
    assert config.kernel_paths() == ["/boot/vmlinuz"]


def test_append_args_quotes_and_never_duplicates() -> None:
    config = GrubConfig.parse("menuentry 'a' {\n\tlinux /vmlinuz ro $kernelopts\n}\n")
    config.append_args(["a=b c", "d=$e", "ro", "f"])
    config.append_args(["a=b c", "f"])
    assert config.render() == 'menuentry \'a\' {\n\tlinux /vmlinuz ro "a=b c" "d=\\$e" f $kernelopts\n}\n'
    assert config.kernel_args()[0].texts() == ["ro", "a=b c", "d=$e", "f", "$kernelopts"]
    with pytest.raises(UsageError):
        config.append_args(["bad\narg"])


def test_set_arg_replaces_first_and_drops_duplicates() -> None:
    config = GrubConfig.parse("linux /k console=tty0 ro console=ttyS0 \\\n   quiet\n")
    config.set_arg("console", "ttyS1")
    assert config.render() == "linux /k console=ttyS1 ro \\\n   quiet\n"
    config.remove_args("quiet")
    assert config.render() == "linux /k console=ttyS1 ro\n"


def test_set_root_live_validates_its_inputs() -> None:
    config = sample("fixture-debian.cfg")
    with pytest.raises(UsageError):
        config.set_root_live(label="A", url="http://x/y.iso")
    with pytest.raises(UsageError):
        config.set_root_live("relative.img", label="A")
    config.set_root_live("/LiveOS/squashfs.img", url="http://10.0.2.100/live.iso")
    args = config.kernel_args()[0]
    assert args.get("root") == "live:http://10.0.2.100/live.iso"
    assert (args.get("rd.live.dir"), args.get("rd.live.squashimg")) == ("LiveOS", "squashfs.img")


def test_remove_search_keeps_a_condition_and_semicolon_lists() -> None:
    config = GrubConfig.parse("search -s -u X; set prefix=x\nif search --file /f; then echo y; fi\n")
    assert len(config.remove_search().search_commands()) == 1  # the condition stays
    assert config.render() == "set prefix=x\nif search --file /f; then echo y; fi\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("if true; then\n echo\n", "has no matching 'fi'"),
        ("menuentry 'x' {\n linux /k\n", "has no matching '}'"),
        ("echo }\n", "unexpected '}'"),
        ("fi\n", "unexpected 'fi'"),
        ("echo a | b\n", "not supported"),
        ("linux\n", None),
    ],
)
def test_syntax_errors_name_the_place(text: str, message: str | None) -> None:
    if message is None:  # a 'linux' without a path parses, but cannot be edited or resolved
        config = GrubConfig.parse(text, "/boot/grub/grub.cfg")
        with pytest.raises(ImageError, match="no file path"):
            config.kernel_paths()
        return
    with pytest.raises(ImageError, match=message) as error:
        GrubConfig.parse(text, "/boot/grub/grub.cfg")
    assert "/boot/grub/grub.cfg:" in str(error.value)


# ---------------------------------------------------------------------- generated configs
_word_text = st.text(alphabet="abcXYZ019/=.,-_ $\"'\\#{};", min_size=1, max_size=8)
_plain = st.text(alphabet="abcxyz019/=.,-_", min_size=1, max_size=8)
_word = st.one_of(_plain, _word_text.map(quote), _plain.map(lambda s: "$" + s[0].replace("/", "v") + "x"))
_blank = st.sampled_from([" ", "  ", "\t", " \\\n  "])


@st.composite
def _command(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.sampled_from(["plain", "linux", "initrd", "search", "set", "comment", "menu", "if"]))
    if kind == "menu" and depth < 2:
        body = draw(st.lists(_command(depth + 1), min_size=1, max_size=3))
        title = quote(draw(_word_text))
        return f"{'submenu' if depth == 0 else 'menuentry'} {title} --class x {{\n" + "".join(body) + "}\n"
    if kind == "if" and depth < 2:
        body = draw(st.lists(_command(depth + 1), min_size=1, max_size=2))
        other = draw(st.lists(_command(depth + 1), min_size=1, max_size=2))
        return "if [ x$a = xy ]; then\n" + "".join(body) + "else\n" + "".join(other) + "fi\n"
    if kind == "comment":
        return "# " + draw(_word_text).replace("\n", " ") + "\n"
    if kind == "set":
        return f"set {draw(st.sampled_from(['a', 'bootprefix', 'kernelopts']))}={quote(draw(_plain))}\n"
    name = {"linux": "linux /vmlinuz", "initrd": "initrd /initrd.img", "search": "search --set=root -u"}.get(
        kind, "echo"
    )
    args = draw(st.lists(_word, max_size=5))
    pieces = [name]
    for arg in args:
        pieces.append(draw(_blank) + arg)
    end = draw(st.sampled_from(["\n", " \n", ";\n", "  # trailing\n"]))
    return draw(_blank).strip(" \\\n") + "".join(pieces) + end


_configs = st.lists(_command(), min_size=1, max_size=8).map("".join)


@settings(max_examples=200, deadline=None)
@given(_configs)
def test_generated_configs_round_trip_and_edits_are_idempotent(text: str) -> None:
    config = GrubConfig.parse(text)
    assert config.render() == text
    for name in ("set_search_label", "set_root_live_label", "disable_selinux", "append_args", "remove_args"):
        EDITS[name](config)
        once = config.render()
        EDITS[name](config)
        assert config.render() == once, name
        assert GrubConfig.parse(once).render() == once
    for args in config.kernel_args():
        assert args.texts().count("rd.live.image") == 1
        assert args.values("root") == ["live:CDLABEL=LIVEOS"]


@settings(max_examples=25, deadline=None)
@given(_configs)
def test_generated_configs_stay_valid_grub_after_edits(text: str) -> None:
    assume(grub_verdict(text)[0])  # valid input must stay valid
    config = GrubConfig.parse(text)
    for edit in EDITS.values():
        edit(config)
    grub_accepts(config.render())


# ---------------------------------------------------------------------- KernelArgs value object
def test_kernel_args_value_object() -> None:
    args = KernelArgs.parse("root=UUID=x ro 'a b' $kernelopts")
    assert args.render() == "root=UUID=x ro 'a b' $kernelopts"  # untouched args keep their spelling
    assert args.texts() == ["root=UUID=x", "ro", "a b", "$kernelopts"]
    edited = args.set("root", "live:CDLABEL=L").append("rd.live.image", "ro").remove("nothing")
    assert edited.render() == "root=live:CDLABEL=L ro 'a b' rd.live.image $kernelopts"
    assert edited.set("root", "live:CDLABEL=L") == edited
    assert edited.get("root") == "live:CDLABEL=L" and "rd.live.image" in edited
    kernel = KernelArgs.parse('a="b c" d', ArgSyntax.KERNEL)
    assert kernel.texts() == ["a=b c", "d"]
    assert kernel.render(ArgSyntax.KERNEL) == 'a="b c" d'
    assert kernel.render() == '"a=b c" d'
    assert KernelArgs.parse(kernel.render()) == kernel
    with pytest.raises(UsageError):
        KernelArg.of("a=b")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet="ab=$\" '\\;#{", min_size=1, max_size=6), max_size=6))
def test_kernel_args_grub_render_parse_symmetry(texts: list[str]) -> None:
    args = KernelArgs.of(texts)
    assert KernelArgs.parse(args.render()) == args
    assert args.append(*texts) == args.append(*texts).append(*texts)


# ---------------------------------------------------------------------- live args for dracut
@pytest.mark.parametrize(
    ("text", "major", "release"),
    [
        ("059-4", 59, "4"),
        ("102-11.azl3", 102, "11.azl3"),
        ("105", 105, ""),
        ("1:059-4", 59, "4"),
        ("dracut-ng-110", 110, ""),
        ("059+suse.1", 59, "suse.1"),
    ],
)
def test_parse_dracut_version(text: str, major: int, release: str) -> None:
    assert DracutVersion.parse(text) == DracutVersion(major, release)


def test_live_args_follow_the_dracut_version() -> None:
    assert live_args("059-4") == ["rd.live.image", "rd.live.overlay.overlayfs=1"]
    assert live_args("102-11.azl3") == ["rd.live.image", "rd.live.overlay.overlayfs=1"]
    assert live_args("109") == ["rd.live.image", "rd.live.overlay.overlayfs=1"]
    assert live_args("110-1") == ["rd.live.image", "rd.overlay"]
    assert live_args(None) == ["rd.live.image", "rd.live.overlay.overlayfs=1"]
    assert "rd.shell" not in live_args("059") and live_args("059", shell=True)[-1] == "rd.shell"
    with pytest.raises(ImageError):
        DracutVersion.parse("unknown")


def test_check_args() -> None:
    assert check_args(live_args("059-4"), "059-4") == []
    assert check_args(live_args("110"), "110") == []
    old_on_new = check_args(["rd.live.overlay.overlayfs=1"], "110")
    assert old_on_new and "deprecated" in old_on_new[0] and "rd.overlay" in old_on_new[0]
    new_on_old = check_args(["rd.overlay", "rd.overlay=LABEL=p"], "059-4")
    assert "rd.live.overlay.overlayfs" in new_on_old[0] and "'rd.live.overlay'" in new_on_old[1]
    assert "removed" in check_args(["liveimg"], "105")[0]
    assert "not a dmsquash-live option" in check_args(["rd.live.overlayfs=1"], "059")[0]
    assert check_args(["rd.live.azldownloader=enable"], "102-11.azl3") == []
    assert "Azure Linux" in check_args(["rd.live.azldownloader=enable"], "059-4")[0]
    assert "root shell" in check_args(["rd.shell"], None)[0]


# ---------------------------------------------------------------------- hostile input (regressions)
def test_composed_argument_edits_equal_edits_one_by_one() -> None:
    """Argument edits in a row are spliced in once; the text is what splicing each one gives."""
    text = (DATA / "debian-bookworm.cfg").read_text()
    composed = GrubConfig.parse(text)
    one_by_one = GrubConfig.parse(text)
    edits: list[Callable[[GrubConfig], object]] = [
        lambda c: c.set_root_live(label="LIVEOS"),
        lambda c: c.append_args(["a", "b c"]),
        lambda c: c.remove_args("ro", "a"),
        lambda c: c.disable_selinux(),
        lambda c: c.append_args(["a"]),
    ]
    for edit in edits:
        edit(composed)
        edit(one_by_one)
        one_by_one = GrubConfig.parse(one_by_one.render())
    assert composed.render() == one_by_one.render()
    assert composed.kernel_args() == one_by_one.kernel_args()


def test_search_variable_stays_one_word() -> None:
    """``--set="a;b"`` was written back bare: two commands, and a new edit on every run."""
    texts = (
        'search --set="a;b" -u X\n',
        "search.fs_uuid X 'a b'\n",
        "search --set=$v -u X\n",
        "search.fs_uuid X ''\n",
    )
    for text in texts:
        config = GrubConfig.parse(text)
        config.set_search_label("L")
        once = config.render()
        assert len(GrubConfig.parse(once).commands) == 1, once
        assert config.set_search_label("L").render() == once


def test_prefix_boot_paths_edge_cases() -> None:
    # a relative path is not one to put under /boot ('/bootvmlinuz' again and again)
    config = GrubConfig.parse('linux vmlinuz\ninitrd (hd0)initrd ""\n')
    assert config.prefix_boot_paths().render() == 'linux vmlinuz\ninitrd (hd0)initrd ""\n'
    # a bare assignment counts: two assignments of bootprefix, no guess which to change
    text = "set bootprefix=/boot\nbootprefix=\nlinux $bootprefix/vmlinuz\n"
    assert GrubConfig.parse(text).prefix_boot_paths().render() == text
    config = GrubConfig.parse("bootprefix=\nlinux $bootprefix/vmlinuz\n").prefix_boot_paths()
    assert config.render() == "bootprefix=/boot\nlinux $bootprefix/vmlinuz\n"


def test_variables_that_double_are_refused() -> None:
    config = GrubConfig.parse("set a=x\n" + "set a=$a$a\n" * 64 + "linux $a\n", "/boot/grub/grub.cfg")
    with pytest.raises(ImageError, match=r"grub\.cfg:\d+: its variables expand"):
        config.kernel_paths()


def test_too_many_tokens_are_refused() -> None:
    with pytest.raises(ImageError, match=r"grub\.cfg:\d+\): liveos refuses"):
        GrubConfig.parse("a;" * (1 << 19), "/boot/grub/grub.cfg")
    with pytest.raises(ImageError, match="more than 4096 arguments"):
        GrubConfig.parse("linux /k " + "a " * 5000 + "\n").kernel_args()


def test_empty_word_as_a_path() -> None:
    """``linux ""`` made prefix_boot_paths raise IndexError."""
    config = GrubConfig.parse('linux "" ro\n')
    assert config.prefix_boot_paths().render() == 'linux "" ro\n'
