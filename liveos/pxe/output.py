"""The PXE output: a build plan becomes a TFTP root, as a folder or a ``.tar.gz``.

Boot chain (UEFI): firmware PXE/DHCP -> ``boot<arch>.efi`` (shim) -> shim fetches
``grub<arch>.efi`` from the same TFTP directory -> grub reads its config from the TFTP server ->
kernel + initrd over TFTP. Then, by initramfs mode:

* **bootstrap**: the kernel gets ``root=live:<URL> ip=dhcp rd.neednet=1 rd.live.image ...``;
  dracut's livenet downloads *the same ISO the ISO output builds* from that URL (the bundle
  carries it, named after the URL; :attr:`BuildPlan.iso` is its plan) and boots its squashfs on
  an overlay. The ISO is loaded into RAM: the machine needs ISO size + ~2 GiB.
* **full-os**: the initrd is the whole OS; nothing else is downloaded, so no URL is accepted.

Which grub: the image's ESP grub usually cannot do TFTP (Debian's ``grubx64.efi.signed`` has no
``tftp`` module), so :mod:`liveos.pxe.netgrub` picks one that can (Debian: the signed
``grubnetx64.efi.signed``) and reads the config directory embedded in it. The main grub.cfg stays
where the image keeps it (``/boot/grub2/grub.cfg`` ...); small redirector configs sit at every
place a grub may read first (its prefix, ``/grub``, ``/EFI/<vendor>``, ``/boot/grub``...) and
print ``liveos: PXE grub config <path>`` so a serial log shows which one was read.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from liveos.atomic import check_output_file, scratch_dir
from liveos.bootfiles import BootFiles
from liveos.cache import ArtifactCache
from liveos.image.base import SourceImage
from liveos.initramfs.livenet import livenet_extra_args
from liveos.iso.output import ISO_PRODUCT, estimated_iso_size, host_file, plan_iso, write_iso_file
from liveos.media.grubedit import NetworkRoot, network_redirector
from liveos.media.plan import plan_media, plan_media_files
from liveos.media.stage import Products, build_os_products, check_tools, resolve, timed_step
from liveos.mediafiles import MediaFile
from liveos.plan import BuildPlan, Origin, PlannedFile, PlannedStep, StepKind
from liveos.progress import Progress, ProgressCallback
from liveos.pxe.bundle import WORK_PREFIX, PxeBundle, check_output_dir, wants_archive
from liveos.pxe.netgrub import NetGrub, choose_network_grub
from liveos.pxe.urls import DEFAULT_ISO_NAME, resolve_bootstrap_url
from liveos.result import BuildResult, StepClock, file_sha256, tree_digest
from liveos.rootfs import RootFs
from liveos.settings import LiveSettings, OutputKind

log = logging.getLogger("liveos")

PXE_PRODUCT = "pxe"
#: Where grub binaries other than ours look for grub.cfg over TFTP (plus the chosen grub's own).
REDIRECTOR_PATHS = (
    "/grub.cfg",
    "/grub/grub.cfg",
    "/EFI/BOOT/grub.cfg",
    "/boot/grub/grub.cfg",
    "/boot/grub2/grub.cfg",
)

#: A caller's own file in the bundle: a host file or bytes.
ExtraSource = Path | bytes


def plan_pxe(
    image: SourceImage,
    settings: LiveSettings,
    label: str,
    *,
    base_url: str | None = None,
    file_url: str | None = None,
    iso_name: str = DEFAULT_ISO_NAME,
    extra: Mapping[str, ExtraSource] | None = None,
    cache: ArtifactCache | None = None,
) -> BuildPlan:
    """The plan of a PXE bundle of ``image``; a bootstrap bundle needs the ISO's URL.

    The caller's files (``settings.media_files``; ``extra``, bundle path -> host file or bytes,
    is shorthand for more of them) go into the bundle and, for bootstrap, into its ISO too (the
    live system sees that one at ``/run/initramfs/live``); they may not replace a boot file.
    Everything is validated here, before the (minutes long) build. With a ``cache``, steps
    reuse cached products where they can.
    """
    if extra:
        settings = settings.replace(media_files=(*settings.media_files, *extra_media_files(extra)))
    url = resolve_bootstrap_url(settings.mode, base_url=base_url, file_url=file_url, file_name=iso_name)
    rootfs = image.rootfs
    changes = image.changes()
    iso = plan_iso(image, settings, label, cache=cache, changes=changes) if url is not None else None
    extra_args = livenet_extra_args(rootfs) if url is not None else ()
    network = NetworkRoot(url.url if url is not None else None, extra_args)
    media = plan_media(image, settings, label=label, network=network, cache=cache, changes=changes)
    netgrub = choose_network_grub(rootfs, media.boot)
    files = [*media.files, *_boot_chain(media.boot, netgrub, image.root)]
    files += _redirectors(netgrub, media.boot, taken={f.path for f in files})
    steps = list(iso.steps if iso is not None else ())
    steps += [s for s in media.steps if s not in steps]
    if iso is not None and url is not None:
        files.append(
            PlannedFile(
                PurePosixPath("/", url.file_name),
                Origin.BUILT,
                ISO_PRODUCT,
                estimated_iso_size(iso),
                estimated=True,
            )
        )
    files += plan_media_files(media.user_files, taken=[f.path for f in files])
    steps.append(PlannedStep(StepKind.PXE, PXE_PRODUCT, "TFTP tree: a folder or a .tar.gz"))
    return BuildPlan(
        output=OutputKind.PXE,
        mode=settings.mode,
        label=label,
        arch=media.boot.arch,
        source=image.path,
        settings=settings,
        entries=media.entries,
        files=tuple(files),
        steps=tuple(steps),
        grub_cfg=media.boot.grub_cfg,
        bootstrap_url=url.url if url is not None else None,
        iso=iso,
        warnings=media.warnings,
        tree=media.tree,
    )


def _boot_chain(boot: BootFiles, netgrub: NetGrub, root: Path) -> list[PlannedFile]:
    """shim and the network grub at the TFTP root (shim fetches grub from its own directory)."""
    arch = boot.arch
    files = [
        host_file(PurePosixPath("/", arch.shim_name), boot.shim, root),
        host_file(PurePosixPath("/", arch.grub_name), netgrub.binary, root),
    ]
    if boot.mokmanager is not None:
        files.append(host_file(PurePosixPath(f"/mm{arch.value}.efi"), boot.mokmanager, root))
    return files


def _esp_vendor_dir(grub: Path) -> str | None:
    """``debian`` for ``.../EFI/debian/grubx64.efi`` (not ``BOOT``, which is always written)."""
    parts = grub.parts
    if len(parts) >= 3 and parts[-3].lower() == "efi" and parts[-2].lower() != "boot":
        return parts[-2]
    return None


def _redirectors(netgrub: NetGrub, boot: BootFiles, *, taken: set[PurePosixPath]) -> list[PlannedFile]:
    """Redirector configs at every place a grub may read first, except where a file already is."""
    wanted = [PurePosixPath("/", p) for p in netgrub.config_paths]
    wanted += [PurePosixPath(p) for p in REDIRECTOR_PATHS]
    vendor = _esp_vendor_dir(boot.grub)
    if vendor:
        wanted.append(PurePosixPath(f"/EFI/{vendor}/grub.cfg"))
    files = []
    for path in dict.fromkeys(wanted):
        if path in taken:
            continue
        data = network_redirector(path, boot.grub_dir)
        files.append(PlannedFile(path, Origin.GENERATED, "grub.cfg redirector", len(data), data=data))
    return files


def extra_media_files(extra: Mapping[str, ExtraSource]) -> tuple[MediaFile, ...]:
    """``extra`` (media path -> host file or bytes; a relative path is from the root) as media files."""
    files = []
    for name, source in sorted(extra.items()):
        destination = "/" + name.lstrip("/") if name.strip("/") else name
        if isinstance(source, bytes):
            files.append(MediaFile(destination, content=source))
        else:
            files.append(MediaFile(destination, source=Path(source)))
    return tuple(files)


def check_output(out: Path, *, archive: bool | None, overwrite: bool) -> tuple[Path, bool]:
    """(absolute output path, whether it is an archive), checked before any work."""
    if wants_archive(out, archive):
        return check_output_file(out, create_parent=False), True
    out = Path(out).absolute()
    check_output_dir(out, overwrite=overwrite)
    return out, False


def build_pxe(
    plan: BuildPlan,
    rootfs: RootFs,
    out: Path,
    *,
    archive: bool | None = None,
    overwrite: bool = False,
    cache: ArtifactCache | None = None,
    progress: ProgressCallback | None = None,
) -> BuildResult:
    """Execute a PXE plan into the folder or ``.tar.gz`` ``out`` (``cache``: where the plan's
    cached products are, and where built ones are kept; ``progress``: what every step reports
    to, see :mod:`liveos.progress`)."""
    out, as_archive = check_output(out, archive=archive, overwrite=overwrite)
    if as_archive:
        out.parent.mkdir(parents=True, exist_ok=True)
    check_tools(plan)
    clock, reporting = StepClock(), Progress(progress)
    created = not as_archive and not out.exists()
    if not as_archive:
        out.mkdir(exist_ok=True)
    try:
        with scratch_dir(out.parent if as_archive else out, WORK_PREFIX) as scratch:
            products = build_os_products(plan, rootfs, scratch, clock, cache, reporting)
            if plan.iso is not None:
                iso_file = scratch / "iso" / ISO_PRODUCT
                iso_file.parent.mkdir()
                write_iso_file(plan.iso, products, scratch, iso_file, clock, reporting)
                products[ISO_PRODUCT] = iso_file
            with timed_step(clock, reporting, StepKind.PXE, PXE_PRODUCT) as record:
                bundle = _bundle(plan.files, products)
                bundle.write(out, archive=as_archive, overwrite=overwrite, link_from=scratch)
                record.tool = "tar.gz" if as_archive else "folder"
    except BaseException:
        if created:  # leave no empty folder behind that we made ourselves
            with contextlib.suppress(OSError):
                out.rmdir()
        raise
    size, digest = (out.stat().st_size, file_sha256(out)) if as_archive else tree_digest(out)
    return BuildResult(
        output=out,
        kind=OutputKind.PXE,
        archive=as_archive,
        size=size,
        sha256=digest,
        label=plan.label,
        mode=plan.mode,
        entries=plan.entries,
        steps=clock.ordered([s.product for s in plan.steps]),
        seconds=clock.elapsed(),
        plan=plan,
    )


def _bundle(files: tuple[PlannedFile, ...], products: Products) -> PxeBundle:
    bundle = PxeBundle()
    modes = {f.path: f.mode for f in files if f.origin is Origin.USER}
    for path, source in resolve(files, products):
        bundle.add(path, source, mode=modes.get(path))
    return bundle
