"""Where archive bytes go: a file descriptor (kernel copies for big files), an in-process
compressor, or a Python file object without a descriptor.

Compression runs in-process (libzstd's worker threads, zlib, liblzma), so file I/O and
compression overlap without a pipe; every compressor writes a stream the kernel can unpack.
"""

from __future__ import annotations

import contextlib
import lzma
import os
import stat
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

import pyzstd

from liveos.atomic import atomic_path
from liveos.errors import InternalError
from liveos.settings import Compression

#: zstd multi-threaded job size for levels whose window is <= 2 MiB (1-6). libzstd's default
#: (4x the window, 8 MiB at level 3) made the zstd writer peak at ~107 MB RSS; 2 MiB jobs peak at
#: ~58 MB on the 2.9 GB benchmark tree for +1.3 % output and ~1.05x wall (docs/performance.md).
ZSTD_JOB_SIZE = 2 * 1024 * 1024
ZSTD_SMALL_WINDOW_MAX_LEVEL = 6


# ---------------------------------------------------------------------------------------------
class Sink(Protocol):
    """Where the CPIO writer puts archive bytes; ``bytes_out`` counts what reached the output."""

    bytes_out: int

    def write(self, data: memoryview) -> None:
        """Append ``data`` to the output."""

    def copy_from(self, fd: int, size: int) -> int:
        """Copy ``size`` bytes of ``fd`` in the kernel; returns the bytes copied (0: use write)."""

    def close(self) -> None:
        """Flush what is buffered (a compressor's tail); the output itself stays open."""


class FdSink:
    """Uncompressed output to a file descriptor; big files are copied in the kernel."""

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.bytes_out = 0
        self._use_cfr = stat.S_ISREG(os.fstat(fd).st_mode) and hasattr(os, "copy_file_range")
        self._use_sendfile = True

    def write(self, data: memoryview) -> None:
        """Write all of ``data`` to the descriptor."""
        while data:
            n = os.write(self.fd, data)
            data = data[n:]
            self.bytes_out += n

    def copy_from(self, fd: int, size: int) -> int:
        """Copy ``size`` bytes of ``fd`` in the kernel; returns the bytes copied (0: not supported)."""
        done = 0
        if self._use_cfr:
            try:
                while done < size:
                    n = os.copy_file_range(fd, self.fd, size - done)
                    if n == 0:
                        break
                    done += n
            except OSError:
                if done:
                    raise
                self._use_cfr = False
        if not self._use_cfr and self._use_sendfile:
            try:
                while done < size:
                    n = os.sendfile(self.fd, fd, None, size - done)
                    if n == 0:
                        break
                    done += n
            except OSError:
                if done:
                    raise
                self._use_sendfile = False
        self.bytes_out += done
        return done

    def close(self) -> None:
        """Nothing is buffered; the descriptor belongs to the caller."""
        pass


class CompressorSink:
    """Compressed output: every archive byte passes through ``compress`` and lands on ``fd``."""

    def __init__(
        self, compress: Callable[[memoryview], bytes], flush: Callable[[], bytes], out: Sink
    ) -> None:
        self._compress = compress
        self._flush = flush
        self._out = out
        self.bytes_out = 0

    def write(self, data: memoryview) -> None:
        """Compress ``data`` and pass what the compressor emits on."""
        chunk = self._compress(data)
        if chunk:
            self._out.write(memoryview(chunk))

    def copy_from(self, fd: int, size: int) -> int:
        """Never: every byte must pass through the compressor (returns 0)."""
        return 0

    def close(self) -> None:
        """End the compressed stream (its tail goes to the output)."""
        tail = self._flush()
        if tail:
            self._out.write(memoryview(tail))
        self.bytes_out = self._out.bytes_out


class FileObjSink:
    """Output to a Python file object without a file descriptor (``io.BytesIO``)."""

    def __init__(self, fp: BinaryIO) -> None:
        self.fp = fp
        self.bytes_out = 0

    def write(self, data: memoryview) -> None:
        """Write ``data`` to the file object."""
        self.fp.write(data)
        self.bytes_out += len(data)

    def copy_from(self, fd: int, size: int) -> int:
        """Never: a file object has no descriptor to copy into (returns 0)."""
        return 0

    def close(self) -> None:
        """Flush the file object (it stays open)."""
        self.fp.flush()


def compressor_sink(compression: Compression, level: int, threads: int, out: Sink) -> Sink:
    """Wrap ``out`` in the in-process compressor the kernel can unpack."""
    if compression is Compression.NONE:
        return out
    if compression is Compression.ZSTD:
        # nbWorkers >= 1 always: libzstd's MT output does not depend on the worker count, so the
        # bytes are the same on every machine, and the workers compress while we do file I/O.
        options: dict[int, int] = {
            pyzstd.CParameter.compressionLevel: level,
            pyzstd.CParameter.nbWorkers: max(1, threads),
        }
        if level <= ZSTD_SMALL_WINDOW_MAX_LEVEL:
            options[pyzstd.CParameter.jobSize] = ZSTD_JOB_SIZE  # bounded memory, see the constant
        zc = pyzstd.ZstdCompressor(options)
        return CompressorSink(zc.compress, lambda: zc.flush(), out)
    if compression is Compression.GZIP:
        zo = zlib.compressobj(level, zlib.DEFLATED, 31)
        return CompressorSink(zo.compress, zo.flush, out)
    if compression is Compression.XZ:
        # The kernel's xz decoder only verifies CRC32 (or no) checks, not the default CRC64.
        lz = lzma.LZMACompressor(format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32, preset=level)
        return CompressorSink(lz.compress, lz.flush, out)
    raise InternalError(f"unhandled compression {compression!r}")


@contextlib.contextmanager
def output_fd(out: Path | BinaryIO) -> Iterator[tuple[Sink, Callable[[], int]]]:
    """A raw sink for ``out``: an atomically replaced file for a Path, the caller's file otherwise."""
    if isinstance(out, (str, os.PathLike)):
        with atomic_path(Path(out)) as tmp:
            fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
            try:
                sink = FdSink(fd)
                yield sink, lambda: sink.bytes_out
            finally:
                os.close(fd)
        return
    try:
        fd = out.fileno()
    except (AttributeError, OSError, ValueError):
        fsink = FileObjSink(out)
        yield fsink, lambda: fsink.bytes_out
        fsink.close()
        return
    out.flush()
    raw = FdSink(fd)
    yield raw, lambda: raw.bytes_out
