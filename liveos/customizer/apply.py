"""A parsed config applied: the ``os:`` part to the image's tree, the ``iso:``/``pxe:`` part to the
live settings, and the build of what ``output:`` names.

The OS changes run in the reference tool's order (``customizeos.go``): packages (remove, update
all, install, update -- the image's own package manager, in the sandbox, with the network for
that step only), hostname, additional files, services, the SELinux mode, then the
``postCustomization`` and ``finalizeCustomization`` scripts (sandboxed, no network). They land in
the overlay of the opened image; the input image never changes.

The media part follows the output: ``iso:`` for ``iso``, ``pxe:`` for ``pxe-dir``/``pxe-tar``,
with the reference's defaults (``initramfsType`` bootstrap for an ISO, full-os for PXE).
``os.kernelCommandLine`` arguments come first on every boot entry, then the section's.

This module works on anything shaped like :class:`liveos.LiveOS` (:class:`Live`), so that
``LiveOS.with_config`` can call it without an import cycle.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Self, TypeVar

from liveos.atomic import check_output_file
from liveos.customizer.schema import (
    BASE_URL_ISO_NAME,
    Config,
    ImageFormat,
    OsConfig,
    OsFile,
    SELinuxMode,
    load_config,
)
from liveos.errors import UsageError
from liveos.mediafiles import MediaFile
from liveos.progress import ProgressCallback
from liveos.pxe.output import check_output
from liveos.pxe.urls import DEFAULT_ISO_NAME
from liveos.result import BuildResult
from liveos.rootfs import CONFIG_LIMIT, RootFs
from liveos.settings import InitramfsMode, KdumpBootFiles, OutputKind, SELinux

log = logging.getLogger(__name__)

ConfigSource = str | os.PathLike[str] | Mapping[str, object] | Config


class Live(Protocol):
    """What the customizer needs of a :class:`liveos.LiveOS` (the facade satisfies it)."""

    @property
    def rootfs(self) -> RootFs:
        """The OS tree the ``os:`` part changes."""

    def with_mode(self, mode: InitramfsMode | str) -> Self:
        """The initramfs mode."""

    def with_kernel_args(self, *args: str) -> Self:
        """Kernel arguments appended to every entry."""

    def with_selinux(self, policy: SELinux | str) -> Self:
        """SELinux on the media."""

    def with_files(self, *files: MediaFile) -> Self:
        """Files on the media."""

    def with_kdump_boot_files(self, policy: KdumpBootFiles | str) -> Self:
        """kdump's files in the live root."""

    def write_iso(
        self, out: str | os.PathLike[str], *, progress: ProgressCallback | None = None
    ) -> BuildResult:
        """Build an ISO."""

    def write_pxe(
        self,
        out: str | os.PathLike[str],
        *,
        base_url: str | None = None,
        file_url: str | None = None,
        archive: bool | None = None,
        overwrite: bool = False,
        iso_name: str = DEFAULT_ISO_NAME,
        progress: ProgressCallback | None = None,
    ) -> BuildResult:
        """Build a PXE bundle."""


L = TypeVar("L", bound=Live)


@dataclass(frozen=True)
class OutputTarget:
    """What a config build writes: the format and the path (a file, or a folder for pxe-dir)."""

    format: ImageFormat
    path: Path


def output_target(
    config: Config,
    output: str | os.PathLike[str] | None = None,
    image_format: ImageFormat | str | None = None,
) -> OutputTarget:
    """The output, the caller's ``output``/``image_format`` overriding the config's
    ``output.image`` (as the reference tool's ``--output-image-file``/``--output-image-format``)."""
    chosen = image_format if image_format is not None else config.output_format
    if chosen is None:
        raise UsageError(
            f"{config.source}: no output format",
            hint="set output.image.format (iso, pxe-dir or pxe-tar) in the config, or pass --format",
        )
    try:
        kind = ImageFormat(chosen)
    except ValueError:
        raise UsageError(
            f"output format {chosen!r} is not one of {', '.join(f.value for f in ImageFormat)}"
        ) from None
    path = Path(output) if output is not None else config.output_path
    if path is None:
        raise UsageError(
            f"{config.source}: no output path", hint="set output.image.path in the config, or pass -o"
        )
    return OutputTarget(kind, path)


