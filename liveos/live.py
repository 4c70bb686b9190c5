"""LiveOS: the fluent facade -- open an image, customise it, plan, build, get a result.

    with LiveOS.open("disk.qcow2") as live:
        live.rootfs.write_text("/etc/motd", "hello from the live media\\n")
        plan = live.with_kernel_args("quiet").plan()     # look before minutes of work
        result = live.with_kernel_args("quiet").write_iso("live.iso")
        print(result.sha256, [s.seconds for s in result.steps])

Settings are a frozen :class:`~liveos.settings.LiveSettings`; every ``with_*``/mode method
returns a new :class:`LiveOS` sharing the same opened image, so a script can emit several
variants. Building executes a :class:`~liveos.plan.BuildPlan` and returns a
:class:`~liveos.result.BuildResult` of that build alone.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from liveos import views
from liveos.atomic import check_output_file
from liveos.cache import ArtifactCache
from liveos.customizer.apply import configure
from liveos.errors import UsageError
from liveos.image import SourceImage, open_image
from liveos.iso.output import build_iso, plan_iso
from liveos.media.reuse import tree_digest
from liveos.plan import BuildPlan, settings_html, settings_text
from liveos.progress import ProgressCallback
from liveos.pxe.output import ExtraSource, build_pxe, check_output, extra_media_files, plan_pxe
from liveos.pxe.urls import DEFAULT_ISO_NAME
from liveos.result import BuildResult
from liveos.rootfs import RootFs
from liveos.settings import (
    Compression,
    InitramfsMode,
    KdumpBootFiles,
    LiveSettings,
    MediaFile,
    OutputKind,
    Preset,
    RootFsFormat,
    SELinux,
)


class LiveOS:
    """An opened image plus live settings; ``plan()`` describes the media, ``write_*`` builds them."""

    def __init__(self, image: SourceImage, settings: LiveSettings | None = None) -> None:
        self.image = image
        self.settings = settings or LiveSettings()

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.settings.to_dict().items() if v != LiveSettings().to_dict()[k]}
        return f"LiveOS({str(self.image.path)!r}, {changed or 'default settings'})"

    @classmethod
    @contextlib.contextmanager
    def open(cls, path: str | os.PathLike[str], *, workdir: Path | None = None) -> Iterator[LiveOS]:
        """Open ``path`` read-only (a disk image of any supported format, or a liveos ISO)."""
        with open_image(path, workdir=workdir) as image:
            yield cls(image)

    @property
    def rootfs(self) -> RootFs:
        """The customisable OS tree (writes go to an overlay; the input image never changes)."""
        return self.image.rootfs

    # -- settings (each validated by its entry in liveos.settings) ----------------------------
    def with_settings(self, **changes: object) -> LiveOS:
        """A copy with the named settings changed (see :func:`liveos.settings.table`)."""
        return LiveOS(self.image, self.settings.replace(**changes))

    def with_label(self, label: str | None) -> LiveOS:
        """The media's volume label (checked now, before minutes of building); None: unique."""
        return self.with_settings(label=label)

    def with_mode(self, mode: InitramfsMode | str) -> LiveOS:
        """The initramfs mode (``bootstrap`` or ``full-os``)."""
        return self.with_settings(mode=mode)

    def bootstrap(self) -> LiveOS:
        """Bootstrap mode: a dracut initrd that boots ``/liveos/rootfs.img``."""
        return self.with_mode(InitramfsMode.BOOTSTRAP)

    def full_os(self, compression: Compression | str | None = None, level: int | None = None) -> LiveOS:
        """full-os mode: the whole OS is the initrd (optionally with its compressor and level)."""
        live = self.with_mode(InitramfsMode.FULL_OS)
        return live if compression is None else live.with_compression(compression, level)

    def with_kernel_args(self, *args: str) -> LiveOS:
        """Append kernel arguments to every boot entry; each string is one argument."""
        return self.with_settings(kernel_args=(*self.settings.kernel_args, *args))

    def with_selinux(self, policy: SELinux | str) -> LiveOS:
        """SELinux on the media: ``keep``, ``disable`` or ``require``."""
        return self.with_settings(selinux=policy)

    def with_files(self, *files: MediaFile) -> LiveOS:
        """Add the caller's files to the media (ISO root, PXE TFTP root; a bootstrap PXE bundle's
        ISO too), after those already given; a destination that would replace or shadow a boot
        file is refused (see :mod:`liveos.mediafiles`)."""
        return self.with_settings(media_files=(*self.settings.media_files, *files))

    def with_kdump_boot_files(self, policy: KdumpBootFiles | str) -> LiveOS:
        """``keep``: kdump's kernel and initrd stay in the live root's /boot; ``none`` (default):
        left out, and the plan lists them."""
        return self.with_settings(kdump_boot_files=policy)

    def with_config(
        self, config: str | os.PathLike[str] | Mapping[str, object], output: OutputKind | str | None = None
    ) -> LiveOS:
        """Apply an Image Customizer config (a YAML file, or a mapping shaped like one): its
        ``os:`` part and scripts change :attr:`rootfs` now (call it once); the result carries the
        ``iso:`` or ``pxe:`` settings for ``output`` (default: the config's ``output.image.format``).
        :func:`liveos.customizer.build_from_config` also builds what ``output:`` names."""
        return configure(self, config, output)

    def with_preset(self, preset: Preset | str) -> LiveOS:
        """Speed/size of every compressor: ``fast`` (default), ``balanced`` or ``small``."""
        return self.with_settings(preset=preset)

    def with_compression(self, compression: Compression | str | None, level: int | None = None) -> LiveOS:
        """The full-os initrd's compressor and level, overriding the preset's (None: the preset's)."""
        return self.with_settings(compression=compression, compression_level=level)

    def with_cache(self, cache: bool) -> LiveOS:
        """Whether builds reuse (and store) products whose inputs did not change (default: yes)."""
        return self.with_settings(cache=cache)

    def with_hybrid(self, hybrid: bool) -> LiveOS:
        """Whether the ISO also carries USB partition tables (default: yes)."""
        return self.with_settings(hybrid=hybrid)

    def with_implant_md5(self, implant: bool) -> LiveOS:
        """Whether the ISO carries an implanted MD5 for ``checkisomd5``/``rd.live.check`` (default: yes)."""
        return self.with_settings(implant_md5=implant)

    def with_rootfs_format(self, fmt: RootFsFormat | str) -> LiveOS:
        """The bootstrap root image's filesystem: ``squashfs`` (default) or ``erofs`` (needs the
        image's dracut to mount erofs, e.g. Debian 13's; checked when planning)."""
        return self.with_settings(rootfs_format=fmt)

    def with_bios(self, bios: bool) -> LiveOS:
        """Whether an x86-64 ISO also boots under BIOS, as a CD and from USB (default: yes); off
        gives a UEFI-only ISO."""
        return self.with_settings(bios=bios)

    def with_persistence(self, size: int | str | None) -> LiveOS:
        """A writable partition of ``size`` (bytes, or ``"1G"``) after the ISO data, for dracut's
        overlay on a USB disk written from the ISO: changes survive a reboot (None: no partition)."""
        return self.with_settings(persistence=size)

    # -- plan and build ------------------------------------------------------------------------
    def plan(
        self,
        output: OutputKind | str = OutputKind.ISO,
        *,
        base_url: str | None = None,
        file_url: str | None = None,
        iso_name: str = DEFAULT_ISO_NAME,
        extra_files: Mapping[str, ExtraSource] | None = None,
    ) -> BuildPlan:
        """What a build would do and put on the media; runs no dracut, mksquashfs or compressor.

        ``output`` is ``iso`` or ``pxe``; a bootstrap PXE plan needs the URL its ISO will be
        served from (``base_url`` + ``iso_name``, or the full ``file_url``); ``extra_files``
        (media path -> host file or bytes) is shorthand for :meth:`with_files`.
        """
        if extra_files:
            return self.with_files(*extra_media_files(extra_files)).plan(
                output, base_url=base_url, file_url=file_url, iso_name=iso_name
            )
        kind = OutputKind(output)
        label = self.settings.resolved_label()
        cache = self.cache()
        if kind is OutputKind.ISO:
            if base_url is not None or file_url is not None:
                raise UsageError("bootstrap URLs belong to PXE plans", hint="plan('pxe', ...)")
            return plan_iso(self.image, self.settings, label, cache=cache)
        if self.settings.persistence is not None:
            raise UsageError(
                "persistence is for an ISO written to a USB disk; a PXE boot has no disk to keep it on",
                hint="plan('iso') or drop with_persistence()",
            )
        return plan_pxe(
            self.image,
            self.settings,
            label,
            base_url=base_url,
            file_url=file_url,
            iso_name=iso_name,
            cache=cache,
        )

    def cache(self) -> ArtifactCache | None:
        """The artifact cache builds use (:func:`liveos.cache.default_cache_dir`, capped at
        :func:`liveos.cache.default_max_bytes`); None with ``cache=False``."""
        return ArtifactCache.default() if self.settings.cache else None

    def build(
        self,
        plan: BuildPlan,
        out: str | os.PathLike[str],
        *,
        archive: bool | None = None,
        overwrite: bool = False,
        progress: ProgressCallback | None = None,
    ) -> BuildResult:
        """Execute ``plan`` (from :meth:`plan` of this image) into ``out``.

        PXE: ``out`` is a folder, or a ``.tar.gz`` by its name or ``archive=True``; a non-empty
        folder is replaced only with ``overwrite=True``. ``progress`` gets every step's events
        (:mod:`liveos.progress`; :func:`liveos.progress_display.reporter_for` draws them).
        """
        if plan.source != self.image.path:
            raise UsageError(f"the plan was made for {plan.source}, not {self.image.path}")
        if tree_digest(self.image.changes()) != plan.tree:
            raise UsageError(
                "the image's tree changed after the plan was made: the plan no longer describes it",
                path=self.image.path,
                hint="make a new plan (live.plan(...)) after the last change, then build it",
            )
        cache = ArtifactCache.default() if plan.settings.cache else None
        if plan.output is OutputKind.ISO:
            return build_iso(plan, self.rootfs, Path(out), cache=cache, progress=progress)
        return build_pxe(
            plan,
            self.rootfs,
            Path(out),
            archive=archive,
            overwrite=overwrite,
            cache=cache,
            progress=progress,
        )

    def write_iso(
        self, out: str | os.PathLike[str], *, progress: ProgressCallback | None = None
    ) -> BuildResult:
        """Build the live ISO at ``out`` (atomically); ``progress``: see :meth:`build`."""
        check_output_file(out, create_parent=False)  # before planning: a bad path fails at once
        return self.build(self.plan(OutputKind.ISO), out, progress=progress)

    def write_pxe(
        self,
        out: str | os.PathLike[str],
        *,
        base_url: str | None = None,
        file_url: str | None = None,
        archive: bool | None = None,
        overwrite: bool = False,
        iso_name: str = DEFAULT_ISO_NAME,
        extra_files: Mapping[str, ExtraSource] | None = None,
        progress: ProgressCallback | None = None,
    ) -> BuildResult:
        """Write PXE artifacts (a folder, or a ``.tar.gz``) to ``out``.

        bootstrap mode needs the URL the bundled ISO will be served from (``base_url`` + the ISO
        name, or the full ``file_url``); full-os mode takes no URL. ``progress``: see :meth:`build`.
        """
        check_output(Path(out), archive=archive, overwrite=overwrite)  # before planning
        plan = self.plan(
            OutputKind.PXE, base_url=base_url, file_url=file_url, iso_name=iso_name, extra_files=extra_files
        )
        return self.build(plan, out, archive=archive, overwrite=overwrite, progress=progress)

    # -- rich views (notebooks, IPython) --------------------------------------------------------
    def _repr_html_(self) -> str:
        return views.safe_html(
            lambda: views.html_block(
                repr(self),
                views.html_details("settings", settings_html(self.settings), open_=True),
                views.html_details("image", self.image._repr_html_(), open_=True),
            ),
            "LiveOS",
        )

    def _repr_pretty_(self, p: views.PrettyPrinter, cycle: bool) -> None:
        views.pretty_text(p, cycle, self.describe, short="<LiveOS>")

    def describe(self) -> str:
        """Every setting (``*``: changed from its default) and what the image is, as text."""
        image = self.image.summary().describe()
        return f"{self!r}\nsettings:\n{settings_text(self.settings)}\nimage:\n{image}"
