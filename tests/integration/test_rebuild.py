"""Rebuilds reuse what did not change -- and only that: the real fixture image, real dracut,
mksquashfs and CPIO, a cache of the module's own.

Booting a reused initrd with ``/updates`` (bootstrap) and a CPIO with an update segment
(full-os) is proven by the boot tests of test_live_iso.py and test_full_os.py, whose azl ISOs
are such rebuilds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from liveos.cache import ArtifactCache
from liveos.errors import UsageError
from liveos.grub import GrubConfig
from liveos.image.isofs import IsoReader
from liveos.live import LiveOS
from liveos.plan import BuildPlan, Reuse
from tests.conftest import FixtureImageFactory
from tests.fixtures.builder import FixtureImage
from tests.imagekit import stamp_marker

pytestmark = [pytest.mark.root]

REPO = Path(__file__).resolve().parents[2]
LABEL = "LIVEOS_REUSE"


@dataclass(frozen=True)
class Cold:
    """The first build of the image, with an empty cache of the module's own."""

    image: FixtureImage
    cache: Path
    out: Path
    initrd: str  #: the product id of the kernel's initrd


@pytest.fixture(scope="module")
def cold(fixture_image: FixtureImageFactory, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cold]:
    image = fixture_image("azl", "qcow2")
    cache, out = tmp_path_factory.mktemp("cache"), tmp_path_factory.mktemp("out")
    saved = os.environ["LIVEOS_CACHE_DIR"]
    os.environ["LIVEOS_CACHE_DIR"] = str(cache)
    try:
        initrd = f"initrd-{image.kernel_version}"
        with LiveOS.open(image.path) as live:
            result = live.with_label(LABEL).write_iso(out / "cold.iso")
            assert not any(s.cached for s in result.steps), result.describe()
            assert live.image.changes() == (), "a build changed the tree"
        yield Cold(image, cache, out, initrd)
    finally:
        os.environ["LIVEOS_CACHE_DIR"] = saved


@pytest.fixture
def reopened(cold: Cold, monkeypatch: pytest.MonkeyPatch) -> Iterator[LiveOS]:
    """A new session on the image (nothing changed yet), using the cold build's cache."""
    monkeypatch.setenv("LIVEOS_CACHE_DIR", str(cold.cache))
    with LiveOS.open(cold.image.path) as live:
        yield live.with_label(LABEL)


def reuse_of(plan: BuildPlan, product: str) -> Reuse:
    cache = plan.step(product).cache
    assert cache is not None, f"{product} does not use the cache"
    return cache.reuse


def test_unchanged_image_reuses_everything(reopened: LiveOS, cold: Cold) -> None:
    plan = reopened.with_kernel_args("quiet").plan()
    assert reuse_of(plan, cold.initrd) is Reuse.CACHED and reuse_of(plan, "rootfs.img") is Reuse.CACHED
    assert not plan.file("/liveos/rootfs.img").estimated  # the cached product's exact size
    result = reopened.build(plan, cold.out / "args.iso")
    assert {s.product for s in result.steps if s.cached} == {cold.initrd, "rootfs.img"}
    with IsoReader(result.output) as iso:
        config = iso.read_bytes("/boot/grub2/grub.cfg").decode()
    assert all("quiet" in args for args in GrubConfig.parse(config).kernel_args())


def test_a_small_change_goes_to_updates(reopened: LiveOS, cold: Cold, tmp_path: Path) -> None:
    reopened.rootfs.write_text("/etc/motd", "rebuilt\n")
    reopened.rootfs.write_text("/srv/site/tool", "#!/bin/sh\n", mode=0o755)
    plan = reopened.plan()
    assert reuse_of(plan, cold.initrd) is Reuse.CACHED
    assert reuse_of(plan, "rootfs.img") is Reuse.UPDATED
    updates = sorted(str(f.path) for f in plan.files if str(f.path).startswith("/updates/"))
    assert updates == ["/updates/etc/motd", "/updates/srv/site/tool"]
    iso = reopened.build(plan, tmp_path / "updated.iso").output
    with IsoReader(iso) as reader:
        assert reader.read_bytes("/updates/etc/motd") == b"rebuilt\n"
        assert reader.entry("/updates/srv/site/tool").mode & 0o777 == 0o755
    with LiveOS.open(iso) as again:  # a re-opened ISO shows its updates in the tree
        assert again.rootfs.read_text("/etc/motd") == "rebuilt\n"
        assert again.rootfs.path("/srv/site/tool").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize(
    ("path", "content"),
    [
        ("/etc/dracut.conf.d/90-local.conf", 'add_drivers+=" e1000 "\n'),
        ("/etc/os-release", 'NAME="changed"\n'),  # a file the initrd holds
        ("/usr/local/bin/new-tool", "#!/bin/sh\n"),  # a binary a module's check() could find
        ("/etc/modprobe.d/local.conf", "options loop max_loop=16\n"),
    ],
)
def test_what_dracut_may_read_rebuilds_the_initrd(
    reopened: LiveOS, cold: Cold, path: str, content: str
) -> None:
    reopened.rootfs.write_text(path, content)
    plan = reopened.plan()
    step = plan.step(cold.initrd).cache
    assert step is not None and step.reuse is Reuse.BUILD and path in step.reason


