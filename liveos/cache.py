"""A content-keyed cache of build artifacts on disk (initrds, squashfs images, CPIO archives),
shared by every liveos process on the host.

Keys come from :func:`cache_key`: the sha256 of everything that determines an artifact (the tool
version, the options, the digest of the tree it was built from). :class:`ArtifactCache` keeps one
artifact per ``(kind, key)``::

    <root>/.lock                  flock: held briefly around every change, shared while reading
    <root>/.tmp-<pid>-<n>/        an entry being written (renamed into place when complete)
    <root>/<kind>/<key>/artifact  the artifact (read-only; a hard link to the caller's file with link=True)
    <root>/<kind>/<key>/meta.json {"version", "kind", "key", "size", "created", "meta": caller's}

An entry's last use is the modification time of its ``meta.json`` (touched on each hit, without
rewriting it); :meth:`ArtifactCache.evict` removes the least recently used entries until the
artifacts' bytes fit ``max_bytes``, after every :meth:`~ArtifactCache.put`.

Guarantees: readers never see a half-written entry (entries appear by one ``rename``); a reader
racing an eviction gets ``None``, not an exception -- :meth:`~ArtifactCache.retrieve` copies (or
hard-links) an artifact out while it holds the entry, so callers never depend on an entry
surviving; a killed writer leaves only its ``.tmp-<pid>-<n>`` directory, which the next writer
or eviction removes once that process is gone (so processes sharing a cache must share a PID
namespace: else a live writer's directory looks orphaned, and its put returns None); an entry
with a missing, corrupt or mismatching ``meta.json`` is absent, and removed by the next
eviction; nothing inside the cache is reached through a symlink (every name is opened
``O_NOFOLLOW`` below a directory fd, so a planted link makes its entry invalid, never a way out
of the root).

**The cache never fails a build.** A cache that cannot be created, locked or written (read-only
filesystem, full disk, a root owned by another user or writable by others) logs a warning and
degrades: :meth:`~ArtifactCache.get` and :meth:`~ArtifactCache.retrieve` return ``None`` (build
it), :meth:`~ArtifactCache.put` returns ``None`` (the caller keeps using its own file). Only
programming errors raise: an invalid kind or key (:class:`~liveos.errors.UsageError`), a
``meta`` that is not JSON (``TypeError``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import itertools
import json
import logging
import os
import re
import shutil
import stat
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from types import MappingProxyType
from typing import Any

from liveos.atomic import atomic_output, sweep_stale
from liveos.errors import UsageError

log = logging.getLogger("liveos")

ENV_CACHE_DIR = "LIVEOS_CACHE_DIR"  #: overrides :func:`default_cache_dir`
ENV_CACHE_MAX = "LIVEOS_CACHE_MAX"  #: overrides :func:`default_max_bytes` (bytes, or with K/M/G/T)
DEFAULT_MAX_BYTES = 8 << 30  #: 8 GiB
ARTIFACT_NAME = "artifact"  #: the artifact's file name inside its entry
META_NAME = "meta.json"  #: the entry's metadata inside its entry
META_VERSION = 1

_LOCK = ".lock"
_TMP = ".tmp-"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,199}")
_PREFIX = re.compile(r"[A-Za-z0-9._+-]{0,200}")
_MAX_META_BYTES = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
#: A hard link is impossible (another filesystem, protected_hardlinks, too many links): copy instead.
_NO_LINK = (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP)
#: copy_file_range cannot do it (another filesystem, an old kernel): plain reads and writes instead.
_NO_COPY_RANGE = (errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP)

_tmp_ids = itertools.count()


# ---------------------------------------------------------------------------------------------
# Keys and defaults
# ---------------------------------------------------------------------------------------------


def cache_key(*parts: object) -> str:
    """The sha256 hex of ``parts`` in a canonical JSON encoding: ``str``, ``int``, ``bool``,
    ``None``, lists and tuples (the same), mappings with ``str`` keys (order does not matter),
    paths (as their string). Types stay distinct (``"1"`` is not ``1``, ``True`` is not ``1``);
    anything else (floats, bytes, objects) is a ``TypeError``."""
    text = json.dumps([_canonical(part) for part in parts], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _canonical(value: object) -> object:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)  # a str subclass (an enum) as its plain value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, list | tuple):
        return [_canonical(item) for item in value]
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise TypeError(f"cache_key: mapping keys must be str, not {type(k).__name__}")
            out[str.__str__(k)] = _canonical(v)
        return out
    raise TypeError(f"cache_key: cannot encode a {type(value).__name__} canonically")


def default_cache_dir() -> Path:
    """Where the cache lives: ``$LIVEOS_CACHE_DIR``; else ``/var/cache/liveos`` for root; else
    ``$XDG_CACHE_HOME/liveos`` or ``~/.cache/liveos``."""
    value = os.environ.get(ENV_CACHE_DIR, "")
    if value:
        path = Path(value).expanduser()
        if not path.is_absolute():
            raise UsageError(
                f"{ENV_CACHE_DIR}={value!r} is not an absolute path", hint=f"set {ENV_CACHE_DIR}=/abs/dir"
            )
        return path
    if os.geteuid() == 0:
        return Path("/var/cache/liveos")
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec: a relative value is invalid, ignore it
        return Path(xdg) / "liveos"
    return Path.home() / ".cache" / "liveos"


_SIZE = re.compile(r"(\d+)(?:([KMGT])(?:I?B)?|B)?")


def parse_size(text: str) -> int | None:
    """Bytes of ``text``: a number, optionally with K, M, G or T (powers of 1024, ``8G`` =
    ``8GiB`` = ``8GB``; case-insensitive); None when it is not a size."""
    match = _SIZE.fullmatch(text.strip().upper())
    if match is None:
        return None
    return int(match.group(1)) << (10 * " KMGT".index(match.group(2) or " "))


def default_max_bytes() -> int:
    """The cache's size cap: ``$LIVEOS_CACHE_MAX`` (bytes, or with a K/M/G/T suffix: powers of
    1024, ``8G`` = ``8GiB``) else 8 GiB. A malformed value is a :class:`~liveos.errors.UsageError`."""
    value = os.environ.get(ENV_CACHE_MAX, "").strip()
    if not value:
        return DEFAULT_MAX_BYTES
    size = parse_size(value)
    if size is None:
        raise UsageError(
            f"{ENV_CACHE_MAX}={value!r} is not a size",
            hint=f"set {ENV_CACHE_MAX} to a number of bytes, optionally with K, M, G or T (e.g. 8G)",
        )
    return size


# ---------------------------------------------------------------------------------------------
# The cache
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CachedArtifact:
    """One cache entry: where its artifact is, and what was stored with it."""

    kind: str
    key: str
    path: Path  #: the artifact (in the cache: may vanish when another process evicts it)
    size: int  #: bytes of the artifact
    meta: Mapping[str, Any]  #: the caller's metadata, as given to :meth:`ArtifactCache.put`
    created: float  #: when it was stored (seconds since the epoch)
    last_used: float  #: when it was stored or last hit (seconds since the epoch)


class ArtifactCache:
    """An on-disk cache of build artifacts under ``root``, capped at ``max_bytes`` of artifacts,
    safe to share between processes. ``kind`` groups artifacts (``"initrd"``, ``"squashfs"``);
    ``key`` names one, usually :func:`cache_key` of its inputs. Kinds and keys are names of
    letters, digits and ``._+-`` (not starting with ``.``, ``_``, ``+`` or ``-``), at most 200.

    Callers that key an artifact by a *slot* and a *variant* (``"<slot>-<variant>"``: the same
    slot built from different trees) find the variants of a slot with :meth:`candidates`.
    Nothing is created before the first :meth:`put`.
    """

    def __init__(self, root: Path, max_bytes: int) -> None:
        if max_bytes < 0:
            raise UsageError(f"the cache size cap must not be negative (got {max_bytes})")
        self.root = Path(root)
        self.max_bytes = max_bytes
        self._warned = False

    @classmethod
    def default(cls) -> ArtifactCache:
        """The cache in :func:`default_cache_dir`, capped at :func:`default_max_bytes`."""
        return cls(default_cache_dir(), default_max_bytes())

    def __repr__(self) -> str:
        return f"ArtifactCache({str(self.root)!r}, max_bytes={self.max_bytes})"

    # -- reading --------------------------------------------------------------------------------

    def get(self, kind: str, key: str) -> CachedArtifact | None:
        """The entry ``kind``/``key``, marked as used; None if absent, invalid, or the cache is
        unusable. Its :attr:`~CachedArtifact.path` may vanish at any time (another process
        evicting): use :meth:`retrieve` to get a file of your own."""
        _check_name("kind", kind)
        _check_name("key", key)
        try:
            with self._root(create=False) as root_fd, self._locked(root_fd, exclusive=False):
                if root_fd is None:
                    return None
                with self._entry_fd(root_fd, kind, key) as entry_fd:
                    return None if entry_fd is None else self._load(entry_fd, kind, key, touch=True)
        except OSError as e:
            self._warn(f"reading {kind}/{key}", e)
            return None

    def retrieve(self, kind: str, key: str, dest: Path, *, link: bool = False) -> CachedArtifact | None:
        """Copy the entry's artifact to ``dest`` (atomically: a temporary name, then a rename) and
        return the entry, marked as used; None (and ``dest`` untouched) if it is absent or
        vanished meanwhile. ``link=True`` hard-links instead when the cache is on ``dest``'s
        filesystem: instant, but ``dest`` then *is* the cached file -- replace it, never write it
        in place. A ``dest`` in a missing directory, or naming a directory, is a
        :class:`~liveos.errors.UsageError` (as for any output)."""
        _check_name("kind", kind)
        _check_name("key", key)
        dest = Path(dest)
        src_fd: int | None = None
        try:
            with self._root(create=False) as root_fd, self._locked(root_fd, exclusive=False):
                if root_fd is None:
                    return None
                with self._entry_fd(root_fd, kind, key) as entry_fd:
                    found = None if entry_fd is None else self._load(entry_fd, kind, key, touch=True)
                    if found is None or entry_fd is None:
                        return None
                    if link and _link_out(entry_fd, dest):
                        return found
                    src_fd = os.open(ARTIFACT_NAME, _READ_FLAGS, dir_fd=entry_fd)
            # The entry may be evicted from here on: the open fd keeps its bytes readable.
            with atomic_output(dest) as out:
                _copy_data(src_fd, out.fileno(), found.size)
            return found
        except OSError as e:
            self._warn(f"retrieving {kind}/{key}", e)
            return None
        finally:
            if src_fd is not None:
                os.close(src_fd)

    def candidates(self, kind: str, prefix: str = "") -> list[CachedArtifact]:
        """The valid entries of ``kind`` whose key starts with ``prefix``, most recently used first
        (not marked as used: pick one, then :meth:`get` or :meth:`retrieve` it)."""
        _check_name("kind", kind)
        if _PREFIX.fullmatch(prefix) is None:
            raise UsageError(f"invalid cache key prefix {prefix!r}")
        found: list[CachedArtifact] = []
        try:
            with self._root(create=False) as root_fd, self._locked(root_fd, exclusive=False):
                if root_fd is None:
                    return []
                kind_fd = _open_dir(root_fd, kind)
                if kind_fd is None:
                    return []
                try:
                    for key in sorted(os.listdir(kind_fd)):
                        if key.startswith(prefix) and _NAME.fullmatch(key):
                            with self._entry_fd(root_fd, kind, key) as entry_fd:
                                entry = None if entry_fd is None else self._load(entry_fd, kind, key)
                            if entry is not None:
                                found.append(entry)
                finally:
                    os.close(kind_fd)
        except OSError as e:
            self._warn(f"listing {kind}", e)
        return sorted(found, key=lambda a: (-a.last_used, a.key))

    def size(self) -> int:
        """Bytes of the valid entries' artifacts."""
        try:
            with self._root(create=False) as root_fd, self._locked(root_fd, exclusive=False):
                entries = [] if root_fd is None else self._entries(root_fd, sweep=False)
                return sum(entry.size for entry in entries)
        except OSError as e:
            self._warn("measuring", e)
            return 0

    # -- writing --------------------------------------------------------------------------------

    def put(
        self, kind: str, key: str, source: Path, meta: Mapping[str, Any] | None = None, *, link: bool = False
    ) -> CachedArtifact | None:
        """Store a copy of the file ``source`` as ``kind``/``key`` with the JSON object ``meta``,
        then evict down to the cap; return the entry. If the key is already there, the existing
        entry is kept and returned. ``link=True`` stores a hard link to ``source`` when it is on
        the cache's filesystem (the caller must then never modify ``source`` in place).

        Returns None, with a warning, when the cache cannot store it (unwritable, full, bigger
        than the cap): the caller carries on with ``source``. Raises only for a ``source`` that is
        not a regular file (:class:`~liveos.errors.UsageError`) or a non-JSON ``meta``."""
        _check_name("kind", kind)
        _check_name("key", key)
        meta_copy = _json_object(meta or {})
        source = Path(source)
        try:
            src_st = os.stat(source)
        except OSError as e:
            raise UsageError(f"cannot cache {source}: {e.strerror}", path=source) from e
        if not stat.S_ISREG(src_st.st_mode):
            raise UsageError(f"cannot cache {source}: not a regular file", path=source)
        if src_st.st_size > self.max_bytes:
            size, cap = src_st.st_size, self.max_bytes
            log.info("not caching %s/%s: its %d bytes exceed the cache's cap of %d", kind, key, size, cap)
            return None
        tmp: str | None = None
        try:
            with self._root(create=True) as root_fd:
                if root_fd is None:
                    return None
                try:
                    with self._locked(root_fd, exclusive=False), self._entry_fd(root_fd, kind, key) as fd:
                        existing = None if fd is None else self._load(fd, kind, key, touch=True)
                    if existing is not None:
                        return existing
                    sweep_stale(self.root, _TMP)
                    tmp = _make_tmp(root_fd)
                    _fill_entry(root_fd, tmp, source, kind, key, meta_copy, link=link)
                    with self._locked(root_fd, exclusive=True):
                        with self._entry_fd(root_fd, kind, key) as fd:
                            existing = None if fd is None else self._load(fd, kind, key, touch=True)
                        if existing is not None:
                            return existing  # another process stored it meanwhile: keep theirs
                        kind_fd = _make_dir(root_fd, kind)
                        try:
                            _remove(kind_fd, key)  # an invalid entry, or junk, of that name
                            os.rename(tmp, key, src_dir_fd=root_fd, dst_dir_fd=kind_fd)
                            tmp = None
                            os.fsync(kind_fd)
                        finally:
                            os.close(kind_fd)
                        self._evict_locked(root_fd)
                        with self._entry_fd(root_fd, kind, key) as fd:
                            return None if fd is None else self._load(fd, kind, key)
                finally:
                    if tmp is not None:
                        shutil.rmtree(tmp, ignore_errors=True, dir_fd=root_fd)
        except OSError as e:
            self._warn(f"storing {kind}/{key}", e)
            return None

    def evict(self) -> list[CachedArtifact]:
        """Remove invalid entries, leftovers of killed writers, then the least recently used
        entries until the artifacts fit ``max_bytes``; return the valid entries removed."""
        try:
            with self._root(create=False) as root_fd, self._locked(root_fd, exclusive=True):
                return [] if root_fd is None else self._evict_locked(root_fd)
        except OSError as e:
            self._warn("evicting", e)
            return []

    def clear(self) -> None:
        """Remove every entry (not the entries other live processes are writing)."""
        try:
            with self._root(create=False) as root_fd, self._locked(root_fd, exclusive=True):
                if root_fd is None:
                    return
                sweep_stale(self.root, _TMP)
                for name in os.listdir(root_fd):
                    if name != _LOCK and not name.startswith(_TMP):
                        _remove(root_fd, name)
        except OSError as e:
            self._warn("clearing", e)

    # -- internals ------------------------------------------------------------------------------

    def _evict_locked(self, root_fd: int) -> list[CachedArtifact]:
        entries = self._entries(root_fd, sweep=True)
        entries.sort(key=lambda a: (a.last_used, a.created, a.kind, a.key))
        total = sum(entry.size for entry in entries)
        removed: list[CachedArtifact] = []
        for entry in entries:
            if total <= self.max_bytes:
                break
            kind_fd = _open_dir(root_fd, entry.kind)
            if kind_fd is not None:
                try:
                    _remove(kind_fd, entry.key)
                finally:
                    os.close(kind_fd)
            total -= entry.size
            removed.append(entry)
            log.debug("cache: evicted %s/%s (%d bytes)", entry.kind, entry.key, entry.size)
        return removed

    def _entries(self, root_fd: int, *, sweep: bool) -> list[CachedArtifact]:
        """Every valid entry; with ``sweep`` (under the exclusive lock) remove everything else."""
        if sweep:
            sweep_stale(self.root, _TMP)
        found: list[CachedArtifact] = []
        for kind in sorted(os.listdir(root_fd)):
            if kind == _LOCK or kind.startswith(_TMP):
                continue
            kind_fd = _open_dir(root_fd, kind) if _NAME.fullmatch(kind) else None
            if kind_fd is None:
                if sweep:
                    _remove(root_fd, kind)
                continue
            try:
                for key in sorted(os.listdir(kind_fd)):
                    entry_fd = _open_dir(kind_fd, key) if _NAME.fullmatch(key) else None
                    entry = None
                    if entry_fd is not None:
                        try:
                            entry = self._load(entry_fd, kind, key)
                        finally:
                            os.close(entry_fd)
                    if entry is not None:
                        found.append(entry)
                    elif sweep:
                        log.debug("cache: removing the invalid entry %s/%s", kind, key)
                        _remove(kind_fd, key)
            finally:
                os.close(kind_fd)
        return found

    def _load(self, entry_fd: int, kind: str, key: str, *, touch: bool = False) -> CachedArtifact | None:
        """The entry in the open directory ``entry_fd`` if it is complete and consistent, else None."""
        try:
            fd = os.open(META_NAME, _READ_FLAGS, dir_fd=entry_fd)
            try:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode) or st.st_size > _MAX_META_BYTES:
                    return None
                data = json.loads(os.read(fd, _MAX_META_BYTES + 1))
                if touch:
                    with contextlib.suppress(OSError):  # a read-only cache still serves hits
                        now = _now_ns()
                        os.utime(fd, ns=(now, now))
                        st = os.fstat(fd)
            finally:
                os.close(fd)
            art = os.stat(ARTIFACT_NAME, dir_fd=entry_fd, follow_symlinks=False)
        except (OSError, ValueError):
            return None
        if not (
            isinstance(data, dict)
            and data.get("version") == META_VERSION
            and data.get("kind") == kind
            and data.get("key") == key
            and type(data.get("size")) is int
            and isinstance(data.get("created"), int | float)
            and isinstance(data.get("meta"), dict)
            and stat.S_ISREG(art.st_mode)
            and art.st_size == data["size"]
        ):
            return None
        return CachedArtifact(
            kind=kind,
            key=key,
            path=self.root / kind / key / ARTIFACT_NAME,
            size=art.st_size,
            meta=MappingProxyType(data["meta"]),
            created=float(data["created"]),
            last_used=st.st_mtime_ns / 1e9,
        )

    @contextlib.contextmanager
    def _root(self, *, create: bool) -> Iterator[int | None]:
        """The cache root, opened (created 0700 first with ``create``); None if it does not exist,
        or cannot be used (then with a warning)."""
        try:
            if create:
                os.makedirs(self.root, mode=0o700, exist_ok=True)
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            if create:
                raise
            yield None
            return
        try:
            st = os.fstat(fd)
            if st.st_uid != os.geteuid() or st.st_mode & 0o022:
                self._warn(
                    "opening", f"{self.root} is not owned by uid {os.geteuid()} or is writable by others"
                )
                yield None
            else:
                yield fd
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def _locked(self, root_fd: int | None, *, exclusive: bool) -> Iterator[None]:
        """Hold ``root/.lock``: exclusive to change the cache, shared to read it. A read-only cache
        without a lock file is read unlocked (a vanishing entry is just a miss)."""
        if root_fd is None:
            yield
            return
        fd = _open_lock(root_fd, create=True)
        if fd is None:
            if exclusive:
                raise OSError(errno.EROFS, "cannot create the lock file", str(self.root / _LOCK))
            yield
            return
        try:
            while True:
                fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
                try:
                    same = os.path.samestat(
                        os.fstat(fd), os.stat(_LOCK, dir_fd=root_fd, follow_symlinks=False)
                    )
                except FileNotFoundError:
                    same = False
                if same:
                    break
                os.close(fd)  # the lock file was replaced (a repair) while we waited: lock the new one
                fd = -1
                new = _open_lock(root_fd, create=True)
                if new is None:
                    raise OSError(errno.ENOENT, "the lock file vanished", str(self.root / _LOCK))
                fd = new
            yield
        finally:
            if fd >= 0:
                os.close(fd)

    @contextlib.contextmanager
    def _entry_fd(self, root_fd: int, kind: str, key: str) -> Iterator[int | None]:
        kind_fd = _open_dir(root_fd, kind)
        entry_fd = None
        if kind_fd is not None:
            try:
                entry_fd = _open_dir(kind_fd, key)
            finally:
                os.close(kind_fd)
        try:
            yield entry_fd
        finally:
            if entry_fd is not None:
                os.close(entry_fd)

    def _warn(self, what: str, error: object) -> None:
        text = str(error)
        if isinstance(error, OSError):
            text = error.strerror or text
            if error.filename:
                text = f"{text}: {error.filename}"
        level = logging.DEBUG if self._warned else logging.WARNING
        message = "artifact cache %s: %s failed (%s); carrying on without the cache"
        log.log(level, message, self.root, what, text)
        self._warned = True


