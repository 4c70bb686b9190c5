"""Fuzzing the grub text parsers and editors with hostile input: grub.cfg, BLS entries, grubenv.

Everything here reads text from images made by others. Whatever the text, parsing and editing end
in a result or a :class:`~liveos.errors.LiveOSError` (an :class:`ImageError` naming the file for
bad input), within a bounded time and memory. For text that parses: ``render()`` gives back the
input byte for byte, the edited text parses again, and every edit sequence liveos runs
(``liveos/media/grubedit.py``) is idempotent.

Inputs are generated (grub-shaped configs) or mutated from the real configs in ``tests/data/grub``.
Each test counts the examples it ran; ``pytest -s`` prints the counts at the end of the module.
``LIVEOS_FUZZ_SCALE=N`` runs N times the examples (a longer campaign than CI's few seconds).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveos.errors import ImageError, InternalError, LiveOSError
from liveos.grub import BlsEntry, GrubConfig, GrubEnv, KernelArgs, parse_env_vars, render_menu, tokenize
from liveos.grub.kernelargs import MAX_KERNEL_ARGS, ArgSyntax
from liveos.grub.parser import MAX_NESTING, MAX_TOKENS
from tests.fuzz.fuzzkit import MIB, PER_INPUT_SECONDS, examples, fuzz_settings, measured, runs

DATA = Path(__file__).parent.parent / "data" / "grub"
GRUB_SEEDS = [p.read_text() for p in sorted([*DATA.glob("*.cfg"), DATA / "fedora" / "grub.cfg"])]
BLS_SEEDS = [p.read_text() for p in sorted((DATA / "fedora" / "loader" / "entries").glob("*.conf"))]
GRUBENV_SEED = (DATA / "fedora" / "grubenv").read_bytes()
ENV_SEED = (DATA / "azurelinux3-mariner.cfg").read_text()
PATH = "/boot/grub2/grub.cfg"

RUNS = runs(__name__)
#: ``PER_INPUT_SECONDS`` bounds each input, all edit sequences included.
FUZZ = fuzz_settings(examples(600), deadline=timedelta(seconds=PER_INPUT_SECONDS))


# ---------------------------------------------------------------------- inputs
#: Pieces that matter to grub's grammar and to the edits, for generating and mutating.
SNIPPETS = [
    *" \t\n;{}|&<>'\"$\\#=()-/",
    "\\\n",
    "${",
    "}",
    "$a",
    "${root}",
    '"',
    "'",
    "linux ",
    "linuxefi ",
    "initrd ",
    "search ",
    "search.fs_uuid ",
    "set ",
    "a=",
    "bootprefix=",
    "menuentry 'x' {\n",
    "submenu y {\n",
    "function f {\n",
    "}\n",
    "if a; then\n",
    "elif b; then\n",
    "else\n",
    "fi\n",
    "for x in a b; do\n",
    "while a; do\n",
    "done\n",
    "load_env -f ",
    "[ -f /initrd.img ]",
    "root=",
    "ro ",
    "selinux=1 ",
    "enforcing=0 ",
    "security=selinux ",
    "$kernelopts",
    "--set=",
    "--label ",
    "-u ",
    "(hd0,gpt2)",
    "/boot",
    "/vmlinuz ",
    "\u00e9",
    "\x00",
    "\r",
    "\x0c",
    "\u2028",
]


def _pieces(min_size: int, max_size: int, extra: tuple[str, ...] = ()) -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from([*SNIPPETS, *extra]), min_size=min_size, max_size=max_size).map("".join)


_word = st.one_of(
    st.text(alphabet="abcxyz019/=.,-_:", min_size=1, max_size=8),
    _pieces(1, 4),
)
_command = st.builds(
    lambda name, args, end: name + "".join(" " + a for a in args) + end,
    st.sampled_from(
        [
            "linux /vmlinuz",
            "linux $bootprefix/k",
            "initrd /initrd.img",
            "search --set=root -u",
            "set a=",
            "echo",
        ]
    ),
    st.lists(_word, max_size=5),
    st.sampled_from(["\n", ";", " # c\n", "\n\n"]),
)


@st.composite
def _generated(draw: st.DrawFn, depth: int = 0) -> str:
    """A grub-shaped config: commands, menu entries, if blocks (not always well formed)."""
    pieces = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["command", "command", "menu", "if", "snippet"]))
        if kind == "menu" and depth < 3:
            pieces.append(f"menuentry {draw(_word)} {{\n{draw(_generated(depth + 1))}}}\n")
        elif kind == "if" and depth < 3:
            pieces.append(f"if {draw(_command)}then\n{draw(_generated(depth + 1))}else\n true\nfi\n")
        elif kind == "snippet":
            pieces.append(draw(st.sampled_from(SNIPPETS)))
        else:
            pieces.append(draw(_command))
    return "".join(pieces)


def _mutate(draw: st.DrawFn, text: str) -> str:
    """A few insertions, deletions, duplications and replacements, at drawn places."""
    for _ in range(draw(st.integers(1, 6))):
        op = draw(st.sampled_from(["insert", "delete", "duplicate", "replace"]))
        at = draw(st.integers(0, len(text)))
        end = draw(st.integers(at, min(len(text), at + 64)))
        if op == "insert":
            text = text[:at] + draw(st.sampled_from(SNIPPETS)) + text[at:]
        elif op == "delete":
            text = text[:at] + text[end:]
        elif op == "duplicate":
            text = text[:end] + text[at:end] * draw(st.integers(1, 3)) + text[end:]
        else:
            text = text[:at] + draw(st.sampled_from(SNIPPETS)) + text[end:]
    return text


@st.composite
def _mutated(draw: st.DrawFn, seeds: list[str]) -> str:
    return _mutate(draw, draw(st.sampled_from(seeds)))


grub_texts = st.one_of(_generated(), _mutated(GRUB_SEEDS), st.sampled_from(GRUB_SEEDS))


# ---------------------------------------------------------------------- what liveos does
def _bootstrap_iso(config: GrubConfig) -> None:
    config.set_search_label("LIVEOS_1")
    config.prefix_boot_paths("/boot")
    config.set_root_live("/liveos/rootfs.img", label="LIVEOS_1")
    config.append_args(["rd.live.image", "rd.live.overlay.overlayfs=1"])
    config.disable_selinux()
    config.append_args(["console=ttyS0", "a b", "x=$y"])


def _bootstrap_pxe(config: GrubConfig) -> None:
    config.remove_search()
    config.set_root_live("/liveos/rootfs.img", url="http://10.0.2.100/live.iso")
    config.append_args(["ip=dhcp", "rd.neednet=1"])
    config.append_args(["rd.live.image", "rd.overlay"])


def _full_os_iso(config: GrubConfig) -> None:
    config.set_search_label("LIVEOS_2")
    config.remove_root().set_initrd("/boot/initrd.img")
    config.disable_selinux()


def _full_os_pxe(config: GrubConfig) -> None:
    config.remove_search()
    config.prefix_boot_paths("/boot")
    config.remove_root().set_initrd("/initrd.img")
    config.append_args(["quiet"])


SEQUENCES: dict[str, Callable[[GrubConfig], None]] = {
    "bootstrap-iso": _bootstrap_iso,
    "bootstrap-pxe": _bootstrap_pxe,
    "full-os-iso": _full_os_iso,
    "full-os-pxe": _full_os_pxe,
}


def _expect_image_error(error: LiveOSError) -> None:
    """A failure on hostile input is the image's fault, never a liveos bug."""
    assert not isinstance(error, InternalError), error
    assert isinstance(error, ImageError), error


