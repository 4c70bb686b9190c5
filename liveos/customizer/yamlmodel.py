"""YAML read as nodes that remember their line, so every config error names the key and the line.

A config file is untrusted text: it is read whole only up to :data:`MAX_CONFIG_BYTES`, composed
(never constructed: no Python objects, no custom tags) by PyYAML's pure-Python safe composer, and
YAML aliases (``*name``) are refused -- they are how a few hundred bytes expand to gigabytes
("billion laughs"), and no Image Customizer config needs them.

:class:`Value` wraps one node with its key path (``iso.additionalFiles[1].source``); its
``as_*`` methods check the node's type and raise a :class:`~liveos.errors.UsageError` of the form
``config.yaml, line 7: iso.additionalFiles[1].permissions: ...``.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import yaml
from yaml.composer import Composer
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from liveos.errors import UsageError

#: Largest config file liveos reads (the reference tool's test configs are well under 4 KiB).
MAX_CONFIG_BYTES = 1024 * 1024

_TAG = "tag:yaml.org,2002:"
#: What a node's resolved tag is called in an error message.
_KIND = {
    f"{_TAG}str": "a string",
    f"{_TAG}int": "an integer",
    f"{_TAG}float": "a number",
    f"{_TAG}bool": "a boolean",
    f"{_TAG}null": "empty (null)",
    f"{_TAG}timestamp": "a timestamp",
    f"{_TAG}map": "a mapping",
    f"{_TAG}seq": "a list",
    f"{_TAG}merge": "a YAML merge key (<<)",
}


#: Scalars whose text a string field takes (not null, not a custom tag such as ``!!python/...``).
_TEXT_TAGS = frozenset(f"{_TAG}{t}" for t in ("str", "int", "float", "bool", "timestamp"))


class _NoAliasLoader(yaml.SafeLoader):
    """The safe loader's composer, refusing aliases (``*name``)."""

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise yaml.composer.ComposerError(
                None, None, f"YAML aliases (*{event.anchor}) are not supported", event.start_mark
            )
        node: Node | None = Composer.compose_node(self, parent, index)
        return node


