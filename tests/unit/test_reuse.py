"""Reuse decisions: which cached product a build may take, and what may go on top of it.

Pure logic over real files: a real :class:`ArtifactCache` in a temp dir, real lower and upper
directories (no mount needed: the rules read them as directories), synthetic changes where only
their fields matter.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path, PurePosixPath

import pytest

from liveos.cache import ArtifactCache
from liveos.cpio import CpioEntry, extract, iter_entries, write_newc, write_newc_paths
from liveos.errors import ImageError
from liveos.image import identity
from liveos.image.changes import Change, ChangeKind, scan_changes
from liveos.image.layers import Layer, effective_changes, lower_entry
from liveos.initramfs import fullos
from liveos.initramfs.inputs import InitrdContents, conditional_paths, initrd_inputs, is_inert
from liveos.layout import ROOT_IMAGE_EXCLUDED, is_excluded
from liveos.media import updates
from liveos.media.reuse import (
    entry_key,
    inputs_digest,
    plan_initrd,
    plan_tree,
    recorded_meta,
    slot_key,
)
from liveos.plan import Reuse
from liveos.settings import Compression

SLOT = slot_key("squashfs", "0" * 64, "fast")


def change(path: str, kind: ChangeKind = ChangeKind.FILE, *, data: str = "x", **fields: object) -> Change:
    """A change with plausible fields; ``data`` stands for the content (its fingerprint)."""
    modes = {ChangeKind.FILE: 0o100644, ChangeKind.DIRECTORY: 0o40755, ChangeKind.SYMLINK: 0o120777}
    values: dict[str, object] = {
        "path": PurePosixPath(path),
        "kind": kind,
        "mode": modes.get(kind, 0o20000),
        "uid": 0,
        "gid": 0,
        "size": len(data),
        "nlink": 1,
        "digest": data if kind in (ChangeKind.FILE, ChangeKind.SYMLINK) else None,
    }
    values.update(fields)
    return Change(**values)  # type: ignore[arg-type]


def fingerprints(*changes: Change) -> dict[str, str]:
    return {str(c.path): c.fingerprint for c in changes}


@pytest.fixture
def cache(tmp_path: Path) -> ArtifactCache:
    return ArtifactCache(tmp_path / "cache", 1 << 30)


def stored(
    cache: ArtifactCache, tmp_path: Path, kind: str, slot: str, inputs: dict[str, str], **meta: object
) -> str:
    product = tmp_path / f"product-{len(list(tmp_path.iterdir()))}"
    product.write_bytes(b"product")
    key = entry_key(slot, inputs)
    assert cache.put(kind, key, product, recorded_meta(inputs, **meta)) is not None
    return key


# -- keys ------------------------------------------------------------------------------------------
def test_keys_depend_on_every_input_and_nothing_else() -> None:
    a = {"/etc/motd": "1", "/etc/issue": "2"}
    assert inputs_digest(a) == inputs_digest(dict(reversed(list(a.items()))))
    assert inputs_digest(a) != inputs_digest({**a, "/etc/motd": "3"})
    assert inputs_digest({}) != inputs_digest({"/x": ""})
    assert slot_key("initrd", "d" * 64, ["dracut", "-a"]) != slot_key("initrd", "d" * 64, ["dracut", "-b"])
    assert slot_key("initrd", "d" * 64, 1) != slot_key("initrd", "e" * 64, 1)
    assert entry_key(SLOT, a).startswith(SLOT + "-")


def test_a_change_fingerprint_covers_content_mode_and_owner() -> None:
    base = change("/etc/motd", data="a")
    assert base.fingerprint == change("/etc/motd", data="a").fingerprint
    for other in (
        change("/etc/motd", data="b"),
        change("/etc/motd", data="a", mode=0o100600),
        change("/etc/motd", data="a", uid=1),
        change("/etc/motd2", data="a"),
    ):
        assert other.fingerprint != base.fingerprint


# -- the tree products: root image and full-os CPIO ---------------------------------------------
def test_same_tree_is_reused_as_it_is(cache: ArtifactCache, tmp_path: Path) -> None:
    motd = change("/etc/motd", data="hi")
    key = stored(cache, tmp_path, "squashfs", SLOT, fingerprints(motd))
    decision = plan_tree(cache, "squashfs", SLOT, [motd], None)
    assert decision.cache.reuse is Reuse.CACHED and decision.cache.entry == key
    assert decision.base is not None and decision.base.size == len(b"product")


def test_nothing_cached_means_build(cache: ArtifactCache) -> None:
    decision = plan_tree(cache, "squashfs", SLOT, [], lambda delta: None)
    assert decision.cache.reuse is Reuse.BUILD and decision.base is None
    assert "no squashfs" in decision.cache.reason


def test_later_changes_go_on_top_when_the_rule_allows(cache: ArtifactCache, tmp_path: Path) -> None:
    motd = change("/etc/motd", data="one")
    stored(cache, tmp_path, "squashfs", SLOT, {})
    stored(cache, tmp_path, "squashfs", SLOT, fingerprints(motd))
    now = [change("/etc/motd", data="one"), change("/etc/issue", data="new")]
    decision = plan_tree(cache, "squashfs", SLOT, now, lambda delta: None)
    assert decision.cache.reuse is Reuse.UPDATED
    # the smallest update wins: the entry that already has /etc/motd needs only /etc/issue
    assert [str(c.path) for c in decision.delta] == ["/etc/issue"]
    assert decision.cache.delta == (PurePosixPath("/etc/issue"),)
    refused = plan_tree(cache, "squashfs", SLOT, now, lambda delta: "no way")
    assert refused.cache.reuse is Reuse.BUILD and "no way" in refused.cache.reason


def test_a_product_with_a_change_that_is_gone_is_never_updated(cache: ArtifactCache, tmp_path: Path) -> None:
    """A file created and removed again leaves no upper entry: the cached product still has it."""
    stored(cache, tmp_path, "squashfs", SLOT, fingerprints(change("/new-file")))
    decision = plan_tree(cache, "squashfs", SLOT, [], lambda delta: None)
    assert decision.cache.reuse is Reuse.BUILD
    assert "/new-file" in decision.cache.reason


def test_other_slots_are_never_used(cache: ArtifactCache, tmp_path: Path) -> None:
    stored(cache, tmp_path, "squashfs", slot_key("squashfs", "0" * 64, "small"), {})
    assert plan_tree(cache, "squashfs", SLOT, [], lambda d: None).cache.reuse is Reuse.BUILD


def test_many_changes_are_recorded_by_digest_only(cache: ArtifactCache, tmp_path: Path) -> None:
    many = [change(f"/srv/f{i}") for i in range(5000)]
    stored(cache, tmp_path, "cpio", SLOT, fingerprints(*many))
    assert plan_tree(cache, "cpio", SLOT, many, lambda d: None).cache.reuse is Reuse.CACHED
    more = [*many, change("/srv/extra")]
    assert plan_tree(cache, "cpio", SLOT, more, lambda d: None).cache.reuse is Reuse.BUILD


# -- bootstrap initrds ---------------------------------------------------------------------------
FILES = ["usr", "usr/bin/bash", "etc", "etc/os-release", "etc/motd.d/banner", "usr/lib/modules/6.1/kernel"]


def test_initrd_contents_answer_for_paths_and_the_trees_below_them() -> None:
    contents = InitrdContents(["./usr/bin/bash", "etc/os-release", "etc/a-b"])
    assert contents.holds(PurePosixPath("/usr/bin/bash"))
    assert contents.holds(PurePosixPath("/usr"))  # something below it
    assert contents.holds(PurePosixPath("/etc/os-release"))
    assert not contents.holds(PurePosixPath("/etc/a"))  # "a-b" is not below "a"
    assert not contents.holds(PurePosixPath("/home"))


@pytest.fixture
def distro(tmp_path: Path) -> Layer:
    """An image with a few files dracut could care about."""
    lower = tmp_path / "distro"
    for path in ("usr/bin/bash", "usr/bin/zstd", "usr/local/sbin/site-tool", "opt/app/run", "etc/motd"):
        (lower / path).parent.mkdir(parents=True, exist_ok=True)
        (lower / path).write_text("image\n")
    os.symlink("bash", lower / "usr/bin/sh")
    return Layer(PurePosixPath("/"), tmp_path / "distro-upper", (lower,))


def test_initrd_inputs_skip_only_what_dracut_cannot_read(distro: Layer) -> None:
    assert is_inert(PurePosixPath("/etc/motd")) and is_inert(PurePosixPath("/home/u/.bashrc"))
    assert not is_inert(PurePosixPath("/etc/motdx")) and not is_inert(PurePosixPath("/etc/dracut.conf"))
    changes = [
        change("/etc/motd"),  # inert, not in the initrd
        change("/etc/motd.d/banner"),  # inert, but the initrd holds it
        change("/home/u/notes"),  # inert
        change("/usr/local/sbin/site-tool"),  # a new version of a file dracut only copies (it does not)
        change("/opt/app/run"),  # the same
        change("/etc/dracut.conf.d/x.conf"),  # not in the initrd, but dracut reads it
        change("/usr/local/bin/new-tool"),  # a new binary: a module's check() may look for it
        change("/usr/bin/zstd"),  # the compressor dracut runs: not in the initrd, yet it matters
        change("/usr/bin/sh"),  # replaces a symlink: not a plain modification
        change("/opt/app/new", ChangeKind.DIRECTORY),  # a new directory
    ]
    conditional = conditional_paths(changes, [distro])
    inputs = initrd_inputs(fingerprints(*changes), InitrdContents(FILES), conditional)
    assert sorted(inputs) == [
        "/etc/dracut.conf.d/x.conf",
        "/etc/motd.d/banner",
        "/opt/app/new",
        "/usr/bin/sh",
        "/usr/bin/zstd",
        "/usr/local/bin/new-tool",
    ]


def test_an_initrd_is_reused_only_when_its_inputs_are_unchanged(
    cache: ArtifactCache, tmp_path: Path
) -> None:
    slot = slot_key("initrd", "0" * 64, ["dracut", "--kver", "6.1"])
    stored(cache, tmp_path, "initrd", slot, {}, files=FILES)
    assert plan_initrd(cache, slot, []).cache.reuse is Reuse.CACHED
    motd = plan_initrd(cache, slot, [change("/etc/motd")], frozenset({"/etc/motd"}))
    assert motd.cache.reuse is Reuse.CACHED and "does not read" in motd.cache.reason
    for path in (
        "/etc/dracut.conf.d/90-mine.conf",
        "/usr/lib/dracut/modules.d/99x/module-setup.sh",
        "/usr/lib/modules/6.1/kernel/drivers/x.ko",
        "/usr/lib/firmware/new.bin",
        "/etc/os-release",
        "/usr/bin/bash",
        "/etc/motd.d/banner",
    ):
        decision = plan_initrd(cache, slot, [change(path)], frozenset({"/etc/motd.d/banner"}))
        assert decision.cache.reuse is Reuse.BUILD, path
        assert path in decision.cache.reason
    deleted = plan_initrd(cache, slot, [change("/usr/bin/bash", ChangeKind.WHITEOUT, mode=0o20000)])
    assert deleted.cache.reuse is Reuse.BUILD


def test_an_initrd_without_its_file_list_is_never_reused(cache: ArtifactCache, tmp_path: Path) -> None:
    slot = slot_key("initrd", "0" * 64, [])
    stored(cache, tmp_path, "initrd", slot, {})
    assert plan_initrd(cache, slot, []).cache.reuse is Reuse.BUILD


# -- what an update may hold ---------------------------------------------------------------------
@pytest.fixture
def image(tmp_path: Path) -> Layer:
    """An image's root filesystem: a lower tree (what the image has) and an empty upper dir."""
    lower = tmp_path / "lower"
    (lower / "etc").mkdir(parents=True)
    (lower / "etc" / "motd").write_text("image\n")
    os.symlink("motd", lower / "etc" / "motd-link")
    (lower / "usr" / "lib").mkdir(parents=True)
    os.symlink("usr/lib", lower / "lib")
    (lower / "bin").mkdir()
    upper = tmp_path / "upper"
    upper.mkdir()
    return Layer(PurePosixPath("/"), upper, (lower,))


