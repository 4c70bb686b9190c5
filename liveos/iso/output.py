"""The ISO output: a build plan becomes one hybrid ISO file that boots from a CD and from USB.

:func:`plan_iso` adds to the shared media plan what only an ISO holds: the removable-media boot
chain in ``EFI/BOOT`` (shim, grub, MokManager, a redirector grub.cfg), ``/.disk/info``, a
redirector at ``/boot/grub/grub.cfg`` when the main config lives elsewhere, and the El Torito
FAT image holding ``EFI/BOOT``. :func:`write_iso_file` runs the ISO's own steps, :func:`build_iso`
a whole build into an output file.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path, PurePosixPath

from liveos.atomic import check_output_file, scratch_dir
from liveos.bootfiles import BootFiles
from liveos.cache import ArtifactCache
from liveos.image.base import SourceImage
from liveos.image.changes import Change
from liveos.iso.biosboot import (
    BIOS_PRODUCT,
    BiosGrub,
    GrubSource,
    bios_files,
    bios_grub_cfg,
    build_bios_image,
    find_bios_grub,
)
from liveos.iso.efiboot import build_efiboot, planned_size
from liveos.iso.writer import IsoWriter, WrittenIso
from liveos.layout import DISK_INFO_PATH, EFI_BOOT_DIR, EFIBOOT_PATH, SQUASHFS_PATH
from liveos.media.grubedit import grub_redirector
from liveos.media.persistence import FS_LABEL, Persistence
from liveos.media.plan import MediaPlan, plan_media, plan_media_files
from liveos.media.stage import Products, build_os_products, check_tools, content, resolve, timed_step
from liveos.plan import BuildPlan, Origin, PlannedFile, PlannedStep, StepKind
from liveos.progress import Progress, ProgressCallback
from liveos.result import BuildResult, StepClock
from liveos.rootfs import RootFs
from liveos.run import which
from liveos.settings import Arch, InitramfsMode, LiveSettings, OutputKind

log = logging.getLogger("liveos")

EFIBOOT_PRODUCT = "efiboot.img"
ISO_PRODUCT = "iso"
#: ISO 9660 + Rock Ridge + Joliet metadata and alignment, for the size estimate of a whole ISO.
ISO_OVERHEAD = 2 * 1024 * 1024


def plan_iso(
    image: SourceImage,
    settings: LiveSettings,
    label: str,
    *,
    cache: ArtifactCache | None = None,
    changes: tuple[Change, ...] | None = None,
) -> BuildPlan:
    """The plan of a live ISO of ``image`` (nothing is built); with a ``cache``, steps reuse
    cached products where they can (see :func:`~liveos.media.plan.plan_media`)."""
    media = plan_media(image, settings, label=label, network=None, cache=cache, changes=changes)
    files = [*media.files, *_boot_chain(media.boot, image.root, label)]
    efi = {str(f.path.relative_to("/")): f.size or 0 for f in files if f.path.parent == EFI_BOOT_DIR}
    files.append(PlannedFile(EFIBOOT_PATH, Origin.BUILT, EFIBOOT_PRODUCT, planned_size(efi)))
    bios = None
    if settings.bios and media.boot.arch is Arch.X64:
        bios = find_bios_grub(image.rootfs, media.boot.grub_dir)
        files = [_for_bios(f, media.boot) for f in files if f.path.parent != bios.module_dir]
        files += bios.files
        if bios.source is GrubSource.HOST:
            media = dataclasses.replace(media, warnings=(*media.warnings, bios.description))
    files += plan_media_files(media.user_files, taken=[f.path for f in files])
    steps = (
        *media.steps,
        PlannedStep(StepKind.EFIBOOT, EFIBOOT_PRODUCT, f"FAT image with {', '.join(sorted(efi))}"),
        *([] if bios is None else [PlannedStep(StepKind.BIOSBOOT, BIOS_PRODUCT, _bios_detail(bios))]),
        PlannedStep(StepKind.ISO, ISO_PRODUCT, _iso_detail(settings, bios)),
    )
    return _build_plan(image, settings, label, media, tuple(files), steps)


def _build_plan(
    image: SourceImage,
    settings: LiveSettings,
    label: str,
    media: MediaPlan,
    files: tuple[PlannedFile, ...],
    steps: tuple[PlannedStep, ...],
) -> BuildPlan:
    return BuildPlan(
        output=OutputKind.ISO,
        mode=settings.mode,
        label=label,
        arch=media.boot.arch,
        source=image.path,
        settings=settings,
        entries=media.entries,
        files=files,
        steps=steps,
        grub_cfg=media.boot.grub_cfg,
        warnings=media.warnings,
        tree=media.tree,
    )


def _iso_detail(settings: LiveSettings, bios: BiosGrub | None = None) -> str:
    usb = "hybrid GPT for USB" if settings.hybrid else "CD only"
    md5 = ", implanted MD5 (checkisomd5)" if settings.implant_md5 else ""
    if settings.persistence is not None and settings.hybrid:
        usb += (
            f" + {settings.persistence >> 20} MiB ext4 persistence partition ({FS_LABEL}) after the ISO "
            "data and a partition over the root image (mkfs.ext4)"
        )
    eltorito = "El Torito EFI" if bios is None else "El Torito BIOS + EFI"
    return f"pycdlib: ISO 9660 level 3 + Rock Ridge + Joliet, {eltorito}, {usb}{md5}"


def _bios_detail(bios: BiosGrub) -> str:
    return f"grub-mkimage -O i386-pc-eltorito, prefix {bios.grub_dir}; {bios.description}"


def _for_bios(planned: PlannedFile, boot: BootFiles) -> PlannedFile:
    """The main grub.cfg made readable by BIOS GRUB too (``linuxefi`` guarded); others as they are."""
    if planned.path != boot.grub_cfg or planned.data is None:
        return planned
    text = bios_grub_cfg(planned.data.decode("utf-8", "surrogateescape"), path=boot.grub_cfg)
    data = text.encode("utf-8", "surrogateescape")
    return planned if data == planned.data else dataclasses.replace(planned, size=len(data), data=data)


def host_file(media_path: PurePosixPath, host: Path, root: Path) -> PlannedFile:
    """An image file already resolved to a confined host path (the boot chain)."""
    return PlannedFile(
        media_path, Origin.IMAGE, "/" + host.relative_to(root).as_posix(), host.stat().st_size, host=host
    )


def _boot_chain(boot: BootFiles, root: Path, label: str) -> list[PlannedFile]:
    """shim + grub (+ MokManager) in EFI/BOOT, and the redirector configs grub may read first."""
    arch = boot.arch
    files = [
        host_file(EFI_BOOT_DIR / arch.shim_name, boot.shim, root),
        host_file(EFI_BOOT_DIR / arch.grub_name, boot.grub, root),
    ]
    if boot.mokmanager is not None:
        files.append(host_file(EFI_BOOT_DIR / f"mm{arch.value}.efi", boot.mokmanager, root))
    redirector = grub_redirector(label, boot.grub_dir)
    generated = {EFI_BOOT_DIR / "grub.cfg": redirector, DISK_INFO_PATH: f"liveos {label}\n".encode()}
    if boot.grub_dir != PurePosixPath("/boot/grub"):
        generated[PurePosixPath("/boot/grub/grub.cfg")] = redirector
    for path, data in generated.items():
        what = "disk info for Debian's grub" if path == DISK_INFO_PATH else "grub.cfg redirector"
        files.append(PlannedFile(path, Origin.GENERATED, what, len(data), data=data))
    return files


def estimated_iso_size(plan: BuildPlan) -> int:
    """Roughly the bytes of the ISO ``plan`` describes."""
    return plan.size + ISO_OVERHEAD


def write_iso_file(
    plan: BuildPlan,
    products: Products,
    scratch: Path,
    out: Path,
    clock: StepClock,
    progress: Progress | None = None,
) -> WrittenIso:
    """Run the ISO's own steps (El Torito image, ISO) of ``plan``; the OS products exist already."""
    progress = progress or Progress()
    efi_files = {
        str(f.path.relative_to("/")): content(f, products)
        for f in plan.files
        if f.path.parent == EFI_BOOT_DIR
    }
    with timed_step(clock, progress, StepKind.EFIBOOT, EFIBOOT_PRODUCT) as record:
        efiboot = build_efiboot(efi_files, scratch / EFIBOOT_PRODUCT, arch=plan.arch)
        record.size, record.tool = efiboot.stat().st_size, "mkfs.vfat + mtools"
    products = {**products, EFIBOOT_PRODUCT: efiboot}
    bios_image, bios_platform = bios_files(plan.files)
    platform = {f.path.name: content(f, products) for f in bios_platform}
    if bios_image is not None:
        with timed_step(clock, progress, StepKind.BIOSBOOT, BIOS_PRODUCT) as record:
            grub_dir = bios_image.path.parent.parent
            bios = build_bios_image(platform, scratch, label=plan.label, grub_dir=grub_dir)
            record.size, record.tool = bios.stat().st_size, "grub-mkimage"
        products[BIOS_PRODUCT] = bios
    with timed_step(clock, progress, StepKind.ISO, ISO_PRODUCT) as record:
        writer = IsoWriter(plan.label, arch=plan.arch)
        # the planned mode, never the source's: an ESP mount's modes follow the umask
        modes = {f.path: f.mode for f in plan.files}
        for media_path, source in resolve(plan.files, products):
            if isinstance(source, bytes):
                writer.add_bytes(str(media_path), source, mode=modes[media_path])
            else:
                writer.add_file(str(media_path), source, mode=modes[media_path])
        writer.set_efi_boot(str(EFIBOOT_PATH))
        if plan.settings.persistence is not None and plan.mode is InitramfsMode.BOOTSTRAP:
            writer.set_persistence(Persistence(plan.settings.persistence, plan.label), str(SQUASHFS_PATH))
        if bios_image is not None:
            writer.set_bios_boot(str(bios_image.path), _read(platform["boot_hybrid.img"]))
        written = writer.write(out, hybrid=plan.settings.hybrid, implant_md5=plan.settings.implant_md5)
        record.size, record.tool = written.size, "pycdlib"
    return written


