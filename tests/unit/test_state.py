"""The media state file (parse/render symmetry, strict validation) and the re-edit bookkeeping
that makes rebuilds of a re-opened liveos ISO idempotent, on real grub configs."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import pytest

from liveos.errors import ImageError, UsageError
from liveos.grub import GrubConfig
from liveos.media.grubedit import GrubEdit, edit_grub_config
from liveos.media.rebuild import apply_edits, media_state
from liveos.settings import InitramfsMode
from liveos.state import DIGEST_ALGORITHM, SCHEMA_VERSION, MediaState, SourceDigest, build_time

GRUB_PATH = PurePosixPath("/boot/grub2/grub.cfg")
STATE = MediaState(
    liveos_version="0.1.0",
    mode=InitramfsMode.BOOTSTRAP,
    label="LIVEOS_X",
    live_args=("root=live:CDLABEL=LIVEOS_X", "rd.live.image", "selinux=0"),
    user_args=("quiet", "a b"),
    source=SourceDigest(DIGEST_ALGORITHM, 123, "ab" * 32),
    build_time=1_700_000_000,
)

GRUB_CFG = """\
set timeout=1
search -n -u 1234 -s
menuentry 'OS' {
\tlinux /boot/vmlinuz-6.1 root=PARTUUID=abcd ro security=selinux selinux=1 console=ttyS0
\tinitrd /boot/initramfs-6.1.img
}
menuentry 'OS rescue' {
\tlinux /boot/vmlinuz-6.1 root=PARTUUID=abcd ro single
\tinitrd /boot/initramfs-6.1.img
}
"""


# -- the state file ------------------------------------------------------------------------------
def test_state_round_trips() -> None:
    text = STATE.render()
    assert MediaState.parse(text) == STATE
    assert MediaState.parse(text).render() == text
    doc = json.loads(text)
    assert doc["schema"] == SCHEMA_VERSION
    assert doc["build_time"] == "2023-11-14T22:13:20Z"
    assert doc["kernel_args"] == {"live": list(STATE.live_args), "user": ["quiet", "a b"]}


def _doc() -> dict[str, object]:
    doc: dict[str, object] = json.loads(STATE.render())
    return doc


def _broken(change: str) -> dict[str, object]:
    doc = _doc()
    source = doc["source"]
    args = doc["kernel_args"]
    assert isinstance(source, dict) and isinstance(args, dict)
    if change == "unknown top key":
        doc["extra"] = 1
    elif change == "unknown nested key":
        source["md5"] = "x"
    elif change == "missing key":
        del doc["label"]
    elif change == "schema as string":
        doc["schema"] = "1"
    elif change == "schema as bool":
        doc["schema"] = True
    elif change == "size as float":
        source["size"] = 1.5
    elif change == "args not a list":
        args["user"] = "quiet"
    elif change == "arg not a string":
        args["live"] = [1]
    elif change == "arg with newline":
        args["user"] = ["a\nb"]
    elif change == "bad mode":
        doc["mode"] = "squashfs"
    elif change == "bad label":
        doc["label"] = "lower"
    elif change == "bad digest":
        source["sha256"] = "XYZ"
    elif change == "bad time":
        doc["build_time"] = "yesterday"
    return doc


@pytest.mark.parametrize(
    "change",
    [
        "unknown top key",
        "unknown nested key",
        "missing key",
        "schema as string",
        "schema as bool",
        "size as float",
        "args not a list",
        "arg not a string",
        "arg with newline",
        "bad mode",
        "bad label",
        "bad digest",
        "bad time",
    ],
)
def test_state_rejects_malformed(change: str) -> None:
    with pytest.raises(ImageError) as caught:
        MediaState.parse(json.dumps(_broken(change)), path="media.iso:/liveos/state.json")
    message = str(caught.value)
    assert "media.iso:/liveos/state.json" in message
    assert "fix:" in message


def test_state_rejects_newer_schema_and_non_json() -> None:
    doc = _doc()
    doc["schema"] = SCHEMA_VERSION + 1
    doc["something_new"] = {"x": 1}  # a newer schema may add keys: the version error comes first
    with pytest.raises(ImageError, match="newer than this liveos") as caught:
        MediaState.parse(json.dumps(doc))
    assert "upgrade liveos" in str(caught.value)
    for text in ("", "[1]", "{", "null"):
        with pytest.raises(ImageError, match=r"state\.json"):
            MediaState.parse(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"schema": ' + "1" * 5000 + "}", "digits"),  # int() raised a plain ValueError (digit limit)
        ("[" * 100_000 + "]" * 100_000, "bytes|characters"),  # too long before anything else
        ("[" * 30_000, "nested"),  # json recursed into a RecursionError
        ('{"schema": NaN}', "NaN"),
        ('{"schema": 1, "schema": 2}', "twice"),
        (b"\xff\xfe{}", "UnicodeDecodeError"),
        (" " * (64 * 1024 + 1), "more than 65536"),
    ],
)
def test_state_hostile_documents_are_image_errors(text: str | bytes, message: str) -> None:
    with pytest.raises(ImageError, match=message) as caught:
        MediaState.parse(text, path="media.iso:/liveos/state.json")
    assert "media.iso:/liveos/state.json" in str(caught.value) and len(str(caught.value)) < 1000


@pytest.mark.parametrize("size", [-1, 2**63, 2**64, 10**19])
def test_state_source_size_is_a_file_size(size: int) -> None:
    doc = _doc()
    source = doc["source"]
    assert isinstance(source, dict)
    source["size"] = size
    with pytest.raises(ImageError, match=r"source\.size"):
        MediaState.parse(json.dumps(doc))
    source["size"] = 2**63 - 1
    assert MediaState.parse(json.dumps(doc)).source.size == 2**63 - 1


def test_state_long_strings_are_quoted_short() -> None:
    doc = _doc()
    doc["label"] = "x" * 50_000
    with pytest.raises(ImageError, match="label") as caught:
        MediaState.parse(json.dumps(doc))
    assert len(str(caught.value)) < 1000


def test_digest_sees_head_tail_and_size(tmp_path: Path) -> None:
    path = tmp_path / "disk"
    data = bytearray(b"\1" * (3 << 20))
    path.write_bytes(data)
    base = SourceDigest.of_file(path)
    assert base.size == len(data) and base.algorithm == DIGEST_ALGORITHM
    assert SourceDigest.of_file(path) == base
    for offset in (0, len(data) - 1):
        changed = bytearray(data)
        changed[offset] = 2
        path.write_bytes(changed)
        assert SourceDigest.of_file(path) != base, offset
    path.write_bytes(data + b"\1")
    assert SourceDigest.of_file(path) != base
    path.write_bytes(b"tiny")
    assert SourceDigest.of_file(path).size == 4


def test_build_time_honours_source_date_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234")
    assert build_time() == 1234
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "soon")
    with pytest.raises(UsageError):
        build_time()


# -- idempotent grub.cfg edits (real GrubConfig, real edit_grub_config) -----------------------------
@dataclass(frozen=True)
class Build:
    mode: InitramfsMode = InitramfsMode.BOOTSTRAP
    label: str = "LIVEOS_A"
    user_args: tuple[str, ...] = ("quiet", "console=ttyS0")
    selinux_off: bool = True

    def run(self, text: str, previous: MediaState | None) -> tuple[str, MediaState]:
        def edit(source: str) -> GrubConfig:
            return edit_grub_config(
                source,
                GrubEdit(
                    mode=self.mode,
                    label=self.label,
                    boot_separate=False,
                    dracut_version="059-4",
                    user_args=self.user_args,
                    disable_selinux=self.selinux_off,
                ),
                path=GRUB_PATH,
            )

        applied = apply_edits(text, edit, previous)
        state = replace(
            STATE,
            mode=self.mode,
            label=self.label,
            live_args=tuple(a for a in applied.added if a not in self.user_args),
            user_args=tuple(a for a in applied.added if a in self.user_args),
        )
        return applied.config.render(), state


def _lines(text: str) -> list[list[str]]:
    return [line.texts() for line in GrubConfig.parse(text).kernel_args()]


def test_rebuild_with_same_options_is_identical() -> None:
    first, state = Build().run(GRUB_CFG, None)
    # console=ttyS0 was already on the first line: the user's copy is not "added" there.
    assert "console=ttyS0" in state.user_args  # ... but it was added to the rescue line
    assert "root=live:CDLABEL=LIVEOS_A" in state.live_args and "selinux=0" in state.live_args
    assert "ro" not in state.added_args and "single" not in state.added_args
    second, state2 = Build().run(first, state)
    assert second == first
    assert state2 == state
    third, _ = Build().run(second, state2)
    assert third == first
    for line in _lines(first):
        assert len(line) == len(set(line)), f"duplicated argument in {line}"


def test_rebuild_drops_what_is_no_longer_asked_for() -> None:
    first, state = Build(user_args=("quiet", "debug")).run(GRUB_CFG, None)
    second, state2 = Build(user_args=("quiet",), label="LIVEOS_B").run(first, state)
    assert "debug" not in second and "LIVEOS_A" not in second
    assert "root=live:CDLABEL=LIVEOS_B" in second
    assert state2.user_args == ("quiet",)
    assert second == Build(user_args=("quiet",), label="LIVEOS_B").run(GRUB_CFG, None)[0]


def test_conversion_bootstrap_to_full_os_and_back() -> None:
    boot1, state1 = Build().run(GRUB_CFG, None)
    full, state2 = Build(mode=InitramfsMode.FULL_OS).run(boot1, state1)
    direct_full, _ = Build(mode=InitramfsMode.FULL_OS).run(GRUB_CFG, None)
    assert full == direct_full
    for line in _lines(full):
        assert not any(a.startswith(("rd.live", "root=")) for a in line), line
    assert "initrd /boot/initrd.img" in full
    back, _ = Build().run(full, state2)
    for line in _lines(back):
        assert line.count("rd.live.image") == 1 and line.count("root=live:CDLABEL=LIVEOS_A") == 1


def test_selinux_restored_when_no_longer_disabled() -> None:
    first, state = Build().run(GRUB_CFG, None)
    second, _ = Build(selinux_off=False).run(first, state)
    assert "selinux=0" not in second


def test_media_state_carries_the_source_digest_over(tmp_path: Path) -> None:
    disk = tmp_path / "disk.raw"
    disk.write_bytes(b"x" * 4096)
    fresh = media_state(
        mode=InitramfsMode.BOOTSTRAP,
        label="L",
        added=["a", "u"],
        user_args=["u"],
        source=disk,
        previous=None,
    )
    assert fresh.source == SourceDigest.of_file(disk)
    assert (fresh.live_args, fresh.user_args) == (("a",), ("u",))
    again = media_state(
        mode=InitramfsMode.FULL_OS, label="L", added=[], user_args=[], source=tmp_path, previous=STATE
    )
    assert again.source == STATE.source
