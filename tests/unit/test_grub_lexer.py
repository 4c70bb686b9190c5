"""The grub tokenizer: GRUB's word grammar, exact spans, errors with line/column, quoting."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from liveos.errors import ImageError
from liveos.grub.lexer import PartKind, TokenKind, quote, tokenize


def words(text: str) -> list[str | None]:
    return [t.literal for t in tokenize(text) if t.kind is TokenKind.WORD]


def test_words_quotes_and_escapes() -> None:
    assert words("linux /vmlinuz root=UUID=x ro") == ["linux", "/vmlinuz", "root=UUID=x", "ro"]
    assert words("echo 'a b' \"c d\" e\\ f") == ["echo", "a b", "c d", "e f"]
    assert words("echo 'no \\escape'") == ["echo", "no \\escape"]
    assert words('echo "\\$x \\" \\\\ \\q"') == ["echo", '$x " \\ \\q']
    assert words("echo a'b'\"c\"d") == ["echo", "abcd"]


def test_line_continuation_inside_and_between_words() -> None:
    assert words("linux /k \\\n  ro") == ["linux", "/k", "ro"]
    assert words("ab\\\ncd") == ["abcd"]
    assert words('"ab\\\ncd"') == ["abcd"]


def test_variables() -> None:
    (word,) = [t for t in tokenize("$bootprefix/${name}x") if t.kind is TokenKind.WORD]
    assert [p.kind for p in word.parts] == [PartKind.VAR, PartKind.TEXT, PartKind.VAR, PartKind.TEXT]
    assert word.template() == "${bootprefix}/${name}x"
    assert word.expand({"bootprefix": "/boot", "name": "vmlinuz"}) == "/boot/vmlinuzx"
    assert word.expand({}) is None
    quoted = tokenize('"$a-b"')[0]
    assert quoted.parts[0].kind is PartKind.DQUOTED_VAR
    assert words("echo $ a$") == ["echo", "$", "a$"]  # a lone '$' is literal
    assert words("echo '$x'") == ["echo", "$x"]


def test_comments_only_at_word_start() -> None:
    assert words("echo a#b # comment\nls") == ["echo", "a#b", "ls"]
    kinds = [t.kind for t in tokenize("a;b{c}d|e&f<g>h")]
    assert TokenKind.SEMI in kinds and TokenKind.LBRACE in kinds and TokenKind.RBRACE in kinds
    assert words("a;b{c}d") == ["a", "b", "c", "d"]


def test_spans_are_exact() -> None:
    text = "  linux\t'/a b'  \"x\"y  # c\n"
    for token in tokenize(text):
        assert text[token.start : token.end] == token.source
    assert [t.source for t in tokenize(text)] == ["linux", "'/a b'", '"x"y', "\n"]


@pytest.mark.parametrize(
    ("text", "line", "column", "what"),
    [
        ("echo ok\necho 'open", 2, 6, "single-quoted"),
        ('a\n  b "x', 2, 5, "double-quoted"),
        ("echo \\", 1, 6, "after '\\'"),
        ("x\necho ${abc", 2, 6, "missing '}'"),
        ("echo ${a-b}", 1, 6, "invalid variable name"),
    ],
)
def test_errors_carry_file_line_and_column(text: str, line: int, column: int, what: str) -> None:
    with pytest.raises(ImageError) as error:
        tokenize(text, "/boot/grub/grub.cfg")
    message = str(error.value)
    assert f"/boot/grub/grub.cfg:{line}:{column}" in message
    assert what in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ro", "ro"),
        ("console=ttyS0,115200", "console=ttyS0,115200"),
        ("a b", '"a b"'),
        ("$kernelopts", '"\\$kernelopts"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("#x", '"#x"'),
        ("", '""'),
        ("a;b", '"a;b"'),
    ],
)
def test_quote(value: str, expected: str) -> None:
    assert quote(value) == expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30))
def test_quote_round_trips_as_one_word(value: str) -> None:
    tokens = tokenize("cmd " + quote(value))
    assert [t.kind for t in tokens] == [TokenKind.WORD, TokenKind.WORD]
    assert tokens[1].literal == value


@pytest.mark.skipif(shutil.which("grub-script-check") is None, reason="grub-common not installed")
@settings(max_examples=40, deadline=None)
@given(st.text(alphabet="ab $\"'\\{};#|&<>\t=-", min_size=1, max_size=20))
def test_quoted_words_are_valid_for_grub_itself(value: str) -> None:
    """grub's own parser (grub-script-check) accepts every word quote() writes."""
    script = f"echo {quote(value)}\n"
    result = subprocess.run(["grub-script-check"], input=script.encode(), capture_output=True, check=False)
    assert result.returncode == 0, (script, result.stdout, result.stderr)


# ---------------------------------------------------------------------- hostile input (regressions)
def test_long_quoted_words_keep_their_meaning() -> None:
    """(How long they take is the fuzz suite's business: tests/fuzz/test_fuzz_sizes.py.)"""
    for body in ("x" * 1000, "\\$" * 1000, "a\\\nb" * 1000):
        (word,) = tokenize(f'"{body}"')
        assert word.literal == body.replace("\\$", "$").replace("\\\n", "")


def test_adjacent_quoted_pieces_merge_like_before() -> None:
    (word,) = tokenize("'a''b'\"c\"\"d\\\ne\"f\\ g$h")
    assert [(p.kind, p.text, p.start, p.end) for p in word.parts] == [
        (PartKind.SQUOTED, "ab", 0, 6),
        (PartKind.DQUOTED, "c", 7, 8),
        (PartKind.DQUOTED, "d", 10, 11),
        (PartKind.DQUOTED, "e", 13, 14),
        (PartKind.TEXT, "f g", 15, 19),
        (PartKind.VAR, "h", 19, 21),
    ]


def test_span_tokenizing_reports_positions_in_the_whole_text() -> None:
    text = "title x\noptions a 'b c' $d\n"
    start = text.index("a '")
    tokens = tokenize(text, "x.conf", start=start, end=len(text) - 1)
    assert [t.source for t in tokens] == ["a", "'b c'", "$d"]
    assert all(text[t.start : t.end] == t.source for t in tokens)
    with pytest.raises(ImageError, match=r"x\.conf:2:11"):
        tokenize("title x\noptions a 'b c\n", "x.conf", start=start, end=len(text) - 1)


def test_token_limit_and_short_error_messages() -> None:
    assert len(tokenize("a b c", limit=3)) == 3
    with pytest.raises(ImageError, match="more than 3 words"):
        tokenize("a b c d", limit=3)
    with pytest.raises(ImageError, match="invalid variable name") as caught:
        tokenize("echo ${" + "-" * 100_000 + "}")
    assert len(str(caught.value)) < 500  # hostile text is quoted cut short
