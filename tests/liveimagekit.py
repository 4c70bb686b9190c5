"""Small crafted disk images that go through the *whole* liveos pipeline in seconds, plus checks
that a build left nothing behind.

:func:`live_image` builds a GPT disk (FAT ESP + ext4 root) holding everything liveos looks for:
shim/grub PE stubs, a grub.cfg, a kernel, dracut's module dirs and a tiny ``dracut`` -- a shell
script run by the host's ``dash`` copied into the image -- so bootstrap mode runs its real chroot,
chroot mounts and mksquashfs, and full-os mode its real CPIO writer. Tests derive broken and
hostile variants by overriding files (``"->target"`` makes a symlink) or removing them.

:class:`AccessWatch` (inotify) proves that host canary files were never opened, read or written.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import shutil
import struct
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from tests.imagekit import PartSpec, make_disk, our_loops, our_mounts, pe_stub, write_tree

KVER = "6.1.0-crafted"
ROOT_UUID = "5a3e2c55-2b8e-4d9b-9a1c-0d6f3c1e7a01"
ESP_VOLID = "ABCD1234"
FSTAB = f"UUID={ROOT_UUID} / ext4 defaults 0 1\nUUID=ABCD-1234 /boot/efi vfat umask=0077 0 2\n"
GRUB_CFG = (
    "set timeout=1\n"
    f"search --no-floppy --fs-uuid --set=root {ROOT_UUID}\n"
    "menuentry 'crafted image' {\n"
    f"\tlinux /boot/vmlinuz-{KVER} root=UUID={ROOT_UUID} ro\n"
    f"\tinitrd /boot/initramfs-{KVER}.img\n"
    "}\n"
)
#: The image's "dracut": writes a small initrd to its last argument, like dracut does.
FAKE_DRACUT = '#!/bin/sh\nfor a in "$@"; do out=$a; done\necho "initrd built inside the image" > "$out"\n'
SHIM = pe_stub() + b"IMAGE-SHIM"
GRUB = pe_stub() + b"IMAGE-GRUB"
KERNEL = b"IMAGE-KERNEL\n"
EXECUTABLES = ("/usr/bin/dracut", "/bin/sh", "/usr/lib/systemd/systemd")


@functools.cache
def _shell_files() -> dict[str, bytes]:
    """The host's /bin/sh (dash) and the libraries it loads, at the same paths in the image."""
    files = {"/bin/sh": Path("/bin/sh").resolve().read_bytes()}
    out = subprocess.run(["ldd", "/bin/sh"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        words = line.split()
        lib = words[2] if "=>" in words and len(words) > 2 else words[0]
        if lib.startswith("/"):
            files[lib] = Path(lib).resolve().read_bytes()
    return files


def root_files() -> dict[str, str | bytes]:
    """The root filesystem of a well-formed crafted image (image path -> content)."""
    files: dict[str, str | bytes] = {
        "/etc/fstab": FSTAB,
        "/etc/os-release": 'ID=crafted\nVERSION_ID="1"\n',
        "/etc/motd": "IMAGE-MOTD\n",
        "/usr/share/marker": "IMAGE-ROOT\n",
        "/boot/grub2/grub.cfg": GRUB_CFG,
        f"/boot/vmlinuz-{KVER}": KERNEL,
        f"/boot/initramfs-{KVER}.img": b"original initrd\n",
        f"/lib/modules/{KVER}/modules.dep": "",
        "/usr/lib/dracut/modules.d/90dmsquash-live/module-setup.sh": "",
        "/usr/lib/dracut/modules.d/90livenet/module-setup.sh": "",
        "/usr/bin/dracut": FAKE_DRACUT,
        "/usr/lib/systemd/systemd": "#!/bin/sh\n",
    }
    files.update(_shell_files())
    return files


def esp_files() -> dict[str, str | bytes]:
    return {"/EFI/BOOT/BOOTX64.EFI": SHIM, "/EFI/BOOT/grubx64.efi": GRUB}


def build_tree(root: Path, files: Mapping[str, str | bytes], dirs: Iterable[str] = ()) -> Path:
    """Write ``files`` under ``root`` (``"->x"`` = symlink), the usual empty dirs, and ``dirs``."""
    write_tree(root, files)
    for name in (*EXECUTABLES, *_shell_files()):
        path = root / name.lstrip("/")
        if path.is_file() and not path.is_symlink():
            path.chmod(0o755)
    for name in ("boot/efi", "proc", "sys", "dev", "run", "tmp", "var/tmp", *dirs):
        path = root / name.lstrip("/")
        if not os.path.lexists(path):
            path.mkdir(parents=True)
    return root


def live_image(
    work: Path,
    name: str = "crafted",
    *,
    root: Mapping[str, str | bytes] | None = None,
    remove: Sequence[str] = (),
    esp: Mapping[str, str | bytes] | None = None,
    with_esp: bool = True,
    prepare: Callable[[Path], None] | None = None,
) -> Path:
    """A raw GPT disk: FAT ESP (``esp`` files, default shim + grub) + ext4 root.

    The root holds the default files minus ``remove``, then ``root`` on top; ``prepare`` may add
    what files cannot say (device nodes, sparse files) to the root tree before the disk is made.
    """
    dropped = set(remove)
    files = {path: content for path, content in root_files().items() if path not in dropped}
    files.update(root or {})
    tree = build_tree(work / f"{name}-root", files)
    if prepare is not None:
        prepare(tree)
    specs = [PartSpec(64, "ext4", tree, fs_uuid=ROOT_UUID, name="root")]
    if with_esp:
        esp_tree = write_tree(work / f"{name}-esp", esp if esp is not None else esp_files())
        specs.insert(0, PartSpec(32, "vfat", esp_tree, fs_uuid=ESP_VOLID, esp=True, name="ESP"))
    disk = make_disk(work / f"{name}.raw", specs)
    shutil.rmtree(tree)
    return disk.path


def leftovers(image: Path, workdir: Path, out: Path | None = None) -> list[str]:
    """Everything a finished (or failed) build must not leave behind; empty when clean."""
    found = [f"mount: {line.strip()}" for line in our_mounts(str(workdir))]
    found += [f"loop: {line}" for line in our_loops(image, workdir)]
    if workdir.is_dir():
        found += [f"work dir entry: {p}" for p in workdir.iterdir()]
    if out is not None:
        if out.exists():
            found.append(f"output exists: {out}")
        found += [
            f"temp next to output: {p}"
            for p in out.parent.iterdir()
            if p.name.startswith((f".{out.name}.tmp", "liveos-media-"))
        ]
    return found


# -- inotify: prove host files were never touched --------------------------------------------
IN_ACCESS, IN_MODIFY, IN_ATTRIB, IN_CLOSE_WRITE = 0x1, 0x2, 0x4, 0x8
IN_OPEN, IN_MOVED_FROM, IN_MOVED_TO, IN_CREATE, IN_DELETE = 0x20, 0x40, 0x80, 0x100, 0x200
IN_DELETE_SELF, IN_MOVE_SELF = 0x400, 0x800
WATCHED = (
    IN_ACCESS | IN_MODIFY | IN_ATTRIB | IN_CLOSE_WRITE | IN_OPEN | IN_MOVED_FROM | IN_MOVED_TO
    | IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE_SELF
)  # fmt: skip
IN_NONBLOCK, IN_CLOEXEC = 0o4000, 0o2000000


class AccessWatch:
    """inotify watches on every file and directory under ``top``: any open, read or write is an event."""

    def __init__(self, top: Path) -> None:
        self._libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._fd = self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        self._names: dict[int, str] = {}
        for path in [top, *sorted(top.rglob("*"))]:
            wd = self._libc.inotify_add_watch(self._fd, os.fsencode(path), WATCHED)
            if wd < 0:
                raise OSError(ctypes.get_errno(), f"inotify_add_watch {path}")
            self._names[wd] = str(path)

    def events(self) -> list[str]:
        """Events seen so far (``path[/name]: mask``), then stop watching."""
        found: list[str] = []
        try:
            while True:
                try:
                    data = os.read(self._fd, 65536)
                except BlockingIOError:
                    break
                offset = 0
                while offset < len(data):
                    wd, mask, _cookie, length = struct.unpack_from("iIII", data, offset)
                    name = data[offset + 16 : offset + 16 + length].rstrip(b"\0").decode()
                    offset += 16 + length
                    if mask & WATCHED:
                        found.append(f"{self._names.get(wd, wd)}{'/' + name if name else ''}: {mask:#x}")
        finally:
            os.close(self._fd)
        return found
