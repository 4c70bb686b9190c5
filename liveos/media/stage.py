"""Staging: execute a plan's OS build steps and resolve its files to what the writers copy.

The steps that read the OS tree run here (dracut per kernel, mksquashfs, the full-os CPIO);
the outputs run their own (the El Torito image, the ISO, the PXE tree). Every product lands in
the build's scratch directory; :func:`resolve` maps each planned file to a host file or bytes.
Every step is timed and reported (:func:`timed_step`): its tools report their progress to the
step running in their thread (:func:`liveos.progress.current`).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed, wait
from pathlib import Path, PurePosixPath

from liveos.cache import ArtifactCache
from liveos.cpio import iter_entries
from liveos.erofs import MKFS_EROFS_COMPRESSION, make_erofs
from liveos.errors import InternalError, LiveOSError
from liveos.initramfs import Initramfs
from liveos.initramfs.fullos import append_update
from liveos.layout import FULL_OS_EXCLUDED, ROOT_IMAGE_EXCLUDED
from liveos.media.kdump import root_excludes
from liveos.media.reuse import fetch, store, store_initrd
from liveos.plan import BuildPlan, Origin, PlannedFile, PlannedStep, Reuse, StepCache, StepKind
from liveos.progress import Progress, Unit, current
from liveos.result import StepClock, StepRecord
from liveos.rootfs import RootFs
from liveos.run import kill_running, which
from liveos.squashfs import MKSQUASHFS_COMPRESSION, make_squashfs

log = logging.getLogger("liveos")

#: Host tools each step needs (checked before minutes of work, not after).
STEP_TOOLS = {
    StepKind.SQUASHFS: ("mksquashfs",),
    StepKind.EROFS: ("mkfs.erofs",),
    StepKind.EFIBOOT: ("mkfs.vfat", "mcopy", "mmd"),
    StepKind.BIOSBOOT: ("grub-mkimage",),
}

#: Product id -> the file the step wrote.
Products = dict[str, Path]


def check_tools(plan: BuildPlan) -> None:
    """Fail in a second when a host tool of a later step is missing."""
    for step in plan.steps:
        for tool in STEP_TOOLS.get(step.kind, ()):
            which(tool)


@contextlib.contextmanager
def timed_step(clock: StepClock, progress: Progress, kind: StepKind, product: str) -> Iterator[StepRecord]:
    """Time one step (``clock``) and report it (``progress``: STARTED, then FINISHED -- ``reused``
    when the step marked its record ``cached`` -- or FAILED)."""
    with clock.step(kind, product) as record, progress.step(kind, product) as reporter:
        yield record
        reporter.reused = record.cached


#: The steps that read the OS tree; they do not depend on each other and run side by side.
OS_STEPS = (StepKind.DRACUT, StepKind.SQUASHFS, StepKind.EROFS, StepKind.CPIO)


def build_os_products(
    plan: BuildPlan,
    rootfs: RootFs,
    scratch: Path,
    clock: StepClock,
    cache: ArtifactCache | None = None,
    progress: Progress | None = None,
) -> Products:
    """Run the plan's dracut, squashfs and CPIO steps -- concurrently: the initrd and the root image
    do not depend on each other, so their wall times overlap on a multi-core machine. If one
    fails (or the build is interrupted), the tools of the others are killed at once and the
    first error propagates. A step the plan serves from ``cache`` takes its product from there
    (building it after all if it was evicted meanwhile); a built product is stored there.
    Each step reports to ``progress`` (from its own thread). Returns where each product was written."""
    progress = progress or Progress()
    steps = [step for step in plan.steps if step.kind in OS_STEPS]
    if len(steps) <= 1:
        return {step.product: _build(step, plan, rootfs, scratch, clock, cache, progress) for step in steps}
    with ThreadPoolExecutor(max_workers=len(steps), thread_name_prefix="liveos-step") as pool:
        futures = {
            pool.submit(_build, step, plan, rootfs, scratch, clock, cache, progress): step for step in steps
        }
        try:
            for future in as_completed(futures):
                future.result()
        except BaseException:
            kill_running()
            for future in futures:
                future.cancel()
            wait(futures)
            raise
    return {futures[future].product: future.result() for future in futures}


def _build(
    step: PlannedStep,
    plan: BuildPlan,
    rootfs: RootFs,
    scratch: Path,
    clock: StepClock,
    cache: ArtifactCache | None,
    progress: Progress,
) -> Path:
    """Produce one OS step's product at ``scratch / step.product``, timed by ``clock``."""
    out = scratch / step.product
    with timed_step(clock, progress, step.kind, step.product) as record:
        if _reuse(step, rootfs, out, record, cache, plan):
            return out
        _run(step, plan, rootfs, out, record)
        if cache is not None and step.cache is not None:
            _store(cache, step.cache, step, out, record)
    return out


