"""Planning the media from the customised image: the part every output shares.

:func:`plan_media` decides, without running dracut, mksquashfs or a compressor: the edited
grub.cfg and its boot entries, the state file, the grub directory, the kernels, which initrds
and which root image will be built (and roughly how big they will be). The outputs add their
own files on top (:mod:`liveos.iso.output`: the EFI boot chain; :mod:`liveos.pxe.output`: the
network grub and the ISO livenet downloads).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import logging
import os
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from liveos.bootfiles import MAX_GRUB_CFG_BYTES, BootFiles, find_boot_files
from liveos.cache import ArtifactCache
from liveos.cpio.format import CPIO_FORMAT
from liveos.erofs import MKFS_EROFS_OPTIONS, dracut_boots_erofs, mkfs_erofs_version
from liveos.errors import ImageError, UsageError
from liveos.grub import GrubConfig
from liveos.host.sandbox import SANDBOX_FORMAT
from liveos.image.base import SourceImage
from liveos.image.changes import Change
from liveos.image.formats import DiskFormat
from liveos.image.identity import image_digest
from liveos.image.isofs import IsoReader
from liveos.image.layers import Layer
from liveos.initramfs import fullos
from liveos.initramfs.compression import initrd_compression
from liveos.initramfs.dracut import DracutInfo, dracut_command
from liveos.initramfs.fullos import init_target
from liveos.initramfs.inputs import conditional_paths
from liveos.initramfs.liveargs import check_args
from liveos.layout import (
    FULL_OS_EXCLUDED,
    FULL_OS_INITRD,
    ROOT_IMAGE_EXCLUDED,
    SQUASHFS_PATH,
    STATE_PATH,
    is_excluded,
)
from liveos.media import updates
from liveos.media.grubedit import GrubEdit, NetworkRoot, edit_grub_config, render_bls
from liveos.media.kdump import kdump_notes, root_excludes
from liveos.media.persistence import Persistence
from liveos.media.rebuild import apply_edits, media_state
from liveos.media.reuse import plan_initrd, plan_tree, slot_key, tree_digest
from liveos.media.updates import hook_refusal
from liveos.mediafiles import MediaFile
from liveos.plan import BootEntry, Origin, PlannedFile, PlannedStep, StepKind
from liveos.rootfs import RootFs, kernel_version_of
from liveos.settings import Compression, InitramfsMode, LiveSettings, Preset, RootFsFormat, SELinux
from liveos.squashfs import MKSQUASHFS_OPTIONS, mksquashfs_version
from liveos.state import StateFile

log = logging.getLogger("liveos")

#: Product ids of the build steps (what planned files refer to).
ROOT_IMAGE_PRODUCT = "rootfs.img"
FULL_OS_PRODUCT = "initrd.img"
#: Typical output/input ratios, for size estimates only (the Debian fixture; real OS trees).
SQUASHFS_RATIO = {Preset.FAST: 0.30, Preset.BALANCED: 0.27, Preset.SMALL: 0.24}
EROFS_RATIO = {Preset.FAST: 0.40, Preset.BALANCED: 0.38, Preset.SMALL: 0.37}
CPIO_RATIO = {
    Compression.ZSTD: 0.42,
    Compression.GZIP: 0.45,
    Compression.XZ: 0.33,
    Compression.NONE: 1.0,
}
#: A no-hostonly live initrd when the image has no initrd of its own to compare with.
DRACUT_INITRD_ESTIMATE = 60 * 1024 * 1024


def initrd_product(kernel_version: str) -> str:
    """The product id of the bootstrap initrd of one kernel."""
    return f"initrd-{kernel_version}"


@dataclass(frozen=True)
class MediaPlan:
    """The OS-derived files of the media and the steps that build them."""

    boot: BootFiles
    files: tuple[PlannedFile, ...]
    entries: tuple[BootEntry, ...]
    steps: tuple[PlannedStep, ...]
    warnings: tuple[str, ...]
    tree: str  #: digest of the caller's changes the plan was made from
    #: the caller's files: the settings' plus those a re-opened medium carries over
    user_files: tuple[MediaFile, ...] = ()


@dataclass(frozen=True)
class ReuseContext:
    """What deciding about cached products needs: the cache, the image's content digest, the
    caller's changes to the tree and the image's layers (to see what a change replaces)."""

    cache: ArtifactCache
    image_digest: str
    changes: tuple[Change, ...]
    layers: tuple[Layer, ...]

    def tree_changes(self, excluded: Sequence[str]) -> tuple[Change, ...]:
        """The changes a product of the tree minus ``excluded`` depends on."""
        return tuple(c for c in self.changes if not is_excluded(c.path, excluded))


def plan_media(
    image: SourceImage,
    settings: LiveSettings,
    *,
    label: str,
    network: NetworkRoot | None,
    cache: ArtifactCache | None = None,
    changes: tuple[Change, ...] | None = None,
) -> MediaPlan:
    """The files of ``image`` on live media built with ``settings`` (see the module docstring).

    ``network`` is None for an ISO; for PXE it says where a bootstrap root is downloaded from
    (the root image then lives in that ISO, not in the TFTP tree). With a ``cache``, each step
    reuses a cached product when it can (:mod:`liveos.media.reuse`); ``changes`` are the
    caller's changes to the tree (default: read now).
    """
    rootfs = image.rootfs
    changes = image.changes() if changes is None else changes
    reuse = None
    if cache is not None and image.layers:  # a tree without layers cannot tell its changes
        reuse = ReuseContext(cache, image_digest(image.path, cache), changes, image.layers)
    boot = find_boot_files(rootfs)
    warnings: list[str] = []
    disable_selinux = _selinux_off(settings, rootfs.selinux_mode(), warnings)
    bootstrap = settings.mode is InitramfsMode.BOOTSTRAP
    dracut = DracutInfo.probe(rootfs) if bootstrap else None
    if dracut is not None:
        warnings += check_args(settings.kernel_args, dracut.version)
    _check_rootfs_format(settings, rootfs, dracut)
    edit = GrubEdit(
        mode=settings.mode,
        label=label,
        boot_separate=image.boot_separate,
        dracut_version=dracut.version if dracut else None,
        user_args=settings.kernel_args,
        disable_selinux=disable_selinux,
        network=network,
        persistence=(
            Persistence(settings.persistence, label)
            if settings.persistence is not None and network is None and bootstrap
            else None
        ),
    )
    text = rootfs.read_text(boot.grub_cfg, limit=MAX_GRUB_CFG_BYTES)
    text = render_bls(text, rootfs, boot.grub_dir, path=boot.grub_cfg)
    applied = apply_edits(text, lambda t: edit_grub_config(t, edit, path=boot.grub_cfg), image.state)
    config = applied.config
    user_files = carried_media_files(image, settings.media_files) + settings.media_files
    state = media_state(
        mode=settings.mode,
        label=label,
        added=applied.added,
        user_args=settings.kernel_args,
        source=image.path,
        previous=image.state,
    )
    state = dataclasses.replace(
        state, media_files=tuple(StateFile(f.destination, f.file_mode, _size(f)) for f in user_files)
    )
    notes, kept = kdump_notes(rootfs, settings.kdump_boot_files)
    warnings += notes
    for note in notes:
        log.warning("%s", note)
    files = [
        _generated(STATE_PATH, state.render().encode(), "liveos state"),
        _generated(boot.grub_cfg, config.render().encode(), "the image's grub.cfg, edited"),
        *_grub_dir_files(rootfs, boot),
        *_kernels(rootfs, config),
    ]
    steps: list[PlannedStep] = []
    if bootstrap:
        assert dracut is not None
        files += _bootstrap_initrds(rootfs, config, dracut, settings.preset, steps, reuse)
        if network is None:
            selinux = not disable_selinux and rootfs.selinux_mode() != "disabled"
            excluded = root_excludes(rootfs, settings.kdump_boot_files, ROOT_IMAGE_EXCLUDED)
            files += _root_image(
                rootfs, settings.preset, steps, reuse, selinux=selinux, excluded=excluded,
                fmt=settings.rootfs_format,
            )  # fmt: skip
    else:
        excluded = root_excludes(rootfs, settings.kdump_boot_files, FULL_OS_EXCLUDED)
        files.append(_full_os_initrd(rootfs, settings, steps, reuse, excluded))
    if kept:
        root_kinds = (StepKind.SQUASHFS, StepKind.EROFS, StepKind.CPIO)
        steps = [_keeping(s, kept) if s.kind in root_kinds else s for s in steps]
    entries = tuple(
        BootEntry(
            " > ".join(line.menu) or "(top level)",
            line.kernel,
            line.initrds,
            tuple(line.args.texts()),
        )
        for line in config.kernel_lines()
    )
    return MediaPlan(
        boot, tuple(files), entries, tuple(steps), tuple(warnings), tree_digest(changes), user_files
    )


def _check_rootfs_format(settings: LiveSettings, rootfs: RootFs, dracut: DracutInfo | None) -> None:
    """An erofs root image needs bootstrap mode and a dmsquash-live that mounts erofs."""
    if settings.rootfs_format is not RootFsFormat.EROFS:
        return
    if settings.mode is InitramfsMode.FULL_OS:
        raise UsageError(
            "an erofs root image is a bootstrap-mode setting: full-os media have no root image",
            hint="use --mode bootstrap with --rootfs erofs, or drop --rootfs erofs",
        )
    if dracut is not None and not dracut_boots_erofs(rootfs):
        raise UsageError(
            f"the image's dracut {dracut.version or '(unknown version)'} cannot boot an erofs root "
            "image: its dmsquash-live mounts the image as squashfs only",
            hint="use --rootfs squashfs, or install a dracut-ng (e.g. Debian 13's 106) in the image",
        )


def _selinux_off(settings: LiveSettings, image_mode: str, warnings: list[str]) -> bool:
    """Whether the media must boot with selinux=0 (a CPIO cannot carry SELinux labels)."""
    policy = settings.selinux
    if policy is SELinux.DISABLE:
        return True
    if policy is SELinux.REQUIRE and image_mode == "disabled":
        raise UsageError(
            "SELinux is required on the media but disabled in the image (/etc/selinux/config)",
            hint="enable SELinux in the image, or use --selinux keep",
        )
    if settings.mode is InitramfsMode.FULL_OS and image_mode != "disabled":
        if policy is SELinux.REQUIRE:
            raise UsageError(
                "SELinux cannot be enabled with a full-os initramfs: CPIO archives carry no xattrs",
                hint="use bootstrap mode, or let liveos boot the media with selinux=0 (--selinux keep)",
            )
        warnings.append(f"the image's SELinux mode is {image_mode}; full-os media boot with selinux=0")
        log.warning("%s", warnings[-1])
        return True
    return False


def _generated(path: PurePosixPath, data: bytes, what: str) -> PlannedFile:
    return PlannedFile(PurePosixPath(path), Origin.GENERATED, what, len(data), data=data)


def image_file(
    rootfs: RootFs, image_path: PurePosixPath, media_path: PurePosixPath | None = None
) -> PlannedFile:
    """A file of the image placed on the media (at ``media_path``, default: the same path)."""
    host = rootfs.path(image_path)
    if not host.is_file():
        raise ImageError(f"{image_path} is not a regular file in the image", path=host)
    st = host.stat()
    return PlannedFile(
        media_path or image_path, Origin.IMAGE, str(image_path), st.st_size, mode=0o644, host=host
    )


def _grub_dir_files(rootfs: RootFs, boot: BootFiles) -> list[PlannedFile]:
    """The grub dir's other files (grubenv, fonts, themes): the config may load them."""
    grub_dir = rootfs.path(boot.grub_dir)
    found = []
    for host in sorted(grub_dir.rglob("*")):
        if host.is_file() and not host.is_symlink() and host.name != "grub.cfg":
            found.append(image_file(rootfs, boot.grub_dir / host.relative_to(grub_dir).as_posix()))
    return found