def _read(source: Path | bytes) -> bytes:
    return source if isinstance(source, bytes) else source.read_bytes()


def build_iso(
    plan: BuildPlan,
    rootfs: RootFs,
    out: Path,
    *,
    cache: ArtifactCache | None = None,
    progress: ProgressCallback | None = None,
) -> BuildResult:
    """Execute an ISO plan: the OS steps, the El Torito image, the ISO at ``out`` (atomically).
    ``cache``: where the plan's cached products are, and where built ones are kept; ``progress``:
    what every step reports to (:mod:`liveos.progress`)."""
    out = check_output_file(out)
    check_tools(plan)
    if plan.settings.persistence is not None:
        which("mkfs.ext4")
    clock, reporting = StepClock(), Progress(progress)
    with scratch_dir(out.parent, "liveos-media-") as scratch:
        products = build_os_products(plan, rootfs, scratch, clock, cache, reporting)
        written = write_iso_file(plan, products, scratch, out, clock, reporting)
    log.info("live ISO written: %s (label %s)", out, plan.label)
    return BuildResult(
        output=out,
        kind=OutputKind.ISO,
        archive=False,
        size=written.size,
        sha256=written.sha256,
        label=plan.label,
        mode=plan.mode,
        entries=plan.entries,
        steps=clock.ordered([s.product for s in plan.steps]),
        seconds=clock.elapsed(),
        plan=plan,
        implanted_md5=written.md5,
    )