def _run(step: PlannedStep, plan: BuildPlan, rootfs: RootFs, out: Path, record: StepRecord) -> None:
    """Build one OS step's product from the tree."""
    settings = plan.settings
    if step.kind is StepKind.DRACUT:
        if step.kernel is None:
            raise InternalError(f"dracut step {step.product} names no kernel")
        _record(record, Initramfs.bootstrap(rootfs, step.kernel, out, preset=settings.preset))
    elif step.kind is StepKind.SQUASHFS:
        excludes = root_excludes(rootfs, settings.kdump_boot_files, ROOT_IMAGE_EXCLUDED)
        make_squashfs(rootfs.root, out, preset=settings.preset, excludes=excludes)
        record.size, record.tool = out.stat().st_size, f"mksquashfs ({settings.preset} preset)"
        record.compression, record.level = MKSQUASHFS_COMPRESSION[settings.preset]
    elif step.kind is StepKind.EROFS:
        excludes = root_excludes(rootfs, settings.kdump_boot_files, ROOT_IMAGE_EXCLUDED)
        make_erofs(rootfs.root, out, preset=settings.preset, excludes=excludes)
        record.size, record.tool = out.stat().st_size, f"mkfs.erofs ({settings.preset} preset)"
        record.compression, record.level = MKFS_EROFS_COMPRESSION[settings.preset]
    elif step.kind is StepKind.CPIO:
        compression, level = settings.cpio_compression, settings.level
        current().expect(planned_size(plan, step.product), Unit.BYTES)  # the writer counts its output
        exclude = root_excludes(rootfs, settings.kdump_boot_files, FULL_OS_EXCLUDED)
        _record(
            record,
            Initramfs.full_os(rootfs, out, compression=compression, level=level, exclude=exclude),
        )
    else:
        raise InternalError(f"{step.kind} is not an OS step")


def _reuse(
    step: PlannedStep,
    rootfs: RootFs,
    out: Path,
    record: StepRecord,
    cache: ArtifactCache | None,
    plan: BuildPlan,
) -> bool:
    """Take the product from the cache (plus the full-os update segment) if the plan says so;
    False if it does not, or the cached product is gone."""
    using = step.cache
    if cache is None or using is None or not step.reused:
        return False
    update = step.kind is StepKind.CPIO and using.reuse is Reuse.UPDATED
    found = fetch(cache, using, out, private=update)
    if found is None:
        return False
    record.cached = True
    record.tool = str(found.meta.get("tool") or "")
    level = found.meta.get("level")
    record.compression = str(found.meta.get("compression") or "") or None
    record.level = level if isinstance(level, int) else None
    if update:
        settings = plan.settings
        append_update(rootfs, out, using.delta, compression=settings.cpio_compression, level=settings.level)
        record.tool += f" + update of {len(using.delta)} path(s)"
    record.size = out.stat().st_size
    return True


def planned_size(plan: BuildPlan, product: str) -> int | None:
    """The (estimated) bytes of ``product`` on the media, or None if the plan has no size for it."""
    sizes = [f.size for f in plan.files if f.origin is Origin.BUILT and f.source == product]
    return sizes[0] if sizes and sizes[0] is not None else None


def _store(cache: ArtifactCache, using: StepCache, step: PlannedStep, out: Path, record: StepRecord) -> None:
    meta = {"tool": record.tool, "compression": record.compression, "level": record.level}
    if step.kind is StepKind.DRACUT:
        try:  # the paths it holds decide what it depends on; an initrd liveos cannot read is not kept
            files = [m.name for m in iter_entries(out)]
        except LiveOSError as exc:
            log.warning("not caching %s: cannot list what it holds: %s", step.product, exc.message)
            return
        store_initrd(cache, using, out, files, **meta)
    else:
        store(cache, using, out, dict(using.inputs), **meta)


def _record(record: StepRecord, initrd: Initramfs) -> None:
    record.size, record.compression, record.level = initrd.size, initrd.compression, initrd.level
    record.tool = initrd.builder


def content(planned: PlannedFile, products: Products) -> Path | bytes:
    """What to copy for one planned file: a host file or generated bytes."""
    if planned.origin is Origin.BUILT:
        if planned.source not in products:
            raise InternalError(f"{planned.path}: product {planned.source} was not built")
        return products[planned.source]
    if planned.data is not None:
        return planned.data
    if planned.host is None:
        raise InternalError(f"{planned.path} has neither content nor a source file")
    return planned.host


def resolve(files: tuple[PlannedFile, ...], products: Products) -> list[tuple[PurePosixPath, Path | bytes]]:
    """Every planned file with its content, sorted by media path."""
    return sorted(((f.path, content(f, products)) for f in files), key=lambda item: item[0].parts)