def media_path(text: str, what: str, config: GrubConfig) -> PurePosixPath:
    """A path grub.cfg names, as a path on the media: absolute, no ``..`` (the media root is the
    top; a config climbing above it is broken or hostile)."""
    path = PurePosixPath("/", text)
    if ".." in path.parts:
        raise ImageError(
            f"grub.cfg names the {what} {text}, which escapes the media root",
            path=config.path,
            hint="kernel and initrd paths must stay inside /boot of the image",
        )
    return path


def _kernels(rootfs: RootFs, config: GrubConfig) -> list[PlannedFile]:
    kernels = [media_path(p, "kernel", config) for p in config.kernel_paths()]
    if not kernels:
        raise ImageError("the grub config boots no kernel (no 'linux' command)", path=config.path)
    out = []
    for kernel in kernels:
        if not rootfs.is_file(kernel):
            raise ImageError(f"grub.cfg names {kernel}, which is not a file in the image", path=config.path)
        out.append(image_file(rootfs, kernel))
    return out


def _bootstrap_initrds(
    rootfs: RootFs,
    config: GrubConfig,
    dracut: DracutInfo,
    preset: Preset,
    steps: list[PlannedStep],
    reuse: ReuseContext | None,
) -> list[PlannedFile]:
    """One dracut initrd per kernel, placed at every initrd path grub.cfg loads for it."""
    compression = initrd_compression(rootfs, preset)
    kernels = {k.version: k for k in rootfs.kernels()}
    versions = list(kernels)
    files = []
    sizes: dict[str, int] = {}
    for text in config.initrd_paths():
        initrd = media_path(text, "initrd", config)
        version = kernel_version_of(initrd.name, versions)
        if version is None:
            raise ImageError(
                f"cannot tell which kernel the initrd {initrd} belongs to (kernels: {versions})"
            )
        product = initrd_product(version)
        if not any(s.product == product for s in steps):
            argv = dracut_command(rootfs, version, info=dracut, compress=compression.command)
            decision = None
            if reuse is not None:
                slot = slot_key("initrd", reuse.image_digest, list(argv), SANDBOX_FORMAT)
                conditional = conditional_paths(reuse.changes, reuse.layers)
                decision = plan_initrd(reuse.cache, slot, reuse.changes, conditional)
                if decision.base is not None:
                    sizes[product] = decision.base.size
            detail = f"kernel {version}, dracut {dracut.version or '?'}, {compression.describe()}"
            cache = decision.cache if decision is not None else None
            steps.append(PlannedStep(StepKind.DRACUT, product, detail, version, cache=cache))
        own = kernels[version].initrd
        if product in sizes:
            files.append(PlannedFile(initrd, Origin.BUILT, product, sizes[product]))
            continue
        estimate = rootfs.path(own).stat().st_size if own is not None else DRACUT_INITRD_ESTIMATE
        files.append(PlannedFile(initrd, Origin.BUILT, product, estimate, estimated=True))
    return files