def read_config_text(path: Path) -> str:
    """The text of a config file: at most :data:`MAX_CONFIG_BYTES`, UTF-8."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read the config file {path}: {exc.strerror}", path=path) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(
            f"the config file {path} is larger than {MAX_CONFIG_BYTES} bytes",
            path=path,
            hint="an Image Customizer config is a few KiB; check that this is the right file",
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"the config file {path} is not UTF-8 text (byte {exc.start})", path=path) from None


def compose(text: str, source: str) -> Value:
    """The document of ``text`` as a :class:`Value` (an empty document is an empty mapping)."""
    try:
        node = yaml.compose(text, Loader=_NoAliasLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        what = " ".join(p for p in (exc.context, exc.problem) if p)
        raise UsageError(f"{_where(source, line)}invalid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise UsageError(f"{source}: invalid YAML: {exc}") from None
    except RecursionError:
        raise UsageError(f"{source}: the YAML is nested too deeply") from None
    if node is None:
        node = MappingNode(f"{_TAG}map", [])
    return Value(node, "", source)


def from_python(data: object, source: str = "<mapping>") -> Value:
    """A Python mapping (as ``yaml.safe_load`` would give) as a :class:`Value` without lines."""
    return Value(_node_of(data, source, ""), "", source)


def _node_of(data: object, source: str, path: str) -> Node:
    if isinstance(data, Mapping):
        pairs = []
        for key, value in data.items():
            if not isinstance(key, str):
                raise UsageError(f"{source}: {path or 'the config'}: key {key!r} is not a string")
            sub = f"{path}.{key}" if path else key
            pairs.append((ScalarNode(f"{_TAG}str", key), _node_of(value, source, sub)))
        return MappingNode(f"{_TAG}map", pairs)
    if isinstance(data, list | tuple):
        return SequenceNode(f"{_TAG}seq", [_node_of(v, source, f"{path}[{i}]") for i, v in enumerate(data)])
    if data is None:
        return ScalarNode(f"{_TAG}null", "")
    if isinstance(data, bool):
        return ScalarNode(f"{_TAG}bool", "true" if data else "false")
    if isinstance(data, int):
        return ScalarNode(f"{_TAG}int", str(data))
    if isinstance(data, float):
        return ScalarNode(f"{_TAG}float", repr(data))
    if isinstance(data, str):
        return ScalarNode(f"{_TAG}str", data)
    raise UsageError(f"{source}: {path}: {type(data).__name__} is not a YAML value")


def _where(source: str, line: int | None) -> str:
    return f"{source}, line {line}: " if line is not None else f"{source}: "


@dataclass(frozen=True)
class Value:
    """One YAML node, its key path from the document root, and the file it came from."""

    node: Node
    path: str
    source: str

    @property
    def line(self) -> int | None:
        """1-based line of the node (None for a node built from a Python mapping)."""
        mark = self.node.start_mark
        return mark.line + 1 if mark is not None else None

    @property
    def kind(self) -> str:
        """What the node is, for messages: ``a string``, ``a list``, ``empty (null)``."""
        return _KIND.get(self.node.tag, f"tagged {self.node.tag}")

    @property
    def is_null(self) -> bool:
        """Whether the node is YAML null (``key:`` with nothing after it, ``~``, ``null``)."""
        return isinstance(self.node, ScalarNode) and self.node.tag == f"{_TAG}null"

    def fail(self, message: str, *, hint: str | None = None) -> NoReturn:
        """Raise a UsageError naming the file, the line and the key path."""
        raise UsageError(
            f"{_where(self.source, self.line)}{self.path or 'the config'}: {message}", hint=hint
        )

    def _expect(self, kind: str, expected: str) -> None:
        if self.node.tag != f"{_TAG}{kind}":
            self.fail(f"expected {expected}, found {self.kind}")

    # -- scalars ------------------------------------------------------------------------------
    def as_str(self) -> str:
        """A scalar's text as written: a string, or a number, boolean or date where a string is
        expected (``PORT: 8080``), as the reference tool's YAML decoder takes them."""
        if not isinstance(self.node, ScalarNode) or self.node.tag not in _TEXT_TAGS:
            self.fail(f"expected a string, found {self.kind}")
        value: str = self.node.value
        return value

    def as_bool(self) -> bool:
        """A YAML boolean (``true`` / ``false``)."""
        self._expect("bool", "true or false")
        return str(self.node.value).lower() in ("true", "yes", "on", "y")

    def scalar_text(self) -> str:
        """The text of a string or integer scalar as written (for values such as ``permissions``)."""
        if not isinstance(self.node, ScalarNode) or self.node.tag not in (f"{_TAG}str", f"{_TAG}int"):
            self.fail(f"expected a string or an integer, found {self.kind}")
        value: str = self.node.value
        return value

    # -- collections --------------------------------------------------------------------------
    def as_list(self) -> list[Value]:
        """The items of a list (``[]`` for null)."""
        if self.is_null:
            return []
        self._expect("seq", "a list")
        assert isinstance(self.node, SequenceNode)
        return [Value(item, f"{self.path}[{i}]", self.source) for i, item in enumerate(self.node.value)]

    def as_str_list(self) -> tuple[str, ...]:
        """A list of strings."""
        return tuple(item.as_str() for item in self.as_list())

    def as_mapping(self) -> Fields:
        """The keys of a mapping (an empty one for null); a duplicate key is an error."""
        if self.is_null:
            return Fields(self, {})
        self._expect("map", "a mapping (key: value)")
        assert isinstance(self.node, MappingNode)
        found: dict[str, tuple[Value, Value]] = {}
        for key_node, value_node in self.node.value:
            key = Value(key_node, self.path, self.source)
            if not isinstance(key_node, ScalarNode) or key_node.tag not in _TEXT_TAGS:
                key.fail(f"a key must be a string, found {key.kind}")
            name: str = key_node.value
            sub = f"{self.path}.{name}" if self.path else name
            if name in found:
                first = found[name][0].line
                Value(key_node, sub, self.source).fail(
                    "duplicate key" + (f" (first given on line {first})" if first is not None else "")
                )
            found[name] = (Value(key_node, sub, self.source), Value(value_node, sub, self.source))
        return Fields(self, found)


@dataclass(frozen=True)
class Fields:
    """The keys of one mapping, each with its key node (for its line) and its value."""

    value: Value
    items: dict[str, tuple[Value, Value]]

    def __iter__(self) -> Iterator[str]:
        return iter(self.items)

    def get(self, name: str) -> Value | None:
        """The value of ``name``; None if the key is absent or its value is null."""
        found = self.items.get(name)
        if found is None or found[1].is_null:
            return None
        return found[1]

    def key(self, name: str) -> Value:
        """The key node of ``name`` (its line is where the key is written)."""
        return self.items[name][0]

    def check(self, known: Sequence[str], refused: Mapping[str, str]) -> None:
        """Fail on the first key that is neither ``known`` nor supported (``refused``: key -> why)."""
        for name, (key, _value) in self.items.items():
            if name in known:
                continue
            if name in refused:
                key.fail(f"is not supported by liveos: {refused[name]}")
            close = difflib.get_close_matches(name, [*known, *refused], n=1)
            guess = f"did you mean {close[0]}? " if close else ""
            key.fail(
                "unknown key",
                hint=f"{guess}keys here: {', '.join(known)}" if known else "this mapping takes no keys",
            )