def prepare_output(target: OutputTarget, *, overwrite: bool = False) -> None:
    """Check the output before any work (an OS customisation takes minutes) and create its
    parent folder, as the reference tool does for a path from a config."""
    if target.format is not ImageFormat.PXE_DIR:
        check_output_file(target.path, create_parent=True)
    else:
        parent = target.path.absolute().parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(
                f"cannot create {parent} for {target.path}: {exc.strerror}", path=parent
            ) from None
    if target.format is not ImageFormat.ISO:
        check_output(target.path, archive=target.format is ImageFormat.PXE_TAR, overwrite=overwrite)


def configure(live: L, config: ConfigSource, kind: OutputKind | str | None = None) -> L:
    """Apply ``config`` to ``live``: its ``os:`` part and scripts change ``live.rootfs`` now (call
    this once per opened image); the result carries the ``iso:`` or ``pxe:`` settings for the
    output ``kind`` (default: the config's output format, else the section it has)."""
    parsed = load_config(config)
    output = OutputKind(kind) if kind is not None else parsed.default_kind()
    media = parsed.media(output)
    mode = parsed.initramfs(output)
    selinux = parsed.os.selinux if parsed.os is not None else None
    if selinux not in (None, SELinuxMode.DISABLED) and mode is InitramfsMode.FULL_OS:
        section = "iso" if output is OutputKind.ISO else "pxe"
        raise UsageError(
            f"{parsed.source}: os.selinux.mode {selinux}: selinux is not supported for full OS "
            f"initramfs image ({section}.initramfsType: full-os)",
            hint="a CPIO initrd carries no SELinux labels: use initramfsType: bootstrap, or "
            "selinux.mode: disabled",
        )
    configured = live.with_mode(mode)  # every setting is checked before the tree changes
    args = (*(parsed.os.kernel_args if parsed.os is not None else ()), *media.kernel_args)
    if selinux is SELinuxMode.FORCE_ENFORCING:
        args = (*args, "enforcing=1")
    if args:
        configured = configured.with_kernel_args(*args)
    if selinux is SELinuxMode.DISABLED:
        configured = configured.with_selinux(SELinux.DISABLE)
    elif selinux is not None:
        configured = configured.with_selinux(SELinux.REQUIRE)
    if media.files:
        configured = configured.with_files(*media.files)
    if media.kdump_boot_files is not None:
        configured = configured.with_kdump_boot_files(media.kdump_boot_files)
    apply_os(live.rootfs, parsed)
    return configured


def apply_os(rootfs: RootFs, config: Config) -> None:
    """The ``os:`` part and the scripts of ``config``, in the reference tool's order."""
    os_config = config.os or OsConfig()
    packages = os_config.packages
    if packages.remove:
        log.info("removing packages: %s", " ".join(packages.remove))
        rootfs.remove_packages(packages.remove)
    if packages.update_existing:
        log.info("updating every installed package")
        rootfs.update_packages(None)
    if packages.install:
        log.info("installing packages: %s", " ".join(packages.install))
        rootfs.install_packages(packages.install)
    if packages.update:
        log.info("updating packages: %s", " ".join(packages.update))
        rootfs.update_packages(packages.update)
    if os_config.hostname is not None:
        rootfs.set_hostname(os_config.hostname)
    for os_file in os_config.files:
        write_os_file(rootfs, os_file)
    if os_config.enable_services:
        rootfs.enable_services(os_config.enable_services)
    if os_config.disable_services:
        rootfs.disable_services(os_config.disable_services)
    if os_config.selinux is not None:
        set_selinux_mode(rootfs, os_config.selinux, source=config.source)
    for script in (*config.post_customization, *config.finalize_customization):
        log.info("running script %s", script.title)
        rootfs.run_script(
            script.path,
            content=script.content,
            args=script.arguments,
            interpreter=script.interpreter,
            env=dict(script.environment),
        )