def _keeping(step: PlannedStep, kept: Sequence[str]) -> PlannedStep:
    return dataclasses.replace(step, detail=f"{step.detail}; keeps {', '.join(kept)} for kdump")


def _root_image(
    rootfs: RootFs,
    preset: Preset,
    steps: list[PlannedStep],
    reuse: ReuseContext | None,
    *,
    selinux: bool,
    excluded: Sequence[str] = ROOT_IMAGE_EXCLUDED,
    fmt: RootFsFormat = RootFsFormat.SQUASHFS,
) -> list[PlannedFile]:
    """The squashfs (or erofs) -- or a cached one, plus the changed files in ``/updates``."""
    erofs = fmt is RootFsFormat.EROFS
    kind = StepKind.EROFS if erofs else StepKind.SQUASHFS
    detail = f"mkfs.erofs, preset {preset}" if erofs else f"mksquashfs, preset {preset}"
    ratio = EROFS_RATIO[preset] if erofs else SQUASHFS_RATIO[preset]
    if reuse is None:
        steps.append(PlannedStep(kind, ROOT_IMAGE_PRODUCT, detail))
        estimate = int(tree_bytes(rootfs.root, excluded) * ratio)
        return [PlannedFile(SQUASHFS_PATH, Origin.BUILT, ROOT_IMAGE_PRODUCT, estimate, estimated=True)]
    if erofs:
        slot = slot_key("erofs", reuse.image_digest, preset, MKFS_EROFS_OPTIONS[preset],
                        excluded, mkfs_erofs_version())  # fmt: skip
    else:
        slot = slot_key("squashfs", reuse.image_digest, preset, MKSQUASHFS_OPTIONS[preset],
                        excluded, mksquashfs_version())  # fmt: skip
    refusal = "the media boot with SELinux: copied files would carry no labels" if selinux else None
    refusal = refusal or hook_refusal(rootfs)
    layers = reuse.layers

    def rule(delta: Sequence[Change]) -> str | None:
        return refusal or updates.update_refusal(delta, layers)

    decision = plan_tree(reuse.cache, str(kind), slot, reuse.tree_changes(excluded), rule)
    steps.append(PlannedStep(kind, ROOT_IMAGE_PRODUCT, detail, cache=decision.cache))
    if decision.base is None:
        estimate = int(tree_bytes(rootfs.root, excluded) * ratio)
        return [PlannedFile(SQUASHFS_PATH, Origin.BUILT, ROOT_IMAGE_PRODUCT, estimate, estimated=True)]
    return [
        PlannedFile(SQUASHFS_PATH, Origin.BUILT, ROOT_IMAGE_PRODUCT, decision.base.size),
        *updates.update_files(rootfs, decision.delta),
    ]