def _check_name(what: str, name: str) -> None:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise UsageError(f"invalid cache {what} {name!r}: use letters, digits and ._+- (at most 200)")


def _json_object(meta: Mapping[str, Any]) -> dict[str, Any]:
    try:
        copy = json.loads(json.dumps(dict(meta), allow_nan=False, sort_keys=True))
    except (TypeError, ValueError) as e:
        raise TypeError(f"cache metadata must be a JSON object: {e}") from e
    assert isinstance(copy, dict)
    return copy


def _now_ns() -> int:
    """The clock of last-use times (a function, so tests can make it tick deterministically)."""
    return time.time_ns()


def _open_dir(dir_fd: int, name: str) -> int | None:
    """The directory ``name`` in ``dir_fd``, opened without following a link; None if it is
    missing or anything but a directory."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise


def _make_dir(dir_fd: int, name: str) -> int:
    """The directory ``name`` in ``dir_fd``, created (0700) if missing, replacing anything else."""
    for _ in range(3):
        with contextlib.suppress(FileExistsError):
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        fd = _open_dir(dir_fd, name)
        if fd is not None:
            return fd
        _remove(dir_fd, name)  # a symlink or a file planted where the directory goes
    raise OSError(errno.ENOTDIR, "cannot create a cache directory", name)


def _remove(dir_fd: int, name: str) -> None:
    """Remove ``name`` from ``dir_fd``: a directory tree without following links, or the link,
    file or node itself."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, dir_fd=dir_fd)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)


