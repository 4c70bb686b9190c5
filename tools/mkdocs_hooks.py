"""mkdocs hook: render the Sphinx roles of liveos' docstrings as links in the API reference.

The docstrings are prose written for ``help()`` and Sphinx alike (``:class:`GrubConfig```,
``:func:`~liveos.run.run```). mkdocstrings renders them as Markdown, which leaves the role
visible (``:class:<code>GrubConfig</code>``). This hook turns each one into an *optional*
autorefs cross-reference: a link when the target is on the site, plain code otherwise (never a
warning, so ``mkdocs build --strict`` stays meaningful for real broken links).
"""

from __future__ import annotations

import html
import re
from typing import Any

ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj|const):<code>([^<]+)</code>")


def _public_names() -> dict[str, str]:
    """liveos' exported names -> their canonical dotted path, to resolve short references."""
    import liveos

    return {
        name: f"{obj.__module__}.{name}"
        for name in liveos.__all__
        if isinstance(getattr(obj := getattr(liveos, name), "__module__", None), str)
    }


def _identifier(target: str, names: dict[str, str]) -> str:
    head, _, rest = target.partition(".")
    if head in names:
        return names[head] + (f".{rest}" if rest else "")
    return target


def on_page_content(html_text: str, **kwargs: Any) -> str:
    """Replace every ``:role:<code>target</code>`` left in a page by an optional cross-reference."""
    names = _public_names()

    def link(match: re.Match[str]) -> str:
        target = html.unescape(match[1]).strip("`")
        shown = target.rsplit(".", 1)[-1] if target.startswith("~") else target
        target = target.lstrip("~").removesuffix("()")
        ident = html.escape(_identifier(target, names), quote=True)
        return f'<autoref identifier="{ident}" optional><code>{html.escape(shown)}</code></autoref>'

    return ROLE.sub(link, html_text)