def _full_os_initrd(
    rootfs: RootFs,
    settings: LiveSettings,
    steps: list[PlannedStep],
    reuse: ReuseContext | None,
    excluded: Sequence[str] = FULL_OS_EXCLUDED,
) -> PlannedFile:
    compression = settings.cpio_compression
    level = f" level {settings.level}" if compression is not Compression.NONE else ""
    detail = f"newc CPIO, {compression}{level}"
    decision = None
    if reuse is not None:
        slot = slot_key("cpio", reuse.image_digest, compression, settings.level, excluded,
                        init_target(rootfs), CPIO_FORMAT)  # fmt: skip
        layers = reuse.layers

        def rule(delta: Sequence[Change]) -> str | None:
            return fullos.update_refusal(delta, layers)

        decision = plan_tree(reuse.cache, "cpio", slot, reuse.tree_changes(excluded), rule)
    cache = decision.cache if decision is not None else None
    steps.append(PlannedStep(StepKind.CPIO, FULL_OS_PRODUCT, detail, cache=cache))
    if decision is not None and decision.base is not None:
        added = sum(c.size for c in decision.delta)
        exact = not decision.delta
        size = decision.base.size + int(added * CPIO_RATIO[compression])
        return PlannedFile(FULL_OS_INITRD, Origin.BUILT, FULL_OS_PRODUCT, size, estimated=not exact)
    estimate = int(tree_bytes(rootfs.root, excluded) * CPIO_RATIO[compression])
    return PlannedFile(FULL_OS_INITRD, Origin.BUILT, FULL_OS_PRODUCT, estimate, estimated=True)


