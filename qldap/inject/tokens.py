"""RFC 822 tokens as qmail reads and writes them: tokenize, refold, walk an address list, quote.

Why not :mod:`email`: qmail-inject's rewriting is defined on this token model and must reproduce its
quirks so mail looks the same as from the C program — address lists are read right to left, two bare
words are two addresses (``To: joe bob`` gets a comma), comments keep their place but do not count,
a group's phrase is left alone, nested comment parentheses keep only their content, and rewritten
fields are refolded after commas at 80 columns.

Text is ``str`` decoded with UTF-8/``surrogateescape`` (any byte survives the round trip); folding
counts bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from qldap.address import quote_address
from qldap.records import to_bytes

LINELEN = 80


class Kind(Enum):
    """RFC 822 lexical token kinds."""

    ATOM = "atom"
    QUOTE = "quote"  # quoted string, stored unquoted
    LITERAL = "literal"  # [domain literal], stored without brackets
    COMMENT = "comment"  # (comment), stored without parentheses
    COMMA = ","
    AT = "@"
    DOT = "."
    LEFT = "<"
    RIGHT = ">"
    SEMI = ";"
    COLON = ":"


@dataclass(frozen=True, slots=True)
class Token:
    """One token; *text* only for the four word kinds."""

    kind: Kind
    text: str = ""


class SyntaxProblem(ValueError):
    """A header field or address that cannot be tokenized or is not an address list."""


_SPECIALS = {c: Kind(c) for c in ",@.<>;:"}
_NOT_ATOM = frozenset(' \t\r\n(["<>;:@,.')
_ESCAPED = frozenset('"[]()\\\r\n')
_WORDS = (Kind.ATOM, Kind.QUOTE, Kind.LITERAL, Kind.COMMENT)
_PHRASE = (Kind.COMMENT, Kind.ATOM, Kind.QUOTE, Kind.AT, Kind.DOT)


def _delimited(text: str, i: int, close: str, nests: bool) -> tuple[str, int]:
    """The content of a quote/literal/comment starting after index *i*; (content, index of closer)."""
    out: list[str] = []
    level = 1
    while True:
        i += 1
        if i >= len(text):
            raise SyntaxProblem("unterminated " + close)
        ch = text[i]
        if nests and ch == "(":
            level += 1  # nested parentheses are dropped, only their content is kept
        elif ch == close:
            level -= 1
            if not level:
                return "".join(out), i
        else:
            if ch == "\\":
                i += 1
                if i >= len(text):
                    raise SyntaxProblem("backslash at end")
                ch = text[i]
            out.append(ch)


def tokenize(text: str) -> list[Token]:
    """RFC 822 tokens of *text*; blanks and line ends separate tokens.

    An atom holding a control character, a non-ASCII character, ``)``, ``]`` or a backslash is
    turned into a quoted string.

    Raises:
        SyntaxProblem: an unbalanced ``)``/``]`` or an unterminated quote, literal or comment.
    """
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        ch = text[i]
        if ch in _SPECIALS:
            tokens.append(Token(_SPECIALS[ch]))
        elif ch in " \t\r\n":
            pass
        elif ch in ")]":
            raise SyntaxProblem(f"unbalanced {ch}")
        elif ch == "(":
            body, i = _delimited(text, i, ")", True)
            tokens.append(Token(Kind.COMMENT, body))
        elif ch == '"':
            body, i = _delimited(text, i, '"', False)
            tokens.append(Token(Kind.QUOTE, body))
        elif ch == "[":
            body, i = _delimited(text, i, "]", False)
            tokens.append(Token(Kind.LITERAL, body))
        else:
            chars: list[str] = []
            while True:
                if text[i] == "\\":
                    i += 1
                    if i >= n:
                        break
                chars.append(text[i])
                i += 1
                if i >= n or text[i] in _NOT_ATOM:
                    break
            i -= 1
            atom = "".join(chars)
            odd = any(c < " " or c > "~" or c in ")]\\" for c in atom)
            tokens.append(Token(Kind.QUOTE if odd else Kind.ATOM, atom))
        i += 1
    return tokens


def _needspace(last: Kind | None, new: Kind) -> bool:
    if last is None:
        return False
    if last in (Kind.COLON, Kind.COMMA) or new is Kind.LEFT:
        return True
    return last in _WORDS and new in _WORDS


def render(token: Token) -> str:
    """One token as header text (words escaped and delimited)."""
    if token.kind not in _WORDS:
        return token.kind.value
    body = "".join("\\" + c if c in _ESCAPED else c for c in token.text)
    if token.kind is Kind.QUOTE:
        return f'"{body}"'
    if token.kind is Kind.LITERAL:
        return f"[{body}]"
    if token.kind is Kind.COMMENT:
        return f"({body})"
    return body


def _blen(text: str) -> int:
    return len(to_bytes(text))


def unparse(tokens: list[Token], linelen: int = LINELEN) -> str:
    """*tokens* as header text ending in ``\\n``, folded after commas to stay within *linelen*.

    Lines are filled greedily: the next comma-separated piece joins the current line while the
    joined line plus two stays within *linelen*; otherwise it starts a new line indented by two.
    """
    pieces: list[str] = []
    current: list[str] = []
    last: Kind | None = None
    for token in tokens:
        if _needspace(last, token.kind):
            current.append(" ")
        last = token.kind
        current.append(render(token))
        if token.kind is Kind.COMMA:
            pieces.append("".join(current))
            current = []
    pieces.append("".join(current))
    lines: list[str] = []
    line = pieces[0]
    for piece in pieces[1:]:
        if _blen(line) + 2 + _blen(piece) <= linelen:
            line += piece
        else:
            lines.append(line)
            line = " " + piece
    lines.append(line)
    return "\n".join(lines) + "\n"


def unquote(tokens: list[Token]) -> str:
    """The address text of *tokens*: quotes removed, literals bracketed, comments dropped."""
    out: list[str] = []
    for token in tokens:
        if token.kind is Kind.LITERAL:
            out.append(f"[{token.text}]")
        elif token.kind in (Kind.ATOM, Kind.QUOTE):
            out.append(token.text)
        elif token.kind is not Kind.COMMENT:
            out.append(token.kind.value)
    return "".join(out)


Rewrite = Callable[[list[Token]], list[Token]]


def rewrite_list(tokens: list[Token], rewrite: Rewrite, start: int = 2) -> list[Token]:
    """Rewrite every address of an address list; tokens before *start* (``Name`` ``:``) stay as they are.

    The list is read from right to left: ``<…>`` is an address whose phrase stays; a group's
    ``phrase:`` and ``;`` stay; comments stay in place; words with nothing but blanks or comments
    between them are separate addresses and get a comma.  *rewrite* is called once per address
    (also for an empty ``<>``), right to left, with the address in reading order.

    Raises:
        SyntaxProblem: unbalanced ``<>``, a ``:`` outside a group, or a nested group.
    """
    out: list[Token] = []  # built right to left
    addr: list[Token] = []  # the address being collected, right to left
    ingroup = False
    wordok = True

    def flush(always: bool = False) -> bool:
        if not addr and not always:
            return False
        out.extend(reversed(rewrite(addr[::-1])))
        addr.clear()
        return True

    def flush_comma() -> None:
        if flush():
            out.append(Token(Kind.COMMA))

    i = len(tokens) - 1
    while i >= start:
        token = tokens[i]
        kind = token.kind
        if kind is Kind.SEMI:
            flush_comma()
            if ingroup:
                raise SyntaxProblem("nested group")
            ingroup, wordok = True, True
        elif kind is Kind.COLON:
            flush()
            if not ingroup:
                raise SyntaxProblem("colon outside a group")
            ingroup = False
            while i >= start and tokens[i].kind is not Kind.COMMA:
                out.append(tokens[i])
                i -= 1
            if i >= start:
                out.append(tokens[i])
                i -= 1
            wordok = True
            continue
        elif kind is Kind.RIGHT:
            flush_comma()
            out.append(token)
            i -= 1
            while i >= start and tokens[i].kind is not Kind.LEFT:
                addr.append(tokens[i])
                i -= 1
            flush(always=True)
            if i < start:
                raise SyntaxProblem("> without <")
            out.append(tokens[i])
            i -= 1
            while i >= start and tokens[i].kind in _PHRASE:
                out.append(tokens[i])
                i -= 1
            wordok = False
            continue
        elif kind in (Kind.ATOM, Kind.QUOTE, Kind.LITERAL):
            if not wordok:
                flush_comma()
            wordok = False
            addr.append(token)
            i -= 1
            continue
        elif kind is Kind.COMMA:
            flush()
            wordok = True
        elif kind is not Kind.COMMENT:  # @ . < belong to the address
            wordok = True
            addr.append(token)
            i -= 1
            continue
        out.append(token)  # ; , and comments
        i -= 1
    flush()
    return tokens[:start] + out[::-1]


def quote_need(local: str) -> bool:
    """True when *local* must be a quoted string in an address (empty, specials, bad dots, non-ASCII)."""
    if not local or local[0] == "." or local[-1] == "." or ".." in local:
        return True
    return any(c <= " " or c > "~" or c in '"(),:;<>@[\\]' for c in local)


def quote_string(text: str) -> str:
    """*text* as an RFC 822 quoted string."""
    return '"' + "".join("\\" + c if c in '\r\n"\\' else c for c in text) + '"'


def quote2(address: str) -> str:
    """*address* as RFC 822 text: the part before the last ``@`` quoted when it needs it."""
    return quote_address(address)  # qldap.address: the one implementation of qmail's quote2