def test_lower_entries_are_looked_at_without_following_links(image: Layer) -> None:
    assert lower_entry([image], PurePosixPath("/etc/motd")).st is not None
    assert lower_entry([image], PurePosixPath("/etc/nothing")).st is None
    link = lower_entry([image], PurePosixPath("/etc/motd-link"))
    assert link.st is not None and stat.S_ISLNK(link.st.st_mode)
    assert not lower_entry([image], PurePosixPath("/lib/x")).plain  # /lib is a symlink


def test_copied_up_directories_are_not_changes(image: Layer) -> None:
    (image.upper / "etc").mkdir()
    os.chmod(image.upper / "etc", stat.S_IMODE(os.stat(image.lowers[0] / "etc").st_mode))
    (image.upper / "etc" / "motd").write_text("mine\n")
    (image.upper / "new").mkdir(mode=0o700)
    os.chmod(image.upper, stat.S_IMODE(os.stat(image.lowers[0]).st_mode))
    found = effective_changes([image], scan_changes([(image.mountpoint, image.upper)]))
    assert [str(c.path) for c in found] == ["/etc/motd", "/new"]
    os.chmod(image.upper / "etc", 0o700)
    found = effective_changes([image], scan_changes([(image.mountpoint, image.upper)]))
    assert "/etc" in [str(c.path) for c in found]