def tree_bytes(root: Path, exclude: Sequence[str]) -> int:
    """Bytes of the regular files below ``root``, minus the excluded relative globs (no links
    followed): the input of the root image or the full-os CPIO."""
    total = 0
    stack = [(root, "")]
    while stack:
        directory, rel = stack.pop()
        try:
            entries = list(os.scandir(directory))
        except OSError:
            continue
        for entry in entries:
            child = f"{rel}{entry.name}"
            if any(fnmatch.fnmatchcase(child, pattern) for pattern in exclude):
                continue
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                stack.append((Path(entry.path), child + "/"))
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def _size(file: MediaFile) -> int:
    if file.content is not None:
        return len(file.content)
    assert file.source is not None
    try:
        return file.source.stat().st_size
    except OSError:
        return 0  # plan_media_files names the missing source


#: Where the caller's files of a re-opened medium are extracted (in the image's scratch).
CARRIED_DIR = "media-files"


def carried_media_files(image: SourceImage, given: Sequence[MediaFile]) -> tuple[MediaFile, ...]:
    """The caller's files of a re-opened liveos ISO (its state lists them) that ``given`` does not
    replace: a rebuild keeps them, as the reference tool does, and never holds a path twice."""
    state = image.state
    if state is None or not state.media_files or image.format is not DiskFormat.ISO:
        return ()
    replaced = {f.destination.lower() for f in given}
    keep = [f for f in state.media_files if f.path.lower() not in replaced]
    if not keep:
        return ()
    out = []
    target = image.scratch / CARRIED_DIR
    target.mkdir(exist_ok=True)
    with IsoReader(image.path) as reader:
        for old in keep:
            if not reader.exists(old.path):
                raise ImageError(
                    f"the medium's state lists the file {old.path}, which is not on it",
                    path=image.path,
                    hint="rebuild from the original disk image",
                )
            dest = target / hashlib.sha256(old.path.encode()).hexdigest()[:32]
            if not dest.exists():
                reader.extract(old.path, dest)
            out.append(MediaFile(old.path, source=dest, mode=old.mode))
    log.info("carried over from %s: %s", image.path, ", ".join(f.path for f in keep))
    return tuple(out)