def check_grub(text: str, *, timed: bool = True) -> None:
    """Parse, query, edit (each sequence twice): only results or ImageErrors, all consistent."""
    started = time.process_time()
    try:
        config = GrubConfig.parse(text, PATH)
    except LiveOSError as error:
        _expect_image_error(error)
        assert PATH in str(error)
        RUNS["(grub texts refused)"] += 1
        return
    RUNS["(grub texts parsed)"] += 1
    assert config.render() == text
    for query in (
        config.kernel_paths,
        config.initrd_paths,
        config.kernel_lines,
        config.kernel_args,
        config.variables,
        config.env_files,
        config.known_label,
        lambda: config.menu_entries,
    ):
        try:
            query()
        except LiveOSError as error:
            _expect_image_error(error)
    for name, sequence in SEQUENCES.items():
        edited = GrubConfig.parse(text, PATH)
        try:
            sequence(edited)
            once = edited.render()
        except LiveOSError as error:
            _expect_image_error(error)
            continue
        again = GrubConfig.parse(once, PATH)  # what liveos writes must parse
        assert again.render() == once
        sequence(again)
        assert again.render() == once, f"{name} is not idempotent"
        RUNS["(edit sequences checked)"] += 1
        assert edited.kernel_args() == again.kernel_args()
    assert not timed or time.process_time() - started < PER_INPUT_SECONDS


