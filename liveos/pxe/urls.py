"""Where a PXE-booted bootstrap initrd downloads the live ISO from: ``root=live:<URL>``.

dracut's ``livenet`` fetches the ISO with its url-lib handlers: curl for ``http``, ``https``,
``ftp`` and ``tftp``, nfs-lib for ``nfs`` (the latter only if the image's dracut also has the
``nfs`` module in the initrd). Any other scheme would boot into a dracut timeout, so it is a
:class:`~liveos.errors.UsageError` here, at build time.

The caller gives either a *base* URL (a directory; the ISO file name is appended) or the full
*file* URL, never both. Unlike the reference tool, a bootstrap PXE bundle without any URL is an
error (it would write ``root=live:image.iso``, which dracut cannot fetch), and so is a URL for a
full-OS bundle, whatever the mode was defaulted from.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

from liveos.errors import UsageError
from liveos.settings import InitramfsMode

#: URL schemes dracut livenet can download from (url-lib: curl handler + nfs handler).
LIVENET_SCHEMES = ("http", "https", "ftp", "tftp", "nfs")
#: File name of the bootstrap ISO when only a base URL is given.
DEFAULT_ISO_NAME = "live.iso"

#: Characters that would split or garble the kernel command line (dracut splits on blanks).
_UNSAFE = re.compile(r"[\s\"'\\`\x00-\x1f\x7f]")


@dataclass(frozen=True)
class BootstrapUrl:
    """A validated ISO URL and the file name the ISO gets in the bundle (its last path part)."""

    url: str
    file_name: str

    def __str__(self) -> str:
        return self.url

    @classmethod
    def parse(cls, url: str, *, field: str = "file URL") -> BootstrapUrl:
        """A full URL of the ISO file: ``http://10.0.0.1/images/live.iso``."""
        parts = _split(url, field)
        name = unquote(posixpath.basename(parts.path))
        if not parts.path or parts.path.endswith("/") or name in ("", ".", ".."):
            raise UsageError(
                f"the bootstrap {field} {url!r} names no file (its path must end in a file name)",
                hint="give the URL of the ISO itself, e.g. http://server/pxe/live.iso, or use a base URL",
            )
        if "/" in name or "\x00" in name:
            raise UsageError(f"the file name {name!r} in the bootstrap {field} {url!r} is not a plain name")
        return cls(url=url, file_name=name)

    @classmethod
    def join(cls, base_url: str, file_name: str = DEFAULT_ISO_NAME) -> BootstrapUrl:
        """A directory URL plus the ISO file name (``http://h/pxe`` and ``http://h/pxe/`` alike)."""
        parts = _split(base_url, "base URL")
        if parts.query:
            raise UsageError(
                f"the bootstrap base URL {base_url!r} has a query string; the file name cannot be appended",
                hint="give the full file URL instead (bootstrap file URL)",
            )
        if not file_name or "/" in file_name or file_name in (".", ".."):
            raise UsageError(f"ISO file name {file_name!r} must be a plain file name, e.g. live.iso")
        path = parts.path.rstrip("/") + "/" + quote(file_name)
        return cls.parse(urlunsplit(parts._replace(path=path)), field="base URL")


def _split(url: str, field: str) -> SplitResult:
    """urlsplit with the checks every bootstrap URL needs (scheme, host, no fragment, no blanks)."""
    if not url:
        raise UsageError(f"the bootstrap {field} is empty")
    if _UNSAFE.search(url):
        raise UsageError(
            f"the bootstrap {field} {url!r} contains blanks, quotes or control characters",
            hint="percent-encode them (a space is %20): the URL becomes one kernel argument",
        )
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises ValueError for a malformed port
    except ValueError as exc:
        raise UsageError(f"invalid bootstrap {field} {url!r}: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme not in LIVENET_SCHEMES:
        raise UsageError(
            f"unsupported scheme {parts.scheme or '(none)'!r} in the bootstrap {field} {url!r}",
            hint=f"dracut livenet downloads only with {', '.join(s + '://' for s in LIVENET_SCHEMES)}",
        )
    if not parts.hostname:
        raise UsageError(f"the bootstrap {field} {url!r} has no server name", hint="e.g. http://10.0.0.1/")
    if parts.fragment or url.endswith("#"):
        raise UsageError(f"the bootstrap {field} {url!r} has a #fragment, which is never sent to a server")
    return parts


def resolve_bootstrap_url(
    mode: InitramfsMode,
    *,
    base_url: str | None = None,
    file_url: str | None = None,
    file_name: str = DEFAULT_ISO_NAME,
) -> BootstrapUrl | None:
    """The ISO URL of a PXE bundle for ``mode``: required for bootstrap, forbidden for full-OS."""
    if base_url is not None and file_url is not None:
        raise UsageError(
            "give either a bootstrap base URL or a bootstrap file URL, not both",
            hint="base URL: a directory the ISO name is appended to; file URL: the ISO's full URL",
        )
    if mode is InitramfsMode.FULL_OS:
        if base_url is not None or file_url is not None:
            raise UsageError(
                "a full-os PXE bundle downloads nothing: it takes no bootstrap URL",
                hint="drop the URL, or use bootstrap mode to boot an ISO downloaded from it",
            )
        return None
    if file_url is not None:
        return BootstrapUrl.parse(file_url)
    if base_url is not None:
        return BootstrapUrl.join(base_url, file_name)
    raise UsageError(
        "a bootstrap PXE bundle needs the URL its ISO will be served from (root=live:<URL>)",
        hint="give a base URL (e.g. http://10.0.0.1/pxe/) or the ISO's full file URL",
    )