def test_a_new_version_of_a_file_dracut_does_not_read_keeps_the_initrd(reopened: LiveOS, cold: Cold) -> None:
    stamp_marker(reopened.rootfs, "kept")  # /usr/local/sbin: dracut neither copies nor runs it
    plan = reopened.plan()
    assert reuse_of(plan, cold.initrd) is Reuse.CACHED
    assert reuse_of(plan, "rootfs.img") is Reuse.UPDATED
    reopened.rootfs.write_text("/usr/bin/zstd", "#!/bin/sh\n", mode=0o755)  # the compressor dracut runs
    assert reuse_of(reopened.plan(), cold.initrd) is Reuse.BUILD


def test_kernel_modules_and_deletions_rebuild(reopened: LiveOS, cold: Cold) -> None:
    modules = f"/lib/modules/{cold.image.kernel_version}"
    reopened.rootfs.write_text(f"{modules}/modules.alias", "# emptied\n")
    plan = reopened.plan()
    assert reuse_of(plan, cold.initrd) is Reuse.BUILD
    assert reuse_of(plan, "rootfs.img") is Reuse.UPDATED
    reopened.rootfs.remove("/etc/hostname")  # a deletion cannot be an update
    plan = reopened.plan()
    step = plan.step("rootfs.img").cache
    assert step is not None and step.reuse is Reuse.BUILD and "/etc/hostname" in step.reason


def test_a_fresh_process_finds_the_cache(cold: Cold) -> None:
    env = {**os.environ, "LIVEOS_CACHE_DIR": str(cold.cache), "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "liveos", "plan", str(cold.image.path), "--label", LABEL, "--json"]
    plan = json.loads(subprocess.run(argv, env=env, capture_output=True, check=True).stdout)
    reuse = {s["product"]: (s["cache"] or {}).get("reuse") for s in plan["steps"]}
    assert reuse[cold.initrd] == "cached" and reuse["rootfs.img"] == "cached"
    off = subprocess.run([*argv, "--no-cache"], env=env, capture_output=True, check=True).stdout
    assert all(s["cache"] is None for s in json.loads(off)["steps"])


def test_a_tree_changed_after_the_plan_is_refused(reopened: LiveOS, cold: Cold) -> None:
    plan = reopened.plan()
    reopened.rootfs.write_text("/etc/motd", "too late\n")
    with pytest.raises(UsageError, match="changed after the plan"):
        reopened.build(plan, cold.out / "never.iso")
    assert not (cold.out / "never.iso").exists()


def test_full_os_appends_an_update_and_survives_eviction(
    reopened: LiveOS, cold: Cold, tmp_path: Path
) -> None:
    media = reopened.full_os()
    first = media.write_iso(tmp_path / "first.iso")
    assert not first.step("initrd.img").cached
    reopened.rootfs.write_text("/etc/motd", "full-os update\n")
    second = media.write_iso(tmp_path / "second.iso")
    assert second.step("initrd.img").cached
    grown, size = second.step("initrd.img").size, first.step("initrd.img").size
    assert grown is not None and size is not None and grown > size  # the appended segment
    with LiveOS.open(second.output) as again:  # the kernel's unpacking order: the update wins
        assert again.rootfs.read_text("/etc/motd") == "full-os update\n"
    reopened.rootfs.write_text("/etc/issue", "evicted\n")
    plan = media.plan()
    assert reuse_of(plan, "initrd.img") is Reuse.UPDATED
    ArtifactCache.default().clear()  # another process evicts it between plan and build
    third = media.build(plan, tmp_path / "third.iso")
    assert not third.step("initrd.img").cached  # built after all, from the whole tree
    with LiveOS.open(third.output) as again:
        assert again.rootfs.read_text("/etc/issue") == "evicted\n"
        assert again.rootfs.read_text("/etc/motd") == "full-os update\n"


def test_cache_off_builds_everything(reopened: LiveOS) -> None:
    plan = reopened.with_cache(False).plan()
    assert all(step.cache is None for step in plan.steps)