def _open_lock(root_fd: int, *, create: bool) -> int | None:
    """``root/.lock`` opened read-only (enough for flock), created if missing. Anything but a
    regular file there (a planted symlink) is removed first. None if it cannot be created."""
    for _ in range(3):
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | (os.O_CREAT if create else 0)
        try:
            fd = os.open(_LOCK, flags, 0o600, dir_fd=root_fd)
        except OSError as e:
            if e.errno in (errno.EROFS, errno.EACCES, errno.ENOENT) and create:
                create = False  # a read-only cache: use the lock file if there is one
                continue
            if e.errno in (errno.EROFS, errno.EACCES, errno.ENOENT):
                return None
            if e.errno != errno.ELOOP:
                raise
            _remove(root_fd, _LOCK)
            continue
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return fd
        os.close(fd)
        _remove(root_fd, _LOCK)
    return None


def _make_tmp(root_fd: int) -> str:
    """A new ``.tmp-<pid>-<n>`` directory (0700) in the root; the name."""
    while True:
        name = f"{_TMP}{os.getpid()}-{next(_tmp_ids)}"
        try:
            os.mkdir(name, 0o700, dir_fd=root_fd)
            return name
        except FileExistsError:
            continue  # a leftover of a dead process that had our pid


def _fill_entry(
    root_fd: int, tmp: str, source: Path, kind: str, key: str, meta: dict[str, Any], *, link: bool
) -> None:
    """Write the artifact and meta.json into the temporary entry ``tmp``, synced to disk."""
    tmp_fd = os.open(tmp, _DIR_FLAGS, dir_fd=root_fd)
    try:
        linked = False
        if link:
            try:
                os.link(source, ARTIFACT_NAME, dst_dir_fd=tmp_fd)
                linked = True
            except OSError as e:
                if e.errno not in _NO_LINK:
                    raise
        if not linked:
            src = os.open(source, os.O_RDONLY | os.O_CLOEXEC)
            try:
                dst = os.open(ARTIFACT_NAME, _NEW_FILE_FLAGS, 0o444, dir_fd=tmp_fd)
                try:
                    _copy_data(src, dst, os.fstat(src).st_size)
                    os.fsync(dst)
                finally:
                    os.close(dst)
            finally:
                os.close(src)
        size = os.stat(ARTIFACT_NAME, dir_fd=tmp_fd, follow_symlinks=False).st_size
        record = {"version": META_VERSION, "kind": kind, "key": key, "size": size, "created": time.time()}
        fd = os.open(META_NAME, _NEW_FILE_FLAGS, 0o444, dir_fd=tmp_fd)
        try:
            data = json.dumps({**record, "meta": meta}, sort_keys=True, indent=1).encode() + b"\n"
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            now = _now_ns()
            os.utime(fd, ns=(now, now))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.fsync(tmp_fd)
    finally:
        os.close(tmp_fd)


