"""The subset of Image Customizer's config that makes sense for live media, as frozen dataclasses.

Field names, types and defaults follow the reference tool's API (``imagecustomizerapi``: ``iso``,
``pxe``, ``os``, ``scripts``, ``output``); see docs/usage.md, "Image Customizer configs". Every
key of its schema that liveos does not do for live media (``storage``, ``os.users``,
``os.bootloader``, ``os.uki``, ...) is refused with the key and its line, never ignored; an
unknown key, a wrong type or a bad value is a :class:`~liveos.errors.UsageError` of the same
form. Values are checked here, with the line at hand, by the same checks the library applies
later (kernel arguments, media destinations, package, unit and host names, bootstrap URLs).
Relative ``source`` and script ``path`` values resolve against the config file's folder.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TypeVar

from liveos.customizer.yamlmodel import Fields, Value, compose, from_python, read_config_text
from liveos.errors import UsageError
from liveos.mediafiles import MediaFile
from liveos.packages import Operation, check_names
from liveos.pxe.urls import BootstrapUrl
from liveos.rootfs import check_hostname, check_units
from liveos.settings import InitramfsMode, KdumpBootFiles, OutputKind, validate_kernel_args

T = TypeVar("T")
E = TypeVar("E", bound=enum.Enum)

#: The ISO name in a PXE bundle whose config gives ``bootstrapBaseUrl`` (the reference's name).
BASE_URL_ISO_NAME = "image.iso"
#: Largest permission bits a file may get (the reference tool accepts permission bits only).
MAX_PERMISSIONS = 0o777


class ImageFormat(enum.StrEnum):
    """``output.image.format`` values liveos builds (the reference's disk formats are not live media)."""

    ISO = "iso"
    PXE_DIR = "pxe-dir"
    PXE_TAR = "pxe-tar"

    @property
    def kind(self) -> OutputKind:
        """ISO or PXE."""
        return OutputKind.ISO if self is ImageFormat.ISO else OutputKind.PXE


class SELinuxMode(enum.StrEnum):
    """``os.selinux.mode``: the image's SELinux mode after customisation."""

    DISABLED = "disabled"
    PERMISSIVE = "permissive"
    ENFORCING = "enforcing"
    FORCE_ENFORCING = "force-enforcing"  #: enforcing, and ``enforcing=1`` on the command line


@dataclass(frozen=True)
class OsFile:
    """One ``os.additionalFiles`` entry: a host ``source`` or ``content`` at ``destination`` in
    the OS tree; ``permissions`` None keeps the source's bits (0644 for content)."""

    destination: str
    source: Path | None = None
    content: bytes | None = None
    permissions: int | None = None


@dataclass(frozen=True)
class Packages:
    """``os.packages``, applied in the reference's order: remove, update all, install, update."""

    remove: tuple[str, ...] = ()
    update_existing: bool = False
    install: tuple[str, ...] = ()
    update: tuple[str, ...] = ()


@dataclass(frozen=True)
class Script:
    """A ``scripts.*`` entry: a host file ``path`` (under the config's folder) or ``content``."""

    path: Path | None = None
    content: str | None = None
    interpreter: str | None = None
    arguments: tuple[str, ...] = ()
    environment: tuple[tuple[str, str], ...] = ()
    name: str | None = None

    @property
    def title(self) -> str:
        """How logs and errors name the script."""
        return self.name or (self.path.name if self.path is not None else "inline script")


@dataclass(frozen=True)
class OsConfig:
    """The ``os:`` section: changes to the OS tree before the media are built."""

    hostname: str | None = None
    packages: Packages = Packages()
    selinux: SELinuxMode | None = None
    kernel_args: tuple[str, ...] = ()
    files: tuple[OsFile, ...] = ()
    enable_services: tuple[str, ...] = ()
    disable_services: tuple[str, ...] = ()


@dataclass(frozen=True)
class MediaConfig:
    """An ``iso:`` or ``pxe:`` section: what goes on the media besides the OS."""

    kernel_args: tuple[str, ...] = ()
    files: tuple[MediaFile, ...] = ()
    initramfs: InitramfsMode | None = None  #: None: the output's default
    kdump_boot_files: KdumpBootFiles | None = None
    base_url: str | None = None  #: pxe ``bootstrapBaseUrl``
    file_url: str | None = None  #: pxe ``bootstrapFileUrl``


@dataclass(frozen=True)
class Config:
    """A parsed config. ``folder``: where relative paths of the config resolved from."""

    folder: Path
    source: str = "<mapping>"
    iso: MediaConfig | None = None
    pxe: MediaConfig | None = None
    os: OsConfig | None = None
    post_customization: tuple[Script, ...] = ()
    finalize_customization: tuple[Script, ...] = ()
    output_format: ImageFormat | None = None
    output_path: Path | None = None
    preview_features: tuple[str, ...] = field(default=())

    def media(self, kind: OutputKind) -> MediaConfig:
        """The section the output ``kind`` uses (``iso:`` or ``pxe:``; absent: defaults)."""
        section = self.iso if kind is OutputKind.ISO else self.pxe
        return section if section is not None else MediaConfig()

    def initramfs(self, kind: OutputKind) -> InitramfsMode:
        """The mode for ``kind``: the section's ``initramfsType``, else the reference's default
        for a disk image (bootstrap for ISO, full-os for PXE)."""
        mode = self.media(kind).initramfs
        if mode is not None:
            return mode
        return InitramfsMode.BOOTSTRAP if kind is OutputKind.ISO else InitramfsMode.FULL_OS

    def default_kind(self) -> OutputKind:
        """The output a config is for when nothing else says: its ``output.image.format``, else
        PXE if it has only a ``pxe:`` section, else ISO."""
        if self.output_format is not None:
            return self.output_format.kind
        return OutputKind.PXE if self.pxe is not None and self.iso is None else OutputKind.ISO

    @property
    def changes_os(self) -> bool:
        """Whether the config changes the OS tree (an ``os:`` part or scripts)."""
        return self.os is not None or bool(self.post_customization or self.finalize_customization)


# -- refused keys: what liveos does not do for live media, and why ----------------------------
_REFUSED_TOP = {
    "storage": "live media have no disk layout (the OS runs from the media)",
    "input": "give the input image on the command line or to LiveOS.open()",
    "baseConfigs": "config chains are not supported; merge the configs into one file",
}
_REFUSED_OS = {
    "additionalDirs": "add the files with additionalFiles, or create the folders in a script",
    "users": "add users with a postCustomization script (useradd)",
    "groups": "add groups with a postCustomization script (groupadd)",
    "modules": "configure kernel modules with additionalFiles in /etc/modules-load.d or /etc/modprobe.d",
    "overlays": "live media already run on an overlay",
    "bootloader": "liveos writes the media's boot loader itself",
    "uki": "live media boot a kernel and an initrd, not a UKI",
    "imageHistory": "liveos keeps no image history",
}
_REFUSED_PACKAGES = {
    "installLists": "list the packages under install",
    "removeLists": "list the packages under remove",
    "updateLists": "list the packages under update",
    "snapshotTime": "package snapshots are not supported",
    "removePackageManager": "the package manager stays in the image",
}
_REFUSED_OUTPUT = {
    "artifacts": "liveos writes no separate artifacts",
    "selinuxPolicyPath": "liveos does not export the SELinux policy",
}
_REFUSED_IMAGE = {"cosi": "COSI is a disk format, not live media"}
#: The reference tool's preview features (they gate features there; liveos accepts the names).
PREVIEW_FEATURES = (
    "uki",
    "output-artifacts",
    "inject-files",
    "reinitialize-verity",
    "package-snapshot-time",
    "kdump-boot-files",
    "preview-distro-version",
    "base-configs",
    "input-image-oci",
    "output-selinux-policy",
    "btrfs",
    "create",
    "unsupported-distro-version",
    "tools-dir",
    "remove-package-manager",
)


# -- loading ------------------------------------------------------------------------------------
def load_config(config: str | os.PathLike[str] | Mapping[str, object] | Config) -> Config:
    """A config from a YAML file, or from a mapping shaped like one (relative paths then resolve
    against the current folder). Any error is a UsageError naming the key path and the line."""
    if isinstance(config, Config):
        return config
    if isinstance(config, Mapping):
        return parse_config(from_python(config), Path.cwd())
    path = Path(config)
    if path.is_dir():
        raise UsageError(f"the config {path} is a folder, not a YAML file", path=path)
    text = read_config_text(path)
    return parse_config(compose(text, str(path)), path.absolute().parent)


def parse_config(root: Value, folder: Path) -> Config:
    """The :class:`Config` of a composed document; relative paths resolve against ``folder``."""
    top = root.as_mapping()
    top.check(("iso", "pxe", "os", "scripts", "output", "previewFeatures"), _REFUSED_TOP)
    features = _optional(top, "previewFeatures", lambda v: _preview_features(v))
    scripts = top.get("scripts")
    post: tuple[Script, ...] = ()
    finalize: tuple[Script, ...] = ()
    if scripts is not None:
        fields = scripts.as_mapping()
        fields.check(("postCustomization", "finalizeCustomization"), {})
        post = _optional(fields, "postCustomization", lambda v: _scripts(v, folder)) or ()
        finalize = _optional(fields, "finalizeCustomization", lambda v: _scripts(v, folder)) or ()
    output_format, output_path = _output(top.get("output"), folder)
    iso = _optional(top, "iso", lambda v: _media(v, folder, pxe=False))
    pxe = _optional(top, "pxe", lambda v: _media(v, folder, pxe=True))
    if "iso" in top and iso is None:
        iso = MediaConfig()  # ``iso:`` with nothing under it still names the section
    if "pxe" in top and pxe is None:
        pxe = MediaConfig()
    os_config = _optional(top, "os", lambda v: _os(v, folder))
    if "os" in top and os_config is None:
        os_config = OsConfig()
    return Config(
        folder=folder,
        source=root.source,
        iso=iso,
        pxe=pxe,
        os=os_config,
        post_customization=post,
        finalize_customization=finalize,
        output_format=output_format,
        output_path=output_path,
        preview_features=features or (),
    )


def _optional(fields: Fields, name: str, parse: Callable[[Value], T]) -> T | None:
    value = fields.get(name)
    return None if value is None else parse(value)


def _checked(value: Value, check: Callable[[], T]) -> T:
    """``check()``, its UsageError reworded to name the value's key path and line."""
    try:
        return check()
    except UsageError as exc:
        value.fail(exc.message, hint=exc.hint)


def _enum(value: Value, kind: type[E]) -> E:
    text = value.as_str()
    for member in kind:
        if member.value == text:
            return member
    known = ", ".join(str(m.value) for m in kind)
    value.fail(f"invalid value {text!r}", hint=f"one of {known}")


def _preview_features(value: Value) -> tuple[str, ...]:
    names = []
    for item in value.as_list():
        name = item.as_str()
        if name not in PREVIEW_FEATURES:
            item.fail(
                f"unknown preview feature {name!r}",
                hint=f"the reference tool's: {', '.join(PREVIEW_FEATURES)}",
            )
        names.append(name)
    return tuple(names)


def _kernel_args(value: Value) -> tuple[str, ...]:
    fields = value.as_mapping()
    fields.check(("extraCommandLine",), {})
    args = fields.get("extraCommandLine")
    if args is None:
        return ()
    out: list[str] = []
    for item in args.as_list():
        arg = item.as_str()
        if arg == "":
            item.fail("a kernel argument must not be empty")
        out.extend(_checked(item, lambda arg=arg: validate_kernel_args([arg])))  # type: ignore[misc]
    return tuple(out)


def _permissions(value: Value) -> int:
    text = value.scalar_text()
    if not text or any(c not in "01234567" for c in text):
        value.fail(f"invalid permissions {text!r}: octal digits expected", hint='e.g. "644" or "755"')
    mode = int(text, 8)
    if mode > MAX_PERMISSIONS:
        value.fail(f"invalid permissions {text!r}: only permission bits (up to 777) may be set")
    return mode


def _source(value: Value, folder: Path) -> Path:
    text = value.as_str()
    if not text:
        value.fail("the source path is empty")
    path = folder / text
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a regular file"
        value.fail(
            f"the source file {path} {what}", hint="relative sources resolve against the config's folder"
        )
    return path


def _file_fields(value: Value, folder: Path) -> tuple[str, Path | None, bytes | None, int | None]:
    fields = value.as_mapping()
    fields.check(("destination", "source", "content", "permissions"), {})
    dest_value = fields.get("destination")
    if dest_value is None:
        value.fail("destination path must not be empty")
    destination = dest_value.as_str()
    if not destination:
        dest_value.fail("destination path must not be empty")
    source_value = fields.get("source")
    # content "" is a file with no bytes: only an absent key (or null) is "no content"
    content_value = fields.items["content"][1] if "content" in fields.items else None
    if content_value is not None and content_value.is_null:
        content_value = None
    if source_value is not None and content_value is not None:
        fields.key("content").fail("cannot specify both 'source' and 'content'")
    if source_value is None and content_value is None:
        value.fail("must specify either 'source' or 'content'")
    source = _source(source_value, folder) if source_value is not None else None
    content = content_value.as_str().encode() if content_value is not None else None
    permissions = _optional(fields, "permissions", _permissions)
    return destination, source, content, permissions


def _media_file(value: Value, folder: Path) -> MediaFile:
    destination, source, content, permissions = _file_fields(value, folder)
    dest_value = value.as_mapping().get("destination")
    assert dest_value is not None
    if permissions is None and source is not None:  # the reference copies the source's bits
        permissions = stat.S_IMODE(source.stat().st_mode) & MAX_PERMISSIONS
    mode = permissions
    return _checked(dest_value, lambda: MediaFile(destination, source=source, content=content, mode=mode))


def _os_file(value: Value, folder: Path) -> OsFile:
    destination, source, content, permissions = _file_fields(value, folder)
    dest_value = value.as_mapping().get("destination")
    assert dest_value is not None
    if not destination.startswith("/"):
        dest_value.fail(f"destination {destination!r} is not absolute", hint="e.g. /etc/motd")
    if ".." in PurePosixPath(destination).parts or destination.endswith("/"):
        dest_value.fail(f"destination {destination!r} must name a file inside the OS tree (no '..')")
    return OsFile(destination, source, content, permissions)


def _media(value: Value, folder: Path, *, pxe: bool) -> MediaConfig:
    fields = value.as_mapping()
    known = ["kernelCommandLine", "additionalFiles", "initramfsType", "kdumpBootFiles"]
    if pxe:
        known += ["bootstrapBaseUrl", "bootstrapFileUrl"]
    fields.check(
        known,
        {}
        if pxe
        else {
            "bootstrapBaseUrl": "bootstrap URLs belong under pxe:",
            "bootstrapFileUrl": "bootstrap URLs belong under pxe:",
        },
    )
    args = _optional(fields, "kernelCommandLine", _kernel_args) or ()
    files_value = fields.get("additionalFiles")
    files = tuple(_media_file(v, folder) for v in files_value.as_list()) if files_value is not None else ()
    seen: dict[str, int] = {}
    for index, media_file in enumerate(files):
        key = media_file.destination.lower()
        if key in seen:
            assert files_value is not None
            files_value.as_list()[index].fail(
                f"destination {media_file.destination} is given twice (also at index {seen[key]})"
            )
        seen[key] = index
    mode = _optional(fields, "initramfsType", lambda v: _enum(v, InitramfsMode))
    kdump = _optional(fields, "kdumpBootFiles", lambda v: _enum(v, KdumpBootFiles))
    base_url = _optional(fields, "bootstrapBaseUrl", lambda v: v.as_str())
    file_url = _optional(fields, "bootstrapFileUrl", lambda v: v.as_str())
    if base_url is not None and file_url is not None:
        fields.key("bootstrapFileUrl").fail(
            "cannot specify both 'bootstrapBaseUrl' and 'bootstrapFileUrl' at the same time"
        )
    for name, url in (("bootstrapBaseUrl", base_url), ("bootstrapFileUrl", file_url)):
        if url is None:
            continue
        url_value = fields.get(name)
        assert url_value is not None
        if mode is not InitramfsMode.BOOTSTRAP:
            if mode is None:
                url_value.fail(
                    "a bootstrap URL needs initramfsType: bootstrap (pxe's default is full-os, "
                    "which downloads nothing)"
                )
            url_value.fail(
                "cannot specify either 'bootstrapBaseUrl' or 'bootstrapFileUrl' when the "
                f"initramfs type is set to '{mode}'"
            )
        if name == "bootstrapBaseUrl":
            _checked(url_value, lambda url=url: BootstrapUrl.join(url, BASE_URL_ISO_NAME))  # type: ignore[misc]
        else:
            _checked(url_value, lambda url=url: BootstrapUrl.parse(url))  # type: ignore[misc]
    return MediaConfig(args, files, mode, kdump, base_url, file_url)


def _names(value: Value, check: Callable[[list[str]], object]) -> tuple[str, ...]:
    out = []
    for item in value.as_list():
        name = item.as_str()
        _checked(item, lambda name=name: check([name]))  # type: ignore[misc]
        out.append(name)
    return tuple(out)


def _packages(value: Value) -> Packages:
    fields = value.as_mapping()
    fields.check(("remove", "updateExistingPackages", "install", "update"), _REFUSED_PACKAGES)

    def names(key: str, operation: Operation) -> tuple[str, ...]:
        found = fields.get(key)
        if found is None:
            return ()
        return _names(found, lambda n: check_names(n, operation=operation))

    update_all = _optional(fields, "updateExistingPackages", lambda v: v.as_bool()) or False
    return Packages(
        remove=names("remove", Operation.REMOVE),
        update_existing=update_all,
        install=names("install", Operation.INSTALL),
        update=names("update", Operation.UPDATE),
    )


def _os(value: Value, folder: Path) -> OsConfig:
    fields = value.as_mapping()
    fields.check(
        ("hostname", "packages", "selinux", "kernelCommandLine", "additionalFiles", "services"), _REFUSED_OS
    )
    hostname_value = fields.get("hostname")
    hostname = None
    if hostname_value is not None:
        name = hostname_value.as_str()
        hostname = _checked(hostname_value, lambda: check_hostname(name))
    selinux = None
    selinux_value = fields.get("selinux")
    if selinux_value is not None:
        selinux_fields = selinux_value.as_mapping()
        selinux_fields.check(("mode",), {})
        selinux = _optional(selinux_fields, "mode", lambda v: _enum(v, SELinuxMode))
    files_value = fields.get("additionalFiles")
    files = tuple(_os_file(v, folder) for v in files_value.as_list()) if files_value is not None else ()
    enable: tuple[str, ...] = ()
    disable: tuple[str, ...] = ()
    services = fields.get("services")
    if services is not None:
        service_fields = services.as_mapping()
        service_fields.check(("enable", "disable"), {})
        enable = _optional(service_fields, "enable", lambda v: _names(v, check_units)) or ()
        disable = _optional(service_fields, "disable", lambda v: _names(v, check_units)) or ()
    return OsConfig(
        hostname=hostname,
        packages=_optional(fields, "packages", _packages) or Packages(),
        selinux=selinux,
        kernel_args=_optional(fields, "kernelCommandLine", _kernel_args) or (),
        files=files,
        enable_services=enable,
        disable_services=disable,
    )


def _scripts(value: Value, folder: Path) -> tuple[Script, ...]:
    return tuple(_script(item, folder) for item in value.as_list())


def _script(value: Value, folder: Path) -> Script:
    fields = value.as_mapping()
    fields.check(("path", "content", "interpreter", "arguments", "environmentVariables", "name"), {})
    path_value = fields.get("path")
    content_value = fields.get("content")
    if path_value is not None and content_value is not None:
        fields.key("content").fail("path and content may not both have a value")
    if path_value is None and content_value is None:
        value.fail("either path or content must have a value")
    path = None
    if path_value is not None:
        text = path_value.as_str()
        relative = PurePosixPath(text)
        if not text or relative.is_absolute() or ".." in relative.parts:
            path_value.fail(
                f"the script {text!r} is not under the config's folder",
                hint="a script path is relative to the config file and stays below its folder",
            )
        path = _source(path_value, folder)
    content = content_value.as_str() if content_value is not None else None
    interpreter = _optional(fields, "interpreter", lambda v: v.as_str())
    if interpreter is not None and not interpreter.strip():
        fields.key("interpreter").fail("the interpreter must not be empty")
    environment: list[tuple[str, str]] = []
    env_value = fields.get("environmentVariables")
    if env_value is not None:
        env_fields = env_value.as_mapping()
        for key in env_fields:
            item = env_fields.items[key][1]
            if not key or "=" in key or "\x00" in key:
                env_fields.key(key).fail(f"invalid environment variable name {key!r}")
            environment.append((key, item.as_str()))
    return Script(
        path=path,
        content=content,
        interpreter=interpreter,
        arguments=_optional(fields, "arguments", lambda v: v.as_str_list()) or (),
        environment=tuple(environment),
        name=_optional(fields, "name", lambda v: v.as_str()),
    )


def _output(value: Value | None, folder: Path) -> tuple[ImageFormat | None, Path | None]:
    if value is None:
        return None, None
    fields = value.as_mapping()
    fields.check(("image",), _REFUSED_OUTPUT)
    image = fields.get("image")
    if image is None:
        return None, None
    image_fields = image.as_mapping()
    image_fields.check(("format", "path"), _REFUSED_IMAGE)
    format_value = image_fields.get("format")
    image_format = None
    if format_value is not None:
        text = format_value.as_str()
        if text not in {f.value for f in ImageFormat}:
            format_value.fail(
                f"liveos builds live media, not {text!r}",
                hint=f"one of {', '.join(f.value for f in ImageFormat)}",
            )
        image_format = ImageFormat(text)
    path_value = image_fields.get("path")
    path = None
    if path_value is not None:
        text = path_value.as_str()
        if not text:
            path_value.fail("the output path is empty")
        path = folder / text
    return image_format, path


__all__ = [
    "BASE_URL_ISO_NAME",
    "Config",
    "ImageFormat",
    "MediaConfig",
    "OsConfig",
    "OsFile",
    "Packages",
    "SELinuxMode",
    "Script",
    "load_config",
    "parse_config",
]