def plan_media_files(files: Iterable[MediaFile], taken: Iterable[PurePosixPath]) -> list[PlannedFile]:
    """The planned files of ``files`` on media that already hold ``taken`` (liveos's own files).

    A destination may not be one of them, a directory holding one, or inside one; a source must
    be a regular file now (checked here, before the build, not minutes into it).
    """
    own = {PurePosixPath(str(p).lower()): p for p in taken}
    own_dirs: dict[PurePosixPath, PurePosixPath] = {}
    for lower, original in own.items():
        for parent in lower.parents:
            own_dirs.setdefault(parent, original)
    planned = []
    for item in files:
        lower = PurePosixPath(item.destination.lower())
        if lower in own:
            raise UsageError(
                f"media file destination {item.destination} would replace {own[lower]}: already a "
                "boot file liveos puts on the media",
                hint="choose another destination",
            )
        if lower in own_dirs:
            raise UsageError(
                f"media file destination {item.destination} is a directory of the media "
                f"(it holds {own_dirs[lower]})",
                hint="put the file inside that directory, or choose another destination",
            )
        above = next((own[p] for p in lower.parents if p in own), None)
        if above is not None:
            raise UsageError(f"media file destination {item.destination} would be inside the file {above}")
        if item.content is not None:
            planned.append(
                PlannedFile(
                    item.path,
                    Origin.USER,
                    "content",
                    len(item.content),
                    mode=item.file_mode,
                    data=item.content,
                )
            )
            continue
        source = item.source
        assert source is not None  # MediaFile holds exactly one of the two
        if not source.exists():
            raise UsageError(
                f"media file source {source} (for {item.destination}) does not exist", path=source
            )
        if not source.is_file():
            raise UsageError(
                f"media file source {source} (for {item.destination}) is not a regular file",
                path=source,
            )
        planned.append(
            PlannedFile(
                item.path,
                Origin.USER,
                str(source),
                source.stat().st_size,
                mode=item.file_mode,
                host=source,
            )
        )
    return planned
