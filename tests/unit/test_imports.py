"""The module structure: no import cycle, and every import points down the layers.

The layers, top to bottom (docs/design.md, "Module map"): the command line, the facade, the
outputs, the staging of the media tree, the boot pieces, the opened image, the host operations,
the codecs of untrusted bytes, the foundation. A module may import its own layer or any below.
Imports are read from the source (``ast``), so a lazy import inside a function counts as well.
"""

from __future__ import annotations

import ast
from pathlib import Path

import liveos

PACKAGE = Path(liveos.__file__).parent

#: Module (or package) name prefix -> layer, highest first. The longest matching prefix wins.
LAYERS: dict[str, int] = {
    "liveos": 9,  # the package's public namespace
    "liveos.__main__": 9,
    "liveos.cli": 9,
    "liveos.live": 8,
    "liveos.customizer": 7,  # below the facade: LiveOS.with_config calls it; it sees LiveOS as a Protocol
    "liveos.boottest": 8,
    "liveos.inspection": 8,
    "liveos.verification": 8,
    "liveos.iso": 7,
    "liveos.pxe": 7,
    "liveos.media": 6,
    "liveos.bootfiles": 5,
    "liveos.initramfs": 5,
    "liveos.squashfs": 5,
    "liveos.erofs": 5,
    "liveos.image": 4,
    "liveos.rootfs": 4,
    "liveos.host": 3,
    "liveos.cpio": 2,
    "liveos.grub": 2,
    "liveos.pe": 2,
    "liveos._version": 1,
    "liveos.atomic": 1,
    "liveos.cache": 1,
    "liveos.confined": 1,
    "liveos.errors": 1,
    "liveos.interrupts": 1,
    "liveos.layout": 1,
    "liveos.mediafiles": 1,
    "liveos.packages": 1,
    "liveos.plan": 1,
    "liveos.progress": 1,
    "liveos.progress_display": 1,
    "liveos.reproducible": 1,
    "liveos.result": 1,
    "liveos.run": 1,
    "liveos.settings": 1,
    "liveos.state": 1,
    "liveos.versions": 1,
    "liveos.views": 1,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """liveos modules ``path`` imports anywhere (a submodule import also runs its package)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:  # a submodule, or a name defined by the module itself
                sub = f"{node.module}.{alias.name}"
                names.append(sub if sub in known else node.module)
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found |= {name for name in names if name in known}
    return found


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    edges = {name: imports_of(path, known) - {name} for name, path in mods.items()}
    for name in mods:  # importing a.b.c runs a/__init__ and a/b/__init__ first ...
        own = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        for dep in list(edges[name]):
            parts = dep.split(".")
            edges[name] |= {".".join(parts[:i]) for i in range(2, len(parts))} & known
        edges[name] -= own | {name}  # ... but a module's own packages are already being imported
    return edges


def layer(name: str) -> int:
    prefix = max((p for p in LAYERS if name == p or name.startswith(p + ".")), key=len, default=None)
    assert prefix is not None, f"{name} is in no layer: add it to LAYERS (and to docs/design.md)"
    return LAYERS[prefix]


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """A cycle as a list of modules, or None (iterative DFS with colours)."""
    colour = dict.fromkeys(edges, 0)  # 0 new, 1 on the stack, 2 done
    for start in sorted(edges):
        if colour[start]:
            continue
        stack: list[tuple[str, list[str]]] = [(start, sorted(edges[start]))]
        colour[start] = 1
        while stack:
            node, todo = stack[-1]
            if not todo:
                colour[node] = 2
                stack.pop()
                continue
            nxt = todo.pop()
            if colour[nxt] == 1:
                path = [n for n, _ in stack]
                return [*path[path.index(nxt) :], nxt]
            if colour[nxt] == 0:
                colour[nxt] = 1
                stack.append((nxt, sorted(edges[nxt])))
    return None


def test_no_import_cycle() -> None:
    assert find_cycle(graph()) is None


def test_the_cycle_finder_finds_cycles() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for name, deps in sorted(graph().items()):
        if name == "liveos":
            continue  # the public namespace re-exports from every layer
        up = [dep for dep in deps if layer(dep) > layer(name)]
        wrong += [f"{name} ({layer(name)}) -> {dep} ({layer(dep)})" for dep in up]
    assert wrong == []


def test_every_module_is_in_a_layer_and_the_design_doc() -> None:
    design = (PACKAGE.parent / "docs" / "design.md").read_text()
    for name in modules():
        layer(name)
        if name.count(".") == 1 and name not in ("liveos.__main__", "liveos._version"):
            relative = name.removeprefix("liveos.").replace(".", "/")
            assert f"`{relative}" in design, f"{name} is missing from docs/design.md's module map"
