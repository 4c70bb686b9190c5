"""Reusing build products: which cached initrd, root image or full-os CPIO a build can take.

Every product is stored in the :class:`~liveos.cache.ArtifactCache` under a key of two parts,
``<slot>-<variant>``:

* the *slot* hashes everything but the tree changes: liveos' cache format, the content digest
  of the input image (:mod:`liveos.image.identity`), the step's tool and options (dracut's whole
  command line; mksquashfs' version and compression; the CPIO's compressor, level and init);
* the *variant* hashes the caller's changes to the tree the product depends on (image path and
  fingerprint of each, :mod:`liveos.image.layers`): all of them for a root image or CPIO
  (minus the paths they leave out), for an initrd only those dracut could read
  (:mod:`liveos.initramfs.inputs`, decided against the paths the built initrd holds).

A product is reused *as it is* when its slot matches and its recorded changes equal the
current ones. A root image or CPIO built from an earlier state of the tree is reused *with an
update* when every change it recorded is still there and what changed since is small and
expressible on top of it (:data:`DeltaRule`: the ``/updates`` dracut applies at boot, or a CPIO
segment the kernel unpacks last); anything else is built again. The metadata stored with each
product records its changes, its compressor and the tool that made it.

With ``SOURCE_DATE_EPOCH`` set, the epoch is part of every slot (it is in the products' bytes)
and products are reused only as they are, never with an update: a reproducible build gives the
same bytes whatever the cache holds.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from liveos._version import __version__
from liveos.cache import ArtifactCache, CachedArtifact, cache_key
from liveos.image.changes import Change
from liveos.initramfs.inputs import InitrdContents, initrd_inputs
from liveos.plan import Reuse, StepCache
from liveos.reproducible import source_date_epoch

log = logging.getLogger("liveos")

#: Bumped when what a key covers changes: older entries are then never matched.
CACHE_FORMAT = "liveos-cache-1"
#: How many cached variants of a slot are considered for an update (most recently used first).
MAX_CANDIDATES = 8
#: Above this many recorded changes an entry stores only their digest (reusable as it is only).
MAX_RECORDED_CHANGES = 4096

#: Decides whether ``delta`` (the changes since a cached product was built) can be layered on
#: top of it: None if it can, else why not.
DeltaRule = Callable[[Sequence[Change]], "str | None"]

Inputs = Mapping[str, str]  #: image path -> fingerprint of the change there


def slot_key(kind: str, image_digest: str, *parts: object) -> str:
    """The slot of a product of ``kind`` built from the image with ``image_digest`` by ``parts``
    (and ``SOURCE_DATE_EPOCH`` when set)."""
    epoch = source_date_epoch()
    reproducible = () if epoch is None else (f"SOURCE_DATE_EPOCH={epoch}",)
    return cache_key(CACHE_FORMAT, __version__, kind, image_digest, *parts, *reproducible)


def inputs_digest(inputs: Inputs) -> str:
    """The variant part of a key: a digest of the (path, fingerprint) pairs."""
    h = hashlib.sha256(b"liveos-inputs-1\n")
    for path in sorted(inputs):
        h.update(f"{path}\0{inputs[path]}\n".encode("utf-8", "surrogateescape"))
    return h.hexdigest()


def entry_key(slot: str, inputs: Inputs) -> str:
    """The cache key of a product of ``slot`` that recorded ``inputs``."""
    return f"{slot}-{inputs_digest(inputs)}"


def recorded_meta(inputs: Inputs, **extra: object) -> dict[str, Any]:
    """The metadata stored with a product: its changes (or only their digest when many)."""
    changes = dict(inputs) if len(inputs) <= MAX_RECORDED_CHANGES else None
    return {"digest": inputs_digest(inputs), "changes": changes, **extra}


def _recorded(entry: CachedArtifact) -> dict[str, str] | None:
    changes = entry.meta.get("changes")
    if not isinstance(changes, dict) or not all(isinstance(v, str) for v in changes.values()):
        return None
    return {str(k): v for k, v in changes.items()}


def _first_difference(now: Inputs, then: Inputs) -> str:
    for path in sorted(now.keys() | then.keys()):
        if now.get(path) != then.get(path):
            return path
    return "?"


def tree_digest(changes: Sequence[Change]) -> str:
    """A digest of all of the caller's changes (what a plan records, and a build checks)."""
    return inputs_digest({str(c.path): c.fingerprint for c in changes})


# -- deciding ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Decision:
    """How a step gets its product, with the cached product and the changes layered on top."""

    cache: StepCache
    base: CachedArtifact | None = None  #: CACHED/UPDATED: the cached product used
    delta: tuple[Change, ...] = ()  #: UPDATED: what to layer on top of it