def test_bootstrap_updates_take_plain_files_and_new_directories(image: Layer) -> None:
    ok = [
        change("/etc/motd", data="new"),
        change("/opt", ChangeKind.DIRECTORY),
        change("/opt/tool", data="bin", mode=0o100755),
    ]
    assert updates.update_refusal(ok, [image]) is None
    refused = {
        "symlink": [change("/etc/x", ChangeKind.SYMLINK)],
        "whiteout": [change("/etc/motd", ChangeKind.WHITEOUT, mode=0o20000)],
        "not owned by root": [change("/etc/motd", uid=1000)],
        "extended attributes": [change("/etc/motd", xattrs=(("user.x", b"1"),))],
        "hard link": [change("/etc/motd", nlink=2)],
        "not a regular file": [change("/etc/motd-link")],  # cp would write through the link
        "below a symlink": [change("/lib/new.so")],
        "mode 0700": [change("/opt", ChangeKind.DIRECTORY, mode=0o40700), change("/opt/f")],
        "no changed file below": [change("/opt", ChangeKind.DIRECTORY)],
        "owner, mode or xattrs changed": [change("/etc", ChangeKind.DIRECTORY, mode=0o40700)],
        "at most": [change(f"/srv/{i}") for i in range(updates.MAX_UPDATE_FILES + 1)],
        "MiB changed": [change("/srv/big", size=updates.MAX_UPDATE_BYTES + 1)],
    }
    for why, changes in refused.items():
        reason = updates.update_refusal(changes, [image])
        assert reason is not None and why in reason, (why, reason)


