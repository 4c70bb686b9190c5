"""Small HTML and text helpers for the rich views of liveos objects (Jupyter, IPython).

The objects' ``_repr_html_``, ``__repr__`` and ``_repr_pretty_`` build their content from
these, so every view looks alike and escaping happens in one place: values shown here come from
images (an os-release ``PRETTY_NAME``, a grub menu title), which are untrusted, so every value is
HTML-escaped. Nothing here knows about liveos objects; the helpers take plain strings and numbers.

``safe_repr``/``safe_html``/``safe_text`` wrap a view so that it never raises: a repr that
raises hides the object in a notebook, and a view must never be the thing that fails.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from liveos.errors import LiveOSError

#: One inline style for every view's root element; notebooks render bare tables inconsistently.
_STYLE = "font-family:monospace;font-size:12px;text-align:left"
_CELL = "text-align:left;vertical-align:top;padding:1px 8px"


class PrettyPrinter(Protocol):
    """The part of IPython's ``RepresentationPrinter`` a ``_repr_pretty_`` uses (no IPython import)."""

    def text(self, obj: str) -> None:
        """Print ``obj`` as it is."""


def esc(value: object) -> str:
    """``value`` as text, HTML-escaped (quotes too: values may end up in attributes)."""
    return html.escape(str(value), quote=True)


def human_size(size: int | float | None) -> str:
    """A byte count as ``1.5 GB`` (decimal units, as the CLI prints sizes; ``?`` when unknown)."""
    if size is None:
        return "?"
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if abs(value) < 1000:
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def html_table(
    headers: Sequence[object], rows: Iterable[Sequence[object]], *, caption: str | None = None
) -> str:
    """A table: one header row, then ``rows`` (every cell escaped)."""
    head = "".join(f'<th style="{_CELL}">{esc(h)}</th>' for h in headers)
    body = "".join(
        "<tr>" + "".join(f'<td style="{_CELL}">{esc(c)}</td>' for c in row) + "</tr>" for row in rows
    )
    cap = f'<caption style="text-align:left;font-weight:bold">{esc(caption)}</caption>' if caption else ""
    return f'<table style="{_STYLE}">{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def html_kv(pairs: Iterable[tuple[object, object]], title: str | None = None) -> str:
    """A two-column table of ``name: value`` pairs, with an optional bold title."""
    rows = "".join(
        f'<tr><th style="{_CELL}">{esc(k)}</th><td style="{_CELL}">{esc(v)}</td></tr>' for k, v in pairs
    )
    cap = f'<caption style="text-align:left;font-weight:bold">{esc(title)}</caption>' if title else ""
    return f'<table style="{_STYLE}">{cap}<tbody>{rows}</tbody></table>'


def html_bars(items: Sequence[tuple[str, float]], unit: str = "s", *, width_px: int = 240) -> str:
    """A horizontal bar chart of ``(label, value)`` as plain divs (no script, no image)."""
    top = max((v for _, v in items if v > 0), default=0.0)
    rows = []
    for label, value in items:
        width = round(width_px * value / top) if top > 0 and value > 0 else 0
        bar = f'<div style="background:#4a90d9;height:10px;width:{width}px;display:inline-block"></div>'
        name = f'<span style="display:inline-block;min-width:14em">{esc(label)}</span>'
        rows.append(
            f'<div style="white-space:nowrap">{name}{bar} <span>{value:.2f} {esc(unit)}</span></div>'
        )
    return f'<div style="{_STYLE}">{"".join(rows)}</div>'


def html_details(summary: str, body_html: str, *, open_: bool = False) -> str:
    """A collapsible section; ``summary`` is escaped, ``body_html`` is already HTML."""
    attr = " open" if open_ else ""
    return f'<details{attr}><summary style="{_STYLE}">{esc(summary)}</summary>{body_html}</details>'


def html_block(title: str, *parts: str) -> str:
    """A view's root element: a bold escaped title, then the parts (already HTML)."""
    return f'<div style="{_STYLE}"><div style="font-weight:bold">{esc(title)}</div>{"".join(parts)}</div>'


def html_pre(text: str) -> str:
    """Preformatted escaped text (kernel command lines, describe() output)."""
    return f'<pre style="margin:0;white-space:pre-wrap">{esc(text)}</pre>'


def pretty_text(
    p: PrettyPrinter, cycle: bool, text: str | Callable[[], str], *, short: str = "<...>"
) -> None:
    """The body of a ``_repr_pretty_``: ``text`` (or what it returns), ``short`` on a cycle."""
    if cycle:
        p.text(short)
        return
    p.text(safe_text(text) if callable(text) else text)


def _fallback(what: str, error: Exception) -> str:
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return f"{what} (unavailable: {first})"


def safe_text(build: Callable[[], str], what: str = "<liveos object>") -> str:
    """``build()``, or a one-line fallback when it raises a :class:`LiveOSError` or ``OSError``."""
    try:
        return build()
    except (LiveOSError, OSError) as error:
        return _fallback(what, error)


def safe_html(build: Callable[[], str], what: str = "liveos object") -> str:
    """``build()``, or an escaped one-line fallback when it raises a :class:`LiveOSError` or ``OSError``."""
    try:
        return build()
    except (LiveOSError, OSError) as error:
        return f'<div style="{_STYLE}">{esc(_fallback(what, error))}</div>'