def plan_initrd(
    cache: ArtifactCache, slot: str, changes: Sequence[Change], conditional: frozenset[str] = frozenset()
) -> Decision:
    """Reuse a cached bootstrap initrd of ``slot`` if none of its inputs changed (``conditional``
    changes count only where the initrd holds their path)."""
    everything = {str(c.path): c.fingerprint for c in changes}
    inputs = tuple(sorted(everything.items()))
    closest = ""
    for entry in cache.candidates("initrd", slot + "-")[:MAX_CANDIDATES]:
        files = entry.meta.get("files")
        then = _recorded(entry)
        if not isinstance(files, list) or then is None:
            continue
        now = initrd_inputs(everything, InitrdContents(str(f) for f in files), conditional)
        if now == then:
            reason = "nothing the initrd depends on changed since it was built"
            if everything:
                reason += f" ({len(everything) - len(now)} change(s) it does not read)"
            step = StepCache("initrd", slot, Reuse.CACHED, reason, entry=entry.key, inputs=inputs,
                             conditional=conditional)  # fmt: skip
            return Decision(step, entry)
        closest = closest or _first_difference(now, then)
    reason = f"{closest} changed: dracut runs again" if closest else "no initrd of this kernel is cached"
    return Decision(StepCache("initrd", slot, Reuse.BUILD, reason, inputs=inputs, conditional=conditional))


def plan_tree(
    cache: ArtifactCache,
    kind: str,
    slot: str,
    changes: Sequence[Change],
    rule: DeltaRule | None,
) -> Decision:
    """Reuse a cached product of ``slot`` built from this tree, or from an earlier state of it
    plus an update ``rule`` accepts (the smallest such update wins); else build."""
    now = {str(c.path): c.fingerprint for c in changes}
    inputs = tuple(sorted(now.items()))
    exact = cache.get(kind, entry_key(slot, now))
    if exact is not None:
        reason = "built from the same tree" + (f" ({len(now)} change(s))" if now else "")
        return Decision(
            StepCache(kind, slot, Reuse.CACHED, reason, entry=exact.key, inputs=inputs), exact, ()
        )
    best: tuple[int, CachedArtifact, tuple[Change, ...]] | None = None
    refusal = ""
    if rule is not None and source_date_epoch() is not None:
        rule, refusal = None, "SOURCE_DATE_EPOCH is set: only an identical product is reused"
    for entry in cache.candidates(kind, slot + "-")[:MAX_CANDIDATES] if rule is not None else []:
        then = _recorded(entry)
        if then is None:
            continue
        gone = [path for path in then if path not in now]
        if gone:
            refusal = refusal or f"{gone[0]} was changed when it was built and is not now"
            continue
        delta = tuple(c for c in changes if then.get(str(c.path)) != c.fingerprint)
        why = rule(delta) if rule is not None else "no updates"
        if why is not None:
            refusal = refusal or why
            continue
        size = sum(c.size for c in delta)
        if best is None or size < best[0]:
            best = (size, entry, delta)
    if best is not None:
        _, entry, delta = best
        reason = f"{len(delta)} changed path(s) ({best[0]} bytes) go on top of the cached one"
        step = StepCache(
            kind,
            slot,
            Reuse.UPDATED,
            reason,
            entry=entry.key,
            inputs=inputs,
            delta=tuple(c.path for c in delta),
        )
        return Decision(step, entry, delta)
    reason = f"rebuilt: {refusal}" if refusal else f"no {kind} of this image and settings is cached"
    return Decision(StepCache(kind, slot, Reuse.BUILD, reason, inputs=inputs), None, ())


# -- using and storing ---------------------------------------------------------------------------
def fetch(
    cache: ArtifactCache, step: StepCache, dest: Path, *, private: bool = False
) -> CachedArtifact | None:
    """The cached product of ``step`` at ``dest`` (a hard link when possible; a copy of our own
    with ``private=True``, to append to); None if it vanished since the plan (evicted)."""
    if step.entry is None:
        return None
    found = cache.retrieve(step.kind, step.entry, dest, link=not private)
    if found is None:
        log.warning("the cached %s %s is gone (evicted?): building it instead", step.kind, step.entry[:16])
    return found


def store(cache: ArtifactCache, step: StepCache, product: Path, inputs: Inputs, **meta: object) -> None:
    """Keep a built product for later builds (hard-linked when the cache shares its filesystem)."""
    if cache.put(step.kind, entry_key(step.slot, inputs), product, recorded_meta(inputs, **meta), link=True):
        log.info("stored %s %s in the cache %s", step.kind, product.name, cache.root)


def store_initrd(
    cache: ArtifactCache, step: StepCache, product: Path, files: Sequence[str], **meta: object
) -> None:
    """Keep a built initrd with the paths it holds (which decide what its inputs are)."""
    inputs = initrd_inputs(dict(step.inputs), InitrdContents(files), step.conditional)
    store(cache, step, product, inputs, files=sorted(set(files)), **meta)


def describe_meta(entry: CachedArtifact) -> str:
    """One line about a cached product (for logs)."""
    return json.dumps({k: v for k, v in entry.meta.items() if k not in ("changes", "files")})