def test_full_os_updates_take_files_directories_and_symlinks(image: Layer) -> None:
    ok = [change("/etc/motd", data="new"), change("/etc/motd-link", ChangeKind.SYMLINK, data="other")]
    assert fullos.update_refusal([*ok, change("/etc", ChangeKind.DIRECTORY, mode=0o40700)], [image]) is None
    assert fullos.update_refusal([change("/etc/motd", uid=1000)], [image]) is None  # a CPIO has owners
    refused = {
        "whiteout": [change("/etc/motd", ChangeKind.WHITEOUT, mode=0o20000)],
        "changed its type": [change("/etc/motd", ChangeKind.SYMLINK)],
        "hard link": [change("/etc/motd", nlink=2)],
        "made by the full-os build": [change("/init", ChangeKind.SYMLINK)],
        "below a symlink": [change("/lib/x.so")],
    }
    for why, changes in refused.items():
        reason = fullos.update_refusal(changes, [image])
        assert reason is not None and why in reason, (why, reason)


def test_excluded_paths_follow_the_globs() -> None:
    assert is_excluded(PurePosixPath("/boot/vmlinuz"), ROOT_IMAGE_EXCLUDED)
    assert is_excluded(PurePosixPath("/tmp/a/b"), ROOT_IMAGE_EXCLUDED)
    assert is_excluded(PurePosixPath("/etc/fstab"), ROOT_IMAGE_EXCLUDED)
    assert not is_excluded(PurePosixPath("/boot"), ROOT_IMAGE_EXCLUDED)
    assert not is_excluded(PurePosixPath("/etc/fstab.d"), ROOT_IMAGE_EXCLUDED)