def write_os_file(rootfs: RootFs, os_file: OsFile) -> None:
    """One ``os.additionalFiles`` entry into the tree (a symlink at the destination is replaced,
    never followed; a source is streamed, not read whole)."""
    if os_file.content is not None:
        mode = os_file.permissions if os_file.permissions is not None else 0o644
        rootfs.write_bytes(os_file.destination, os_file.content, mode=mode)
        return
    assert os_file.source is not None
    try:
        with open(os_file.source, "rb") as src:
            source_mode = stat.S_IMODE(os.fstat(src.fileno()).st_mode)
            mode = os_file.permissions if os_file.permissions is not None else source_mode & 0o777
            host = rootfs.write_bytes(os_file.destination, b"", mode=mode)
            fd = os.open(host, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, "wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
    except OSError as exc:
        raise UsageError(
            f"cannot copy {os_file.source} to {os_file.destination}: {exc.strerror}", path=os_file.source
        ) from None


_SELINUX_LINE = re.compile(r"(?m)^[ \t]*SELINUX[ \t]*=.*$")


def set_selinux_mode(rootfs: RootFs, mode: SELinuxMode, *, source: str = "config") -> None:
    """Write the mode into the image's ``/etc/selinux/config`` (enforcing and permissive need the
    file: an image without SELinux cannot be made to enforce it by a line of config)."""
    wanted = "enforcing" if mode is SELinuxMode.FORCE_ENFORCING else str(mode)
    config = "/etc/selinux/config"
    if not rootfs.is_file(config):
        if mode is SELinuxMode.DISABLED:
            return
        raise UsageError(
            f"{source}: os.selinux.mode {mode}: the image has no SELinux ({config} is missing)",
            hint="install the SELinux policy with os.packages.install (e.g. selinux-policy-default "
            "on Debian, selinux-policy on Azure Linux), or use selinux.mode: disabled",
        )
    text = rootfs.read_text(config, limit=CONFIG_LIMIT)
    line = f"SELINUX={wanted}"
    new = (
        _SELINUX_LINE.sub(line, text, count=1)
        if _SELINUX_LINE.search(text)
        else text.rstrip("\n") + f"\n{line}\n"
    )
    if new != text:
        rootfs.write_text(config, new)


def write_configured(
    live: Live,
    config: Config,
    target: OutputTarget,
    *,
    base_url: str | None = None,
    file_url: str | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> BuildResult:
    """Build ``target`` from ``live`` (already :func:`configure`-d for its format). A bootstrap
    PXE bundle's URL is ``base_url``/``file_url`` if given, else the config's
    ``bootstrapBaseUrl`` (ISO named ``image.iso``, as the reference names it) or ``bootstrapFileUrl``."""
    if target.format is ImageFormat.ISO:
        return live.write_iso(target.path, progress=progress)
    media = config.media(OutputKind.PXE)
    if base_url is None and file_url is None:
        base_url, file_url = media.base_url, media.file_url
    return live.write_pxe(
        target.path,
        base_url=base_url,
        file_url=file_url,
        archive=target.format is ImageFormat.PXE_TAR,
        overwrite=overwrite,
        iso_name=BASE_URL_ISO_NAME,
        progress=progress,
    )


def build_from_config(
    live: Live,
    config: ConfigSource,
    *,
    output: str | os.PathLike[str] | None = None,
    image_format: ImageFormat | str | None = None,
    base_url: str | None = None,
    file_url: str | None = None,
    overwrite: bool = False,
    progress: ProgressCallback | None = None,
) -> BuildResult:
    """Apply ``config`` to a freshly opened ``live`` and build what its ``output:`` names
    (``output``/``image_format`` override it, as the reference CLI's flags do)."""
    parsed = load_config(config)
    target = output_target(parsed, output, image_format)
    check_bootstrap_url(parsed, target, base_url=base_url, file_url=file_url)
    prepare_output(target, overwrite=overwrite)
    configured = configure(live, parsed, target.format.kind)
    return write_configured(
        configured,
        parsed,
        target,
        base_url=base_url,
        file_url=file_url,
        overwrite=overwrite,
        progress=progress,
    )


def check_bootstrap_url(
    config: Config, target: OutputTarget, *, base_url: str | None = None, file_url: str | None = None
) -> None:
    """A bootstrap PXE build needs a URL: refused before minutes of package installs, not after."""
    if target.format is ImageFormat.ISO or config.initramfs(OutputKind.PXE) is not InitramfsMode.BOOTSTRAP:
        return
    media = config.media(OutputKind.PXE)
    if not (base_url or file_url or media.base_url or media.file_url):
        raise UsageError(
            f"{config.source}: pxe.initramfsType is bootstrap but no bootstrap URL is given: the "
            "booted initrd would not know where to download the ISO from",
            hint="set pxe.bootstrapBaseUrl (or pxe.bootstrapFileUrl), or pass --base-url/--file-url",
        )


__all__ = [
    "Live",
    "OutputTarget",
    "apply_os",
    "build_from_config",
    "check_bootstrap_url",
    "configure",
    "output_target",
    "prepare_output",
    "set_selinux_mode",
    "write_configured",
    "write_os_file",
]
