"""The content digest of an input image: what cached build products are keyed by.

A product built from an image is valid for any file with the same bytes, wherever it lies, so
the cache is keyed by content: the SHA-256 of the image's data (a sparse file is read by its
data extents, ``SEEK_DATA``/``SEEK_HOLE``, and the holes enter the digest as their offsets: a
2 GiB raw disk with 300 MB of data costs 300 MB of reading).

Hashing a multi-GB image on every build would cost seconds, so the digest is remembered by the
file's identity -- device, inode, size, modification and change time (``ctime`` cannot be set by
a user: an image changed in place always looks new) -- in the process and in the artifact cache
(kind ``identity``), like git's index or ccache's direct mode.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import tempfile
import threading
from pathlib import Path

from liveos.cache import ArtifactCache, cache_key
from liveos.errors import UsageError

log = logging.getLogger("liveos")

#: Bumped when the way a digest is computed changes (old memos are then ignored).
DIGEST_FORMAT = "liveos-image-digest-1"
IDENTITY_KIND = "identity"
_CHUNK = 1 << 20
_memo: dict[str, str] = {}
_lock = threading.Lock()


def file_identity(path: Path) -> str:
    """A key naming this version of the file (not its content): changes whenever it is written."""
    st = os.stat(path)
    resolved = str(Path(path).resolve())
    return cache_key(
        DIGEST_FORMAT, resolved, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns
    )


def image_digest(path: Path, cache: ArtifactCache | None = None) -> str:
    """The content digest of the image file ``path``, remembered by its identity (see the module
    docstring) in the process and, when given, in ``cache``."""
    identity = file_identity(path)
    with _lock:
        known = _memo.get(identity)
    if known is not None:
        return known
    if cache is not None:
        entry = cache.get(IDENTITY_KIND, identity)
        digest = entry.meta.get("sha256") if entry is not None else None
        if isinstance(digest, str) and len(digest) == 64:
            with _lock:
                _memo[identity] = digest
            return digest
    digest = sparse_sha256(path)
    if file_identity(path) != identity:  # written while being read: do not remember either
        log.warning("%s changed while liveos read it; its products will not be reused", path)
        return digest
    with _lock:
        _memo[identity] = digest
    if cache is not None:
        _remember(cache, identity, digest)
    return digest


def _remember(cache: ArtifactCache, identity: str, digest: str) -> None:
    """Store the digest as the metadata of an empty artifact (the cache stores files)."""
    with tempfile.NamedTemporaryFile(prefix="liveos-identity-") as empty:
        cache.put(IDENTITY_KIND, identity, Path(empty.name), {"sha256": digest})


def sparse_sha256(path: Path) -> str:
    """SHA-256 over the file's size and each data extent (offset, length, bytes), in order."""
    h = hashlib.sha256(f"{DIGEST_FORMAT}\n".encode())
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(f"cannot read the input image {path}: {exc.strerror}", path=path) from None
    try:
        size = os.fstat(fd).st_size
        h.update(f"{size}\n".encode())
        for start, end in _data_extents(fd, size):
            h.update(f"{start}+{end - start}\n".encode())
            offset = start
            while offset < end:
                chunk = os.pread(fd, min(_CHUNK, end - offset), offset)
                if not chunk:
                    raise UsageError(f"{path} shrank while liveos read it", path=path)
                h.update(chunk)
                offset += len(chunk)
    finally:
        os.close(fd)
    return h.hexdigest()


def _data_extents(fd: int, size: int) -> list[tuple[int, int]]:
    """(start, end) of the data regions; the whole file if the filesystem cannot tell."""
    extents = []
    offset = 0
    try:
        while offset < size:
            try:
                start = os.lseek(fd, offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # only a hole is left
                    break
                raise
            end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
            extents.append((start, end))
            offset = end
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
            raise
        return [(0, size)] if size else []
    return extents