# -- the full-os update segment ------------------------------------------------------------------
def test_an_update_segment_replaces_what_it_names(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc" / "motd").write_text("old\n")
    (tree / "etc" / "keep").write_text("keep\n")
    os.symlink("motd", tree / "etc" / "link")
    archive = tmp_path / "initrd.img"
    write_newc(tree, archive, compression=Compression.ZSTD, level=3, extra=[CpioEntry.directory("dev")])
    (tree / "etc" / "motd").write_text("new and longer\n")
    (tree / "etc" / "link").unlink()
    os.symlink("keep", tree / "etc" / "link")
    (tree / "opt").mkdir(mode=0o700)
    (tree / "opt" / "tool").write_bytes(b"\x7fELF" * 1000)
    fullos_stats = None
    with open(archive, "r+b") as f:
        f.seek(0, os.SEEK_END)
        fullos_stats = write_newc_paths(
            tree, f, ["etc", "etc/motd", "etc/link", "opt", "opt/tool"], compression=Compression.ZSTD
        )
    assert fullos_stats.entries == 5
    names = [m.name for m in iter_entries(archive)]
    assert names.count("etc/motd") == 2 and names.count("etc/keep") == 1
    out = tmp_path / "out"
    out.mkdir()
    extract(archive, out)
    assert (out / "etc" / "motd").read_text() == "new and longer\n"
    assert os.readlink(out / "etc" / "link") == "keep"
    assert (out / "opt" / "tool").read_bytes() == b"\x7fELF" * 1000
    assert stat.S_IMODE(os.stat(out / "opt").st_mode) == 0o700
    assert (out / "dev").is_dir() and (out / "etc" / "keep").read_text() == "keep\n"


def test_an_update_segment_never_follows_a_link(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret").write_text("host\n")
    os.symlink(tmp_path / "outside", tree / "etc")
    with pytest.raises(ImageError, match="without following a link"):
        write_newc_paths(tree, io.BytesIO(), ["etc/secret"], compression=Compression.NONE)


# -- the image's content digest ------------------------------------------------------------------
def test_the_image_digest_reads_data_not_holes(tmp_path: Path, cache: ArtifactCache) -> None:
    sparse = tmp_path / "disk.raw"
    with open(sparse, "wb") as f:
        f.truncate(64 << 20)
        f.seek(1 << 20)
        f.write(b"data" * 1000)
    first = identity.sparse_sha256(sparse)
    assert identity.sparse_sha256(sparse) == first
    with open(sparse, "r+b") as f:
        f.seek(1 << 20)
        f.write(b"DATA")
    assert identity.sparse_sha256(sparse) != first
    # remembered by the file's identity, in the process and in the cache
    digest = identity.image_digest(sparse, cache)
    identity._memo.clear()
    assert identity.image_digest(sparse, cache) == digest
    assert cache.get(identity.IDENTITY_KIND, identity.file_identity(sparse)) is not None
    with open(sparse, "r+b") as f:
        f.write(b"changed")
    assert identity.image_digest(sparse, cache) != digest
