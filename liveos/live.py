"""LiveOS: the fluent pipeline from an opened image to live media.

    with LiveOS.open("disk.qcow2") as live:
        live.rootfs.write_text("/etc/motd", "hello from the live media\\n")
        live.with_kernel_args("quiet").bootstrap().write_iso("live.iso")

Settings are a frozen :class:`LiveSettings`; every ``with_*``/mode method returns a new
:class:`LiveOS` sharing the same opened image, so a script can emit several variants.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from liveos.atomic import scratch_dir
from liveos.bootfiles import BootFiles, find_boot_files
from liveos.errors import ImageError, UsageError
from liveos.image import SourceImage
from liveos.image.live_iso import LiveIsoImage
from liveos.initramfs import DracutInfo, Initramfs
from liveos.iso import IsoWriter, build_efiboot, validate_label
from liveos.media import (
    EFIBOOT_PATH,
    FULL_OS_INITRD,
    SQUASHFS_PATH,
    MediaTree,
    edit_grub_config,
    efiboot_files,
    kernel_version_of,
    render_bls,
    stage_boot_chain,
    stage_grub_dir,
)
from liveos.reproducible import source_date_epoch
from liveos.rootfs import RootFs
from liveos.run import which
from liveos.settings import Compression, InitramfsMode
from liveos.squashfs import SquashfsPreset, make_squashfs
from liveos.state import STATE_PATH, apply_edits, media_state

log = logging.getLogger("liveos")


@dataclass(frozen=True)
class LiveSettings:
    """Everything that decides what the live media look like."""

    label: str | None = None  #: ISO volume label; None = unique per build (LIVEOS_xxxxxxxx)
    mode: InitramfsMode = InitramfsMode.BOOTSTRAP
    kernel_args: tuple[str, ...] = ()  #: appended to every boot entry, each one argument
    squashfs: SquashfsPreset = SquashfsPreset.FAST
    compression: Compression = Compression.ZSTD  #: full-os initrd compressor
    compression_level: int | None = None
    selinux: bool | None = None  #: None: keep if the mode allows it; True: require; False: disable
    hybrid: bool = True  #: USB-bootable partition tables on the ISO

    def resolved_label(self) -> str:
        """The label to use: the given one, or a unique (reproducible with SOURCE_DATE_EPOCH) one."""
        if self.label:
            return self.label
        epoch = source_date_epoch()
        seed = str(epoch) if epoch is not None else f"{time.time_ns()}-{os.getpid()}"
        return "LIVEOS_" + hashlib.sha256(seed.encode()).hexdigest()[:8].upper()


@dataclass(frozen=True)
class BuildTimings:
    """Seconds spent per step of the last build (for benchmarks and the CLI summary)."""

    steps: dict[str, float]


class LiveOS:
    """An opened image plus live settings; terminal methods write media."""

    def __init__(self, image: SourceImage, settings: LiveSettings | None = None) -> None:
        self.image = image
        self.settings = settings or LiveSettings()
        self.timings: dict[str, float] = {}

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: str | os.PathLike[str], *, workdir: Path | None = None) -> Iterator[LiveOS]:
        """Open ``path`` read-only (any supported format) for customisation and media output."""
        with SourceImage.open(Path(path), workdir=workdir) as image:
            yield cls(image)

    # -- fluent settings --------------------------------------------------------------------
    def _with(self, **changes: object) -> LiveOS:
        clone = LiveOS(self.image, dataclasses.replace(self.settings, **changes))  # type: ignore[arg-type]
        clone.timings = self.timings
        return clone

    def with_label(self, label: str) -> LiveOS:
        """The media's volume label (checked now, before minutes of building)."""
        return self._with(label=validate_label(label))

    def with_kernel_args(self, *args: str) -> LiveOS:
        for index, arg in enumerate(args):
            if not arg.strip():
                raise UsageError(f"kernel argument {index} is empty", hint="drop it or give a value")
        return self._with(kernel_args=self.settings.kernel_args + tuple(args))

    def with_squashfs(self, preset: SquashfsPreset | str) -> LiveOS:
        return self._with(squashfs=SquashfsPreset(preset))

    def with_hybrid(self, hybrid: bool) -> LiveOS:
        """Whether the ISO also carries USB partition tables (default: yes)."""
        return self._with(hybrid=hybrid)

    def bootstrap(self) -> LiveOS:
        return self._with(mode=InitramfsMode.BOOTSTRAP)

    def full_os(self, compression: Compression | str = Compression.ZSTD, level: int | None = None) -> LiveOS:
        return self._with(
            mode=InitramfsMode.FULL_OS, compression=Compression(compression), compression_level=level
        )

    @property
    def rootfs(self) -> RootFs:
        """The customisable OS tree (writes go to an overlay; the input image never changes)."""
        return self.image.rootfs

    # -- outputs ----------------------------------------------------------------------------
    def write_iso(self, out: str | os.PathLike[str]) -> Path:
        """Build the live ISO at ``out`` (atomically) and return its path."""
        out_path = Path(out).absolute()
        if out_path.is_dir():
            raise UsageError(f"output {out_path} is a directory", hint="give a file name such as live.iso")
        out_path.parent.mkdir(parents=True, exist_ok=True)
        label = self.settings.resolved_label()
        with scratch_dir(out_path.parent, "liveos-media-") as scratch:
            tree, boot = self.stage(scratch, label=label)
            self.write_staged_iso(tree, boot, label, out_path, scratch=scratch)
        log.info("live ISO written: %s (label %s)", out_path, label)
        return out_path

    def write_staged_iso(
        self, tree: MediaTree, boot: BootFiles, label: str, out: Path, *, scratch: Path
    ) -> Path:
        """Write already staged media (see :meth:`stage`) as a UEFI ISO; ``tree`` is not changed."""
        iso_tree = MediaTree(dict(tree.files))
        with self._step("efiboot"):
            efiboot = build_efiboot(efiboot_files(iso_tree), scratch / "efiboot.img", arch=boot.arch)
        iso_tree.add(EFIBOOT_PATH, efiboot)
        with self._step("iso"):
            writer = IsoWriter(label, arch=boot.arch)
            for media_path, source in iso_tree:
                if isinstance(source, bytes):
                    writer.add_bytes(str(media_path), source)
                else:
                    writer.add_file(str(media_path), source)
            writer.set_efi_boot(str(EFIBOOT_PATH))
            writer.write(out, hybrid=self.settings.hybrid)
        return out

    def write_pxe(
        self,
        out: str | os.PathLike[str],
        *,
        base_url: str | None = None,
        file_url: str | None = None,
        archive: bool | None = None,
        overwrite: bool = False,
    ) -> Path:
        """Write PXE artifacts (a folder, or a ``.tar.gz``) to ``out``; see :func:`liveos.pxe.write_pxe`.

        bootstrap mode needs the URL the bundled ISO will be served from (``base_url`` + the ISO
        name, or the full ``file_url``); full-os mode takes no URL.
        """
        from liveos.pxe import write_pxe  # pxe builds on this module

        return write_pxe(
            self, out, base_url=base_url, file_url=file_url, archive=archive, overwrite=overwrite
        )

    # -- steps ------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _step(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        log.info("step %s ...", name)
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
            log.info("step %s: %.1f s", name, self.timings[name])

    def _boot_separate(self) -> bool:
        return any(PurePosixPath(m.mountpoint) == PurePosixPath("/boot") for m in self.image.mounts)

    def stage(
        self, scratch: Path, *, label: str, pxe: bool = False, pxe_url: str | None = None
    ) -> tuple[MediaTree, BootFiles]:
        """Plan the media: build initrds (and the squashfs) in ``scratch``, edit grub.cfg.

        Returns the media tree (media path -> file or bytes) and the image's boot chain. With
        ``pxe=True`` the grub config is the network one (no ``search``; bootstrap roots come from
        ``pxe_url``). Output writers (:class:`~liveos.iso.IsoWriter`, PXE bundles) consume it.
        """
        rootfs = self.rootfs
        settings = self.settings
        self._check_tools(pxe)
        boot = find_boot_files(rootfs)
        selinux_mode = rootfs.selinux_mode()
        disable_selinux = self._selinux_off(selinux_mode)
        dracut = DracutInfo.probe(rootfs) if settings.mode is InitramfsMode.BOOTSTRAP else None
        # A re-opened liveos ISO: its state says which arguments the previous build added.
        previous = self.image.state if isinstance(self.image, LiveIsoImage) else None
        grub_text = render_bls(rootfs.read_text(boot.grub_cfg), rootfs, boot.grub_dir, path=boot.grub_cfg)
        edit = functools.partial(
            edit_grub_config,
            path=boot.grub_cfg,
            mode=settings.mode,
            label=label,
            boot_separate=self._boot_separate(),
            dracut_version=dracut.version if dracut else None,
            user_args=settings.kernel_args,
            disable_selinux=disable_selinux,
            pxe=pxe,
            pxe_url=pxe_url,
        )
        applied = apply_edits(grub_text, edit, previous)
        config = applied.config
        tree = MediaTree()
        state = media_state(
            mode=settings.mode,
            label=label,
            added=applied.added,
            user_args=settings.kernel_args,
            source=self.image.path,
            previous=previous,
        )
        tree.add(STATE_PATH, state.render().encode())
        stage_boot_chain(tree, boot, label)
        stage_grub_dir(tree, rootfs, boot)
        tree.add(boot.grub_cfg, config.render().encode())
        versions = [k.version for k in rootfs.kernels()]
        kernels = [PurePosixPath(p) for p in config.kernel_paths()]
        if not kernels:
            raise ImageError(
                "the grub config boots no kernel (no 'linux' command)", path=rootfs.path(boot.grub_cfg)
            )
        for kernel in kernels:
            tree.add(kernel, self._image_file(kernel))
        if settings.mode is InitramfsMode.BOOTSTRAP:
            self._stage_bootstrap(tree, scratch, config.initrd_paths(), versions)
        else:
            self._stage_full_os(tree, scratch)
        return tree, boot

    def _check_tools(self, pxe: bool) -> None:
        """Fail in a second, not after minutes of dracut, when a host tool of a later step is missing."""
        tools = ["mkfs.vfat", "mcopy", "mmd"]  # the El Torito image (also for the PXE bundle's ISO)
        if self.settings.mode is InitramfsMode.BOOTSTRAP:
            tools.append("mksquashfs")
        for tool in tools:
            which(tool)

    def _image_file(self, media_path: PurePosixPath) -> Path:
        host = self.rootfs.path(media_path)
        if not host.is_file():
            raise ImageError(f"grub.cfg names {media_path}, which is not a file in the image", path=host)
        return host

    def _stage_bootstrap(
        self, tree: MediaTree, scratch: Path, initrds: list[str], versions: list[str]
    ) -> None:
        built: dict[str, Path] = {}
        for initrd in initrds:
            version = kernel_version_of(PurePosixPath(initrd).name, versions)
            if version is None:
                raise ImageError(
                    f"cannot tell which kernel the initrd {initrd} belongs to (kernels: {versions})"
                )
            if version not in built:
                with self._step("dracut"):
                    built[version] = Initramfs.bootstrap(
                        self.rootfs, version, scratch / f"initrd-{version}.img"
                    )
            tree.add(initrd, built[version])
        self.rootfs.remove_fstab()
        with self._step("squashfs"):
            squashfs = make_squashfs(self.rootfs.root, scratch / "rootfs.img", preset=self.settings.squashfs)
        tree.add(SQUASHFS_PATH, squashfs)

    def _stage_full_os(self, tree: MediaTree, scratch: Path) -> None:
        self.rootfs.remove_fstab()
        with self._step("cpio"):
            initrd = Initramfs.full_os(
                self.rootfs,
                scratch / "initrd.img",
                compression=self.settings.compression,
                level=self.settings.compression_level,
            )
        tree.add(FULL_OS_INITRD, initrd.path)

    def _selinux_off(self, image_mode: str) -> bool:
        """Whether the media must boot with selinux=0 (CPIO cannot carry SELinux labels)."""
        wanted = self.settings.selinux
        if self.settings.mode is InitramfsMode.FULL_OS and image_mode != "disabled":
            if wanted:
                raise UsageError(
                    "SELinux cannot be enabled with a full-os initramfs: CPIO archives carry no xattrs",
                    hint="use bootstrap mode, or allow liveos to boot the media with selinux=0",
                )
            log.warning("image SELinux mode is %s; full-os media boot with selinux=0", image_mode)
            return True
        return wanted is False
