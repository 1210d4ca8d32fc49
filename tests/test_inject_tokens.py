"""RFC 822 tokens as qmail-inject reads and writes them: tokenize, refold, walk address lists, quote."""

from __future__ import annotations

import pytest

from qldap.inject.tokens import (
    Kind,
    SyntaxProblem,
    Token,
    quote2,
    quote_need,
    rewrite_list,
    tokenize,
    unparse,
    unquote,
)


def kinds(text: str) -> list[tuple[str, str]]:
    return [(t.kind.name, t.text) for t in tokenize(text)]


def test_tokenize_specials_words_and_blanks() -> None:
    assert kinds('To: "a b" <x.y@[1.2.3.4]>, (c) z;\n') == [
        ("ATOM", "To"), ("COLON", ""), ("QUOTE", "a b"), ("LEFT", ""), ("ATOM", "x"), ("DOT", ""),
        ("ATOM", "y"), ("AT", ""), ("LITERAL", "1.2.3.4"), ("RIGHT", ""), ("COMMA", ""),
        ("COMMENT", "c"), ("ATOM", "z"), ("SEMI", ""),
    ]  # fmt: skip


def test_tokenize_escapes_and_nested_comments() -> None:
    assert kinds(r'"a\"b" (x (y) \) z) a\@b') == [
        ("QUOTE", 'a"b'), ("COMMENT", "x y ) z"), ("ATOM", "a@b"),
    ]  # fmt: skip


def test_odd_atoms_become_quoted_strings() -> None:
    assert kinds("caf\u00e9 a)b x\\\\y") == [("QUOTE", "caf\u00e9"), ("QUOTE", "a)b"), ("QUOTE", "x\\y")]


@pytest.mark.parametrize("text", [")a", "x ] y", '"open', "(open", "[open", '"a\\'])
def test_tokenize_rejects_unbalanced(text: str) -> None:
    with pytest.raises(SyntaxProblem):
        tokenize(text)


def test_unparse_spacing_and_escaping() -> None:
    toks = [Token(Kind.ATOM, "To"), Token(Kind.COLON), Token(Kind.QUOTE, 'J "Q" P'), Token(Kind.LEFT),
            Token(Kind.ATOM, "j"), Token(Kind.AT), Token(Kind.ATOM, "x"), Token(Kind.RIGHT),
            Token(Kind.COMMENT, "c(d)")]  # fmt: skip
    assert unparse(toks) == 'To: "J \\"Q\\" P" <j@x>(c\\(d\\))\n'  # no blank after > (as qmail)


def test_unparse_folds_after_commas_at_80_columns() -> None:
    addrs = ", ".join(f"user{i}@some.long.domain.example" for i in range(5))
    text = unparse(tokenize(f"To: {addrs}"))
    assert text == (
        "To: user0@some.long.domain.example, user1@some.long.domain.example,\n"
        "  user2@some.long.domain.example, user3@some.long.domain.example,\n"
        "  user4@some.long.domain.example\n"
    )
    # a line may grow while the joined line plus two stays within 80 bytes
    first = "To: " + "a" * 70 + "@b,"  # 77 bytes: + 2 + " c" = 81 > 80
    assert unparse(tokenize(first + " c")) == first + "\n  c\n"
    first = "To: " + "a" * 69 + "@b,"  # 76 bytes: + 2 + " c" = 80
    assert unparse(tokenize(first + " c")) == first + " c\n"


def test_unquote_drops_comments_and_quotes() -> None:
    assert unquote(tokenize('"a b"@[10.0.0.1] (x)')) == "a b@[10.0.0.1]"


def tag(addr: list[Token]) -> list[Token]:
    """A rewrite that marks each address so the tests can see what was taken as one."""
    return [*addr, Token(Kind.DOT), Token(Kind.ATOM, "X")] if addr else addr


@pytest.mark.parametrize(
    ("field", "want"),
    [
        ("To: a, b", "To: a.X, b.X\n"),
        ("To: a b", "To: a.X, b.X\n"),  # two words are two addresses
        ("To: a . b@c", "To: a.b@c.X\n"),
        ("To: Joe Q <j@x>, k", "To: Joe Q <j@x.X>, k.X\n"),
        ("To: j@x (Joe)", "To: j@x.X (Joe)\n"),
        ("To: list: a, b;, c", "To: list: a.X, b.X;, c.X\n"),
        ("To: <>", "To: <>\n"),
        ("Cc: recipient list not shown: ;", "Cc: recipient list not shown: ;\n"),
    ],
)
def test_rewrite_list_finds_each_address(field: str, want: str) -> None:
    assert unparse(rewrite_list(tokenize(field), tag)) == want


def test_rewrite_list_calls_back_right_to_left_including_empty() -> None:
    seen: list[str] = []

    def record(addr: list[Token]) -> list[Token]:
        seen.append(unquote(addr))
        return addr

    rewrite_list(tokenize("To: a, <>, b c"), record)
    assert seen == ["c", "b", "", "a"]


@pytest.mark.parametrize("field", ["To: a: b", "To: g: h: i;;", "To: a>", "To: x; y;"])
def test_rewrite_list_rejects_non_lists(field: str) -> None:
    with pytest.raises(SyntaxProblem):
        rewrite_list(tokenize(field), tag)


@pytest.mark.parametrize(
    ("local", "need"),
    [("joe", False), ("j.o-e+x", False), ("", True), (".joe", True), ("joe.", True), ("j..oe", True),
     ("j oe", True), ("j@oe", True), ("j\u00e9", True), ('j"', True), ("a,b", True)],
)  # fmt: skip
def test_quote_need(local: str, need: bool) -> None:
    assert quote_need(local) is need


def test_quote2_quotes_only_the_local_part() -> None:
    assert quote2("joe@x") == "joe@x"
    assert quote2("j oe@x@y") == '"j oe@x"@y'
    assert quote2('a"b') == '"a\\"b"'
    assert quote2("") == ""