# ---------------------------------------------------------------------- grub.cfg
@FUZZ
@given(grub_texts)
def test_fuzz_grub_config(text: str) -> None:
    RUNS["grub_config"] += 1
    check_grub(text)


@settings(FUZZ, max_examples=examples(1000))
@given(_pieces(0, 60))
def test_fuzz_grub_config_from_pieces(text: str) -> None:
    """Any sequence of grammar-relevant pieces: mostly syntax errors, which must all be ImageErrors."""
    RUNS["grub_config_from_pieces"] += 1
    check_grub(text)


@settings(FUZZ, max_examples=examples(1000))
@given(st.text(max_size=200))
def test_fuzz_tokenize_any_text(text: str) -> None:
    """Any unicode at all: tokens or an ImageError; every token's span is its source."""
    RUNS["tokenize_any_text"] += 1
    try:
        tokens = tokenize(text, PATH)
    except LiveOSError as error:
        _expect_image_error(error)
        return
    for token in tokens:
        assert text[token.start : token.end] == token.source
        for part in token.parts:
            assert token.start <= part.start <= part.end <= token.end


@settings(FUZZ, max_examples=examples(60))
@given(_mutated(GRUB_SEEDS))
def test_fuzz_grub_memory_is_bounded(text: str) -> None:
    """A small config (the seeds are at most 7 KiB) never needs more than a few MiB."""
    RUNS["grub_memory"] += 1
    assert _peak_memory(text) < 4 * MIB + 300 * len(text)


def _peak_memory(text: str) -> int:
    """Bytes at the peak of parsing, querying and editing ``text`` (every sequence, twice)."""
    with measured() as usage:
        check_grub(text, timed=False)  # tracemalloc makes allocation several times slower
    return usage.peak