def _copy_data(src: int, dst: int, size: int) -> None:
    """Copy ``size`` bytes from ``src`` to ``dst`` (both at offset 0): in the kernel (a reflink
    where the filesystem can) when possible, else by reads and writes. A short copy is an error."""
    copied = 0
    try:
        while n := os.copy_file_range(src, dst, 1 << 30):
            copied += n
    except OSError as e:
        if e.errno not in _NO_COPY_RANGE:
            raise
        # Both offsets advanced together: carry on from where the kernel stopped.
    while chunk := os.read(src, 1 << 20):
        view = memoryview(chunk)
        while view:
            written = os.write(dst, view)
            copied += written
            view = view[written:]
    if copied != size:
        raise OSError(errno.EIO, f"copied {copied} bytes where {size} were expected")


def _link_out(entry_fd: int, dest: Path) -> bool:
    """Hard-link the artifact to ``dest`` (a temporary name, then a rename); False if the
    filesystems differ (copy instead)."""
    tmp = dest.with_name(f".{dest.name}.tmp-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
    try:
        os.link(ARTIFACT_NAME, tmp, src_dir_fd=entry_fd, follow_symlinks=False)
    except OSError as e:
        if e.errno in _NO_LINK:
            return False
        raise
    try:
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return True


__all__ = [
    "DEFAULT_MAX_BYTES",
    "ENV_CACHE_DIR",
    "ENV_CACHE_MAX",
    "ArtifactCache",
    "CachedArtifact",
    "cache_key",
    "default_cache_dir",
    "default_max_bytes",
    "parse_size",
]
