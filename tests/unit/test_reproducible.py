"""``SOURCE_DATE_EPOCH`` and the cache: products are keyed by the epoch and reused only as they
are, so a reproducible build gives the same bytes whatever the cache holds (the end-to-end check
is tests/integration/test_reproducible.py)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from liveos.cache import ArtifactCache
from liveos.image.changes import Change, ChangeKind
from liveos.media.reuse import entry_key, plan_tree, recorded_meta, slot_key
from liveos.plan import Reuse


def change(path: str, data: str) -> Change:
    return Change(PurePosixPath(path), ChangeKind.FILE, 0o100644, 0, 0, len(data), 1, data)


def test_the_epoch_is_part_of_every_slot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    plain = slot_key("squashfs", "0" * 64, "fast")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = slot_key("squashfs", "0" * 64, "fast")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000001")
    assert len({plain, first, slot_key("squashfs", "0" * 64, "fast")}) == 3


@pytest.mark.parametrize("epoch", [None, "1700000000"])
def test_with_an_epoch_a_cached_product_is_reused_only_as_it_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, epoch: str | None
) -> None:
    if epoch is None:
        monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    else:
        monkeypatch.setenv("SOURCE_DATE_EPOCH", epoch)
    cache = ArtifactCache(tmp_path / "cache", 1 << 30)
    slot = slot_key("squashfs", "0" * 64, "fast")
    product = tmp_path / "product"
    product.write_bytes(b"squashfs")
    motd = change("/etc/motd", "one")
    inputs = {str(motd.path): motd.fingerprint}
    assert cache.put("squashfs", entry_key(slot, inputs), product, recorded_meta(inputs)) is not None

    same = plan_tree(cache, "squashfs", slot, [motd], lambda delta: None)
    assert same.cache.reuse is Reuse.CACHED
    later = plan_tree(cache, "squashfs", slot, [motd, change("/etc/issue", "new")], lambda delta: None)
    if epoch is None:
        assert later.cache.reuse is Reuse.UPDATED  # the fast path stays without the epoch
    else:
        assert later.cache.reuse is Reuse.BUILD and later.base is None
        assert "SOURCE_DATE_EPOCH" in later.cache.reason