def test_grub_memory_of_a_64k_config() -> None:
    """Some 100 bytes per byte of config, all of it (tokens are objects): bounded, linear."""
    RUNS["grub_memory"] += 1
    debian = (DATA / "debian-bookworm.cfg").read_text()
    text = debian * (64 * 1024 // len(debian))
    assert len(text) < 64 * 1024 and _peak_memory(text) < 4 * MIB + 300 * len(text)


# ---------------------------------------------------------------------- BLS entries
def _bls_edits(entry: BlsEntry) -> None:
    entry.prefix_boot_paths("/boot")
    entry.inline_kernelopts(KernelArgs.parse("root=UUID=x ro quiet"))
    entry.set_root_live(label="LIVEOS_1")
    entry.append_args(["rd.live.image"])
    entry.disable_selinux()
    entry.remove_root()
    entry.set_initrd("/boot/initrd.img")


@FUZZ
@given(st.one_of(_mutated(BLS_SEEDS), _pieces(0, 40, ("linux /k\n", "options ", "title ", "version "))))
def test_fuzz_bls_entry(text: str) -> None:
    RUNS["bls_entry"] += 1
    started = time.process_time()
    path = "/boot/loader/entries/x.conf"
    try:
        entry = BlsEntry.parse(text, path)
    except LiveOSError as error:
        _expect_image_error(error)
        assert path in str(error)
        return
    assert entry.render() == text
    try:
        _ = (entry.title, entry.initrds, entry.options, entry.is_rescue)
        menu = render_menu([entry])
    except LiveOSError as error:
        _expect_image_error(error)
    else:
        GrubConfig.parse(menu)  # an entry's menuentry is valid grub, whatever the entry says
    try:
        _bls_edits(entry)
        once = entry.render()
    except LiveOSError as error:
        _expect_image_error(error)
        return
    again = BlsEntry.parse(once, path)
    _bls_edits(again)
    assert again.render() == once
    assert time.process_time() - started < PER_INPUT_SECONDS


# ---------------------------------------------------------------------- grubenv, env files, kernel args
@st.composite
def _grubenv_bytes(draw: st.DrawFn) -> bytes:
    text = _mutate(draw, GRUBENV_SEED.decode())
    raw = text.encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        raw += draw(st.binary(max_size=16))
    return raw


@FUZZ
@given(st.one_of(_grubenv_bytes(), st.binary(max_size=200)))
def test_fuzz_grubenv(data: bytes) -> None:
    RUNS["grubenv"] += 1
    try:
        env = GrubEnv.parse(data, "/boot/grub2/grubenv")
        assert env.items() is not None and (env.kernelopts is None or len(env.kernelopts) >= 0)
    except LiveOSError as error:
        _expect_image_error(error)
        return
    assert env.render() == data
    env.set("liveos", "x\\y\nz")
    try:
        rendered = env.render()
    except LiveOSError as error:  # no room left in the block
        _expect_image_error(error)
        return
    assert GrubEnv.parse(rendered).get("liveos") == "x\\y\nz"


@settings(FUZZ, max_examples=examples(1000))
@given(st.one_of(st.text(alphabet="ab=#\\\n \t\u00e9", max_size=40), _mutated([ENV_SEED])))
def test_fuzz_env_vars_match_a_plain_reading(text: str) -> None:
    """parse_env_vars agrees with the definition: a backslash escapes the next character."""
    RUNS["env_vars"] += 1
    values: dict[str, str] = {}
    line: list[str] = []
    escaped = False
    for char in text:
        if escaped:
            line.append(char)
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == "\n":
            entry = "".join(line)
            line = []
            if not entry.startswith("#") and "=" in entry:
                key, _, value = entry.partition("=")
                values[key] = value
        else:
            line.append(char)
    assert parse_env_vars(text) == values


@settings(FUZZ, max_examples=examples(1000))
@given(_pieces(0, 40, ("a", "b=c", " ")))
def test_fuzz_kernel_args(text: str) -> None:
    RUNS["kernel_args"] += 1
    for syntax in ArgSyntax:
        try:
            args = KernelArgs.parse(text, syntax, path="/proc/cmdline")
        except LiveOSError as error:
            _expect_image_error(error)
            continue
        assert KernelArgs.parse(args.render(syntax), syntax) == args
        edited = args.set("root", "live:CDLABEL=X").append("rd.live.image").remove("ro")
        assert edited.set("root", "live:CDLABEL=X").append("rd.live.image").remove("ro") == edited


# ---------------------------------------------------------------------- large hostile inputs
def _timed(action: Callable[[], object]) -> tuple[float, object]:
    """CPU seconds of ``action`` (not wall time: other processes' load must not fail a bound)."""
    started = time.process_time()
    try:
        result: object = action()
    except LiveOSError as error:
        _expect_image_error(error)
        result = error
    return time.process_time() - started, result


def _full_sequence(text: str, sequence: str = "bootstrap-iso") -> float:
    """CPU seconds for parse + an edit sequence + reading the result back (as a rebuild does)."""
    started = time.process_time()
    config = GrubConfig.parse(text, PATH)
    try:
        SEQUENCES[sequence](config)
        config.render()
        config.kernel_args()
    except LiveOSError as error:
        _expect_image_error(error)
    return time.process_time() - started


def test_large_quoted_word() -> None:
    """A 1 MiB double-quoted word took 23 s to parse and minutes to edit (one Part per character)."""
    RUNS["large_inputs"] += 1
    text = 'menuentry "a" {\n\tlinux /vmlinuz "' + "x" * (MIB - 64) + '" ro\n\tinitrd /initrd.img\n}\n'
    seconds, config = _timed(lambda: GrubConfig.parse(text, PATH))
    assert isinstance(config, GrubConfig) and seconds < 0.5
    assert config.kernel_args()[0].texts()[0] == "x" * (MIB - 64)
    for sequence in SEQUENCES:
        assert _full_sequence(text, sequence) < 2.0
    escapes = 'linux /k "' + "\\$" * (MIB // 2 - 20) + '"\n'
    seconds, config = _timed(lambda: GrubConfig.parse(escapes, PATH))
    assert isinstance(config, GrubConfig) and seconds < 0.5
    assert _full_sequence(escapes) < 2.0


@pytest.mark.parametrize(
    "unit",
    [
        "a;",
        "\n",
        "linux /k a\n",
        "menuentry 'e' {\n linux /vmlinuz root=/dev/sda ro quiet\n initrd /initrd.img\n search -u X\n}\n",
        "search -u x;",
        "'a'",
        "$a",
        "set a=$a$a\n",
    ],
    ids=["commands", "newlines", "linux-lines", "menu-entries", "search-line", "squoted", "vars", "sets"],
)
def test_large_configs(unit: str) -> None:
    """1 MiB of one construct is refused fast (too many words); as much as the limit allows parses
    and goes through the edits in a few seconds (the bound has room for a loaded CI machine)."""
    RUNS["large_inputs"] += 1
    huge = unit * (MIB // len(unit))
    seconds, result = _timed(lambda: GrubConfig.parse(huge, PATH))
    assert seconds < 1.5, seconds
    tokens_per_unit = len(tokenize(unit))
    allowed = unit * (MAX_TOKENS // max(tokens_per_unit, 1) - 1)
    seconds, result = _timed(lambda: GrubConfig.parse(allowed, PATH))
    assert seconds < 1.5, seconds
    if isinstance(result, GrubConfig):
        assert result.render() == allowed
        assert _full_sequence(allowed) < 8.0


def test_variable_doubling_is_refused() -> None:
    """``set a=$a$a`` a hundred times would ask for 2**100 bytes."""
    RUNS["large_inputs"] += 1
    text = "set a=x\n" + "set a=$a$a\n" * 100 + "linux $a/vmlinuz\ninitrd $a/initrd\n"
    config = GrubConfig.parse(text, PATH)
    for query in (config.kernel_paths, config.variables, lambda: config.prefix_boot_paths("/boot")):
        seconds, result = _timed(query)
        assert isinstance(result, ImageError) and "expand" in str(result) and seconds < 1.0


def test_deep_nesting() -> None:
    RUNS["large_inputs"] += 1
    for opener, closer in (("submenu x {\n", "}\n"), ("if a; then\n", "fi\n"), ("while a; do\n", "done\n")):
        deepest = opener * MAX_NESTING + "linux /k a\n" + closer * MAX_NESTING
        config = GrubConfig.parse(deepest, PATH)
        config.set_root_live(label="L")
        assert len(config.kernel_args()) == 1
        text = opener * (MAX_NESTING + 1) + "linux /k\n" + closer * (MAX_NESTING + 1)
        seconds, result = _timed(lambda text=text: GrubConfig.parse(text, PATH))  # type: ignore[misc]
        assert isinstance(result, ImageError) and "nested" in str(result) and seconds < 1.0
        text = opener * 100_000 + "linux /k\n" + closer * 100_000  # too many words, too deep
        seconds, result = _timed(lambda text=text: GrubConfig.parse(text, PATH))  # type: ignore[misc]
        assert isinstance(result, ImageError) and seconds < 1.0


def test_long_kernel_lines_are_refused() -> None:
    RUNS["large_inputs"] += 1
    line = "linux /k " + "a " * (MAX_KERNEL_ARGS + 1) + "\n"
    config = GrubConfig.parse(line, PATH)
    seconds, result = _timed(config.kernel_args)
    assert isinstance(result, ImageError) and PATH in str(result) and seconds < 1.0
    bls = "linux /k\noptions " + "a " * MIB + "\n"
    seconds, result = _timed(lambda: BlsEntry.parse(bls, "x.conf").options)
    assert isinstance(result, ImageError) and seconds < 1.0
    seconds, result = _timed(lambda: KernelArgs.parse("a " * MIB, ArgSyntax.KERNEL))
    assert isinstance(result, ImageError) and seconds < 1.0


def test_large_env_files() -> None:
    RUNS["large_inputs"] += 1
    for text in ("k=" + "v" * MIB + "\n", "\\" * MIB, "\\\n" * (MIB // 2), "a\\b=c\n" * (MIB // 6)):
        seconds, _ = _timed(lambda text=text: parse_env_vars(text))  # type: ignore[misc]
        assert seconds < 0.5
