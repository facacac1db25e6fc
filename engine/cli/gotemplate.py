"""The subset of Go's ``text/template`` that docker's ``--format`` flag uses.

Dependency-free. Data are plain Python values (dicts, lists, scalars; other objects
through their attributes). Output mimics Go where scripts can see it: how values print
(``<no value>``, ``<nil>``, ``[a b]``, ``map[k:v]``, floats like ``%v``), compact JSON,
sorted map iteration, error texts, and ``tabwriter`` alignment for ``table`` formats.

Besides Go's builtins (``and or not len index slice print printf println eq ne lt le
gt ge``) the docker functions ``json join split lower upper title pad truncate`` exist.
Not supported: ``define``/``template``/``block``, methods with arguments, complex
numbers, ``html``/``js``/``urlquery``/``call``.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any, NamedTuple, NoReturn

from engine.errors import InvalidArgument

__all__ = ["NO_VALUE", "is_table", "render", "render_table", "table_header", "tabwrite"]


class _NoValue:
    """Go's invalid ``reflect.Value``: what a missing map key evaluates to."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<no value>"

    def __bool__(self) -> bool:
        return False


NO_VALUE: Any = _NoValue()
_NOARG: Any = object()  # "no value piped in" (Go's missingVal)


class _ParseError(Exception):
    def __init__(self, msg: str, pos: int):
        super().__init__(msg)
        self.pos = pos


class _ExecError(Exception):
    def __init__(self, msg: str, node: Any):
        super().__init__(msg)
        self.node = node


class _FuncError(Exception):
    """A template function failed; reported as ``error calling NAME: ...``."""


class _ArgError(Exception):
    """A template function got an argument of the wrong type; reported as is."""


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


# --------------------------------------------------------------------------- lexer


class _Tok(NamedTuple):
    kind: str  # text open close space field var dot ident keyword bool nil number ...
    text: str  # exact source text
    pos: int


_SPACE = " \t\r\n"
_KEYWORDS = frozenset(
    {"block", "break", "continue", "define", "else", "end", "if", "range", "template", "with"}
)
_WORD = re.compile(r"\w*")
_WORDS = {"true": "bool", "false": "bool", "nil": "nil"}
_NUMBER = re.compile(
    r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+"
    r"|(?:\d[\d_]*(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)"
)
_PUNCT = {"|": "pipe", "(": "lparen", ")": "rparen", ",": "comma", "=": "assign"}


def _close_delim(src: str, k: int) -> tuple[int, bool] | None:
    """``}}`` or the trimming `` -}}`` at ``k``: (position after it, trim following text)."""
    if src.startswith("}}", k):
        return k + 2, False
    if k < len(src) and src[k] in _SPACE and src.startswith("-}}", k + 1):
        return k + 4, True
    return None


def _lex(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, trim = 0, False
    while True:
        j = src.find("{{", i)
        # "{{- " trims the whitespace before it; "{{-3}}" is just the number -3.
        left_trim = j >= 0 and src.startswith("{{-", j) and src[j + 3 : j + 4] in tuple(_SPACE)
        text = src[i : len(src) if j < 0 else j]
        start = i
        if trim:
            stripped = text.lstrip(_SPACE)
            start += len(text) - len(stripped)
            text = stripped
        if left_trim:
            text = text.rstrip(_SPACE)
        if text:
            toks.append(_Tok("text", text, start))
        if j < 0:
            break
        k = j + (4 if left_trim else 2)
        if src.startswith("/*", k):  # a comment must fill the whole action
            close = src.find("*/", k + 2)
            delim = _close_delim(src, close + 2) if close >= 0 else None
            if delim is None:
                msg = "unclosed comment" if close < 0 else "comment ends before closing delimiter"
                raise _ParseError(msg, j)
            i, trim = delim
            continue
        toks.append(_Tok("open", src[j:k], j))
        i, trim = _lex_action(src, k, toks)
    toks.append(_Tok("eof", "", len(src)))
    return toks


def _lex_action(src: str, k: int, toks: list[_Tok]) -> tuple[int, bool]:
    """Tokenize one action from ``k`` up to and including its closing delimiter."""
    n, depth, start = len(src), 0, k
    while True:
        if k >= n:
            raise _ParseError("unclosed action", start)
        delim = _close_delim(src, k)
        if delim:
            if depth:
                raise _ParseError("unclosed left paren", k)
            toks.append(_Tok("close", src[k : delim[0]], k))
            return delim
        c = src[k]
        if c in _SPACE:
            e = k
            while e < n and src[e] in _SPACE and _close_delim(src, e) is None:
                e += 1
            kind = "space"
        elif src.startswith(":=", k):
            kind, e = "declare", k + 2
        elif c in _PUNCT:
            kind, e = _PUNCT[c], k + 1
            depth += c == "("
            if c == ")":
                if not depth:
                    raise _ParseError("unexpected right paren", k)
                depth -= 1
        elif c in "\"'":
            kind, e = ("string" if c == '"' else "char"), _scan_quote(src, k)
        elif c == "`":
            e = src.find("`", k + 1) + 1
            if not e:
                raise _ParseError("unterminated raw quoted string", k)
            kind = "string"
        elif c == "$":
            kind, e = "var", _WORD.match(src, k + 1).end()  # type: ignore[union-attr]
        elif c == "." and not src[k + 1 : k + 2].isdigit():
            e = _WORD.match(src, k + 1).end()  # type: ignore[union-attr]
            kind = "field" if e > k + 1 else "dot"
        elif (c.isdigit() or c in "+-.") and (m := _NUMBER.match(src, k)):
            kind, e = "number", m.end()
            if src[e : e + 1].isalnum():
                raise _ParseError(f"bad number syntax: {src[k : e + 1]!r}", k)
        elif c.isalpha() or c == "_":
            e = _WORD.match(src, k).end()  # type: ignore[union-attr]
            word = src[k:e]
            kind = "keyword" if word in _KEYWORDS else _WORDS.get(word, "ident")
        else:
            raise _ParseError(f"unrecognized character in action: U+{ord(c):04X} {c!r}", k)
        toks.append(_Tok(kind, src[k:e], k))
        k = e


def _scan_quote(src: str, k: int) -> int:
    quote, e = src[k], k + 1
    while e < len(src):
        if src[e] == "\\":
            e += 2
        elif src[e] == quote:
            return e + 1
        else:
            e += 1
    what = "quoted string" if quote == '"' else "character constant"
    raise _ParseError(f"unterminated {what}", k)


_ESC = re.compile(
    r"\\(?:([abfnrtv\\'\"])|x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([0-7]{3}))"
)
_SIMPLE_ESC = dict(zip("abfnrtv\\'\"", "\a\b\f\n\r\t\v\\'\"", strict=True))


def _unquote(tok: _Tok) -> str:
    body = tok.text[1:-1]
    if tok.text[0] == "`":
        return body
    out, i = [], 0
    while i < len(body):
        if body[i] != "\\":
            out.append(body[i])
            i += 1
            continue
        m = _ESC.match(body, i)
        if not m:
            raise _ParseError(f"invalid syntax: {tok.text}", tok.pos)
        simple, *codes = m.groups()
        out.append(
            _SIMPLE_ESC[simple]
            if simple
            else chr(int(next(filter(None, codes)), 8 if codes[3] else 16))
        )
        i = m.end()
    return "".join(out)


# --------------------------------------------------------------------------- parser


@dataclass(frozen=True, slots=True)
class _Field:
    pos: int
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Var:
    pos: int
    name: str
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Dot:
    pos: int


@dataclass(frozen=True, slots=True)
class _Lit:
    pos: int
    value: Any
    text: str


@dataclass(frozen=True, slots=True)
class _Ident:
    pos: int
    name: str


@dataclass(frozen=True, slots=True)
class _Chain:  # (pipeline).Field
    pos: int
    node: Any
    path: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Cmd:
    pos: int
    args: list[Any]


@dataclass(frozen=True, slots=True)
class _Pipe:
    pos: int
    decl: list[str]
    is_assign: bool
    cmds: list[_Cmd]


@dataclass(frozen=True, slots=True)
class _Text:
    text: str


@dataclass(frozen=True, slots=True)
class _Action:
    pipe: _Pipe


@dataclass(frozen=True, slots=True)
class _Control:  # if / with / range
    kind: str
    pipe: _Pipe
    body: list[Any]
    else_: list[Any] | None


@dataclass(frozen=True, slots=True)
class _Jump:  # break / continue
    kind: str


_OPERAND_START = frozenset(
    {"bool", "char", "dot", "field", "ident", "number", "nil", "string", "var", "lparen"}
)


def _show(node: Any) -> str:
    """The node as Go's parse tree prints it (the ``<...>`` in execution errors)."""
    if isinstance(node, _Field):
        return "." + ".".join(node.path)
    if isinstance(node, _Var):
        return ".".join((node.name, *node.path))
    if isinstance(node, _Dot):
        return "."
    if isinstance(node, _Lit):
        return node.text
    if isinstance(node, _Ident):
        return node.name
    if isinstance(node, _Chain):
        return _show_arg(node.node) + "." + ".".join(node.path)
    if isinstance(node, _Cmd):
        return " ".join(_show_arg(a) for a in node.args)
    if isinstance(node, _Pipe):
        decl = f"{', '.join(node.decl)} {'=' if node.is_assign else ':='} " if node.decl else ""
        return decl + " | ".join(_show(c) for c in node.cmds)
    return repr(node)


def _show_arg(node: Any) -> str:
    return f"({_show(node)})" if isinstance(node, _Pipe) else _show(node)


class _Parser:
    def __init__(self, src: str):
        self.src = src
        self.toks = _lex(src)
        self.i = 0
        self.vars = ["$"]  # variables in scope, for "undefined variable" errors
        self.range_depth = 0

    def peek(self) -> _Tok:
        return self.toks[self.i]

    def next(self) -> _Tok:
        tok = self.toks[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def peek_ns(self) -> _Tok:
        while self.toks[self.i].kind == "space":
            self.i += 1
        return self.toks[self.i]

    def next_ns(self) -> _Tok:
        self.peek_ns()
        return self.next()

    def unexpected(self, tok: _Tok, ctx: str) -> NoReturn:
        if tok.kind == "eof":
            desc = "EOF"
        elif tok.kind == "keyword":
            desc = f"<{tok.text}>"
        else:
            desc = json.dumps(tok.text if len(tok.text) <= 10 else tok.text[:10] + "...")
        raise _ParseError(f"unexpected {desc} in {ctx}", tok.pos)

    def parse(self) -> list[Any]:
        nodes, stop = self.item_list()
        if stop is not None:
            raise _ParseError(f"unexpected {{{{{stop.text}}}}}", stop.pos)
        return nodes

    def item_list(self) -> tuple[list[Any], _Tok | None]:
        """Nodes up to ``{{end}}``/``{{else}}`` (returned as the stopper) or EOF (None)."""
        nodes: list[Any] = []
        while True:
            tok = self.next()
            if tok.kind == "eof":
                return nodes, None
            if tok.kind == "text":
                nodes.append(_Text(tok.text))
                continue
            kw = self.peek_ns()
            if kw.kind != "keyword":
                nodes.append(_Action(self.pipeline("command", "close")))
                continue
            self.next()
            if kw.text == "end":
                self.expect_close("end")
                return nodes, kw
            if kw.text == "else":
                nxt = self.peek_ns()
                if not (nxt.kind == "keyword" and nxt.text in ("if", "with")):
                    self.expect_close("else")
                return nodes, kw
            nodes.append(self.control(kw))

    def expect_close(self, ctx: str) -> None:
        tok = self.next_ns()
        if tok.kind != "close":
            self.unexpected(tok, ctx)

    def control(self, kw: _Tok) -> Any:
        word = kw.text
        if word in ("break", "continue"):
            if not self.range_depth:
                raise _ParseError(f"{{{{{word}}}}} outside {{{{range}}}}", kw.pos)
            self.expect_close(word)
            return _Jump(word)
        if word not in ("if", "with", "range"):
            raise _ParseError(f"{{{{{word}}}}} is not supported", kw.pos)
        mark = len(self.vars)
        pipe = self.pipeline(word, "close")
        self.range_depth += word == "range"
        body, stop = self.item_list()
        self.range_depth -= word == "range"
        else_ = None
        if stop is None:
            raise _ParseError("unexpected EOF", len(self.src))
        if stop.text == "else":
            nxt = self.peek_ns()
            if nxt.kind == "keyword":  # "else if" / "else with": shares the one {{end}}
                if nxt.text != word:
                    self.unexpected(nxt, "else")
                else_ = [self.control(self.next())]
            else:
                else_, stop = self.item_list()
                if stop is None or stop.text != "end":
                    found = "EOF" if stop is None else f"{{{{{stop.text}}}}}"
                    raise _ParseError(
                        f"expected end; found {found}", stop.pos if stop else len(self.src)
                    )
        del self.vars[mark:]  # variables live until the end of the control structure
        return _Control(word, pipe, body, else_)

    def pipeline(self, ctx: str, end: str) -> _Pipe:
        first = self.peek_ns()
        decl: list[str] = []
        is_assign = False
        if first.kind == "var":  # maybe "$x := ...", "$x = ..." or "range $k, $v := ..."
            save = self.i
            self.next()
            names = [first.text]
            nxt = self.peek_ns()
            if nxt.kind == "comma":
                if ctx != "range":
                    raise _ParseError(f"too many declarations in {ctx}", nxt.pos)
                self.next()
                second = self.next_ns()
                if second.kind != "var":
                    raise _ParseError("range can only initialize variables", second.pos)
                names.append(second.text)
                nxt = self.peek_ns()
                if nxt.kind not in ("declare", "assign"):
                    self.unexpected(nxt, ctx)
            if nxt.kind in ("declare", "assign"):
                self.next()
                decl, is_assign = names, nxt.kind == "assign"
                for name in names:
                    if not is_assign:
                        self.vars.append(name)
                    elif name not in self.vars:
                        raise _ParseError(f'undefined variable "{name}"', first.pos)
            else:
                self.i = save
        cmds: list[_Cmd] = []
        while True:
            tok = self.next_ns()
            if tok.kind == end:
                break
            if tok.kind not in _OPERAND_START:
                self.unexpected(tok, ctx)
            self.i -= 1
            cmds.append(self.command())
        if not cmds:
            raise _ParseError(f"missing value for {ctx}", tok.pos)
        for stage, cmd in enumerate(cmds[1:], start=2):
            if isinstance(cmd.args[0], _Lit | _Dot):
                raise _ParseError(f"non executable command in pipeline stage {stage}", cmd.pos)
        return _Pipe(first.pos, decl, is_assign, cmds)

    def command(self) -> _Cmd:
        pos = self.peek_ns().pos
        args: list[Any] = []
        while True:
            self.peek_ns()
            node = self.operand()
            if node is not None:
                args.append(node)
            tok = self.next()
            if tok.kind == "space":
                continue
            if tok.kind in ("close", "rparen"):
                self.i -= 1
            elif tok.kind != "pipe":
                self.unexpected(tok, "operand")
            break
        if not args:
            raise _ParseError("empty command", pos)
        return _Cmd(pos, args)

    def operand(self) -> Any:
        node = self.term()
        if node is None or self.peek().kind != "field":
            return node
        pos = self.peek().pos
        path: list[str] = []
        while self.peek().kind == "field":  # the lexer splits ".A.B" into ".A" ".B"
            path.append(self.next().text[1:])
        if isinstance(node, _Field):
            return _Field(node.pos, node.path + tuple(path))
        if isinstance(node, _Var):
            return _Var(node.pos, node.name, node.path + tuple(path))
        if isinstance(node, _Lit | _Dot):
            raise _ParseError(f"unexpected . after term {json.dumps(_show(node))}", pos)
        return _Chain(node.pos, node, tuple(path))

    def term(self) -> Any:
        tok = self.next_ns()
        kind = tok.kind
        if kind == "ident":
            if tok.text not in _FUNCS:
                raise _ParseError(f'function "{tok.text}" not defined', tok.pos)
            return _Ident(tok.pos, tok.text)
        if kind == "var":
            if tok.text not in self.vars:
                raise _ParseError(f'undefined variable "{tok.text}"', tok.pos)
            return _Var(tok.pos, tok.text, ())
        if kind == "field":
            return _Field(tok.pos, (tok.text[1:],))
        if kind == "dot":
            return _Dot(tok.pos)
        if kind == "lparen":
            return self.pipeline("parenthesized pipeline", "rparen")
        if kind in ("nil", "bool"):
            return _Lit(tok.pos, {"nil": None, "true": True, "false": False}[tok.text], tok.text)
        if kind == "string":
            return _Lit(tok.pos, _unquote(tok), tok.text)
        if kind == "char":
            value = _unquote(tok)
            if len(value) != 1:
                raise _ParseError(f"malformed character constant: {tok.text}", tok.pos)
            return _Lit(tok.pos, ord(value), tok.text)
        if kind == "number":
            return _Lit(tok.pos, self.number(tok), tok.text)
        self.i -= 1
        return None

    @staticmethod
    def number(tok: _Tok) -> int | float:
        text = tok.text.replace("_", "")
        digits = text.lstrip("+-")
        try:
            if re.fullmatch(r"0[xXbBoO][0-9a-fA-F]+|\d+", digits):
                octal = len(digits) > 1 and digits[0] == "0" and digits[1].isdigit()  # Go: 017
                return int(text, 8 if octal else 0)
            return float(text)
        except ValueError:
            raise _ParseError(f"illegal number syntax: {tok.text!r}", tok.pos) from None


@lru_cache(maxsize=256)
def _parse(src: str) -> tuple[Any, ...]:
    try:
        return tuple(_Parser(src).parse())
    except _ParseError as err:
        line = src.count("\n", 0, err.pos) + 1
        raise InvalidArgument(f"template parsing error: template: :{line}: {err}") from None


# --------------------------------------------------------------------------- values


def _go_type(v: Any) -> str:
    if v is None or v is NO_VALUE:
        return "<nil>"
    for typ, name in ((bool, "bool"), (int, "int"), (float, "float64"), (str, "string")):
        if isinstance(v, typ):
            return name
    if isinstance(v, Mapping):
        return "map[string]interface {}"
    if isinstance(v, list | tuple):
        return "[]interface {}"
    return type(v).__name__


def _sorted_keys(m: Mapping[Any, Any]) -> list[Any]:
    try:
        return sorted(m)
    except TypeError:  # mixed key types: any stable order will do
        return sorted(m, key=lambda k: (type(k).__name__, _go_str(k)))


def _float_digits(f: float) -> tuple[str, int]:
    """Shortest round-trip digits of ``abs(f)`` and the point position: 0.DIGITS x 10**dp."""
    _, digits, exp = Decimal(repr(abs(f))).as_tuple()
    ds = "".join(map(str, digits))
    return ds.rstrip("0") or "0", len(ds) + int(exp)


def _fmt_float(f: float, exp_format: bool, exp_digits: int) -> str:
    ds, dp = _float_digits(f)
    sign = "-" if f < 0 else ""
    if exp_format:
        e = dp - 1
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{sign}{mant}e{'-' if e < 0 else '+'}{abs(e):0{exp_digits}d}"
    if dp <= 0:
        return f"{sign}0.{'0' * -dp}{ds}"
    if dp >= len(ds):
        return sign + ds + "0" * (dp - len(ds))
    return f"{sign}{ds[:dp]}.{ds[dp:]}"


def _go_float(f: float) -> str:
    """Go's ``%v`` for float64 (strconv 'g', shortest precision)."""
    if math.isnan(f):
        return "NaN"
    if math.isinf(f):
        return "+Inf" if f > 0 else "-Inf"
    if f == 0:
        return "-0" if math.copysign(1.0, f) < 0 else "0"
    # Shortest %g switches to %e when the exponent is < -4 or >= 6: 1e6 prints 1e+06.
    return _fmt_float(f, not -4 <= _float_digits(f)[1] - 1 < 6, 2)


def _go_str(v: Any) -> str:
    """Go's ``fmt.Sprint`` of a value as ``text/template`` prints it."""
    if v is NO_VALUE:
        return "<no value>"
    if v is None:
        return "<nil>"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return _go_float(v)
    if isinstance(v, int | str):
        return str(v)
    if isinstance(v, Mapping):
        return "map[" + " ".join(f"{_go_str(k)}:{_go_str(v[k])}" for k in _sorted_keys(v)) + "]"
    if isinstance(v, list | tuple):
        return "[" + " ".join(map(_go_str, v)) + "]"
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return "{" + " ".join(_go_str(getattr(v, f.name)) for f in dataclasses.fields(v)) + "}"
    return str(v)


def _truth(v: Any) -> bool:
    """Go's template truth: empty/zero/nil is false, structs are always true."""
    if v is NO_VALUE or v is None:
        return False
    if isinstance(v, bool | int | float | complex | str | bytes | list | tuple | Mapping):
        return bool(v)
    return True


def _json_str(s: str) -> str:
    # Like docker's encoder (SetEscapeHTML(false)); Go always escapes U+2028/U+2029.
    return (
        json.dumps(s, ensure_ascii=False).replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    )


def _json(v: Any) -> str:
    """Compact JSON like Go's ``json.Marshal``; dict keys keep their order (struct fields)."""
    if v is None or v is NO_VALUE:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise _FuncError(f"json: unsupported value: {_go_float(v)}")
        if v == 0:
            return "-0" if math.copysign(1.0, v) < 0 else "0"
        return _fmt_float(v, not 1e-6 <= abs(v) < 1e21, 1)
    if isinstance(v, str):
        return _json_str(v)
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{_json_str(_go_str(k))}:{_json(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list | tuple):
        return "[" + ",".join(map(_json, v)) + "]"
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _json({f.name: getattr(v, f.name) for f in dataclasses.fields(v)})
    return _json_str(str(v))


# --------------------------------------------------------------------------- functions


def _want_str(v: Any) -> str:
    if isinstance(v, str):
        return v
    raise _ArgError(f"wrong type for value; expected string; got {_go_type(v)}")


def _want_int(v: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise _ArgError(f"wrong type for value; expected int; got {_go_type(v)}")


def _fn_join(items: Any, sep: Any) -> str:
    if not isinstance(items, list | tuple):
        raise _ArgError(f"wrong type for value; expected []string; got {_go_type(items)}")
    return _want_str(sep).join(map(_go_str, items))


def _fn_split(s: Any, sep: Any) -> list[str]:
    s, sep = _want_str(s), _want_str(sep)
    return list(s) if sep == "" else s.split(sep)


def _fn_title(s: Any) -> str:
    # Like Go's strings.Title: upper-case word starts, leave the rest alone.
    out, at_start = [], True
    for ch in _want_str(s):
        out.append(ch.upper() if at_start else ch)
        at_start = not (ch.isalnum() or ch == "_")
    return "".join(out)


def _fn_pad(s: Any, prefix: Any, suffix: Any) -> str:
    s = _want_str(s)
    return " " * _want_int(prefix) + s + " " * _want_int(suffix) if s else s


def _fn_truncate(s: Any, n: Any) -> str:
    s, n = _want_str(s), _want_int(n)
    if n < 0:
        raise _FuncError(f"slice bounds out of range [:{n}]")
    return s[:n]


def _fn_print(*args: Any) -> str:
    # fmt.Sprint: a space between operands when neither side is a string.
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(_go_str(arg))
    return "".join(out)


def _fn_println(*args: Any) -> str:
    return " ".join(map(_go_str, args)) + "\n"


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?([a-zA-Z%])")
_QUOTE_ESC = dict(zip('\a\b\f\n\r\t\v\\"', ["\\" + c for c in 'abfnrtv\\"'], strict=True))


def _go_quote(s: str) -> str:
    """strconv.Quote."""
    out = ['"']
    for ch in s:
        if ch in _QUOTE_ESC:
            out.append(_QUOTE_ESC[ch])
        elif ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(
                f"\\x{code:02x}"
                if code < 0x80
                else f"\\u{code:04x}"
                if code <= 0xFFFF
                else f"\\U{code:08x}"
            )
    return "".join(out) + '"'


def _fmt_verb(verb: str, arg: Any, flags: str, prec: int | None) -> str | None:
    """One printf verb, or None when the verb does not fit the argument (Go's %!v(...))."""
    is_int = isinstance(arg, int) and not isinstance(arg, bool)
    if verb == "v":
        return _go_str(arg)
    if verb == "T":
        return _go_type(arg)
    if verb == "s" and not isinstance(arg, bool | int | float) and arg is not None:
        s = _go_str(arg)
        return s if prec is None else s[:prec]
    if verb == "q" and isinstance(arg, str):
        return _go_quote(arg)
    if verb == "q" and is_int:
        return "'" + _go_quote(chr(arg))[1:-1].replace("'", "\\'") + "'"
    if verb == "c" and is_int:
        return chr(arg)
    if verb == "t" and isinstance(arg, bool):
        return "true" if arg else "false"
    if verb in "dboxX" and is_int:
        return format(arg, ("+" if "+" in flags else "") + ("#" if "#" in flags else "") + verb)
    if verb in "xX" and isinstance(arg, str):
        s = arg.encode().hex()
        return s.upper() if verb == "X" else s
    if verb in "eEfFgG" and isinstance(arg, float):
        if verb in "gG" and prec is None:
            s = _go_float(arg)
            return s.upper() if verb == "G" else s
        return format(arg, ("+" if "+" in flags else "") + f".{6 if prec is None else prec}{verb}")
    return None


def _fn_printf(fmt: Any, *args: Any) -> str:
    fmt = _want_str(fmt)
    out: list[str] = []
    pos = used = 0
    for m in _VERB.finditer(fmt):
        out.append(fmt[pos : m.start()])
        pos = m.end()
        flags, width, prec, verb = m.groups()
        if verb == "%":
            out.append("%")
            continue
        if used >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        arg = args[used]
        used += 1
        s = _fmt_verb(verb, arg, flags, None if prec is None else int(prec or 0))
        if s is None:
            out.append(
                f"%!{verb}(<nil>)" if arg is None else f"%!{verb}({_go_type(arg)}={_go_str(arg)})"
            )
            continue
        w = int(width or 0)
        if "-" in flags:
            s = s.ljust(w)
        elif "0" in flags and verb in "dboxXeEfFgG" and s[:1] in "+-":
            s = s[0] + s[1:].rjust(w - 1, "0")
        else:
            s = s.rjust(w, "0" if "0" in flags and verb in "dboxXeEfFgG" else " ")
        out.append(s)
    out.append(fmt[pos:])
    if used < len(args):
        extra = ", ".join(f"{_go_type(a)}={_go_str(a)}" for a in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _zero_value(m: Mapping[Any, Any]) -> Any:
    # ``index`` of a missing key yields the map's zero element. Docker's string maps
    # (Labels, Options) give "" -- scripts rely on that; anything else prints <no value>.
    return "" if all(isinstance(x, str) for x in m.values()) else NO_VALUE


def _fn_index(item: Any, *keys: Any) -> Any:
    if item is None or item is NO_VALUE:
        raise _FuncError("index of untyped nil")
    for key in keys:
        if item is None:
            raise _FuncError("index of nil pointer")
        if isinstance(item, Mapping):
            try:
                item = item[key] if key in item else _zero_value(item)
            except TypeError:
                raise _FuncError(f"value has unusable key type {_go_type(key)}") from None
        elif isinstance(item, list | tuple | str):
            seq = item.encode() if isinstance(item, str) else item  # Go indexes bytes
            if not isinstance(key, int) or isinstance(key, bool):
                raise _FuncError(f"cannot index slice/array with type {_go_type(key)}")
            if not 0 <= key < len(seq):
                raise _FuncError(f"index out of range: {key}")
            item = seq[key]
        else:
            raise _FuncError(f"can't index item of type {_go_type(item)}")
    return item


def _fn_slice(item: Any, *bounds: Any) -> Any:
    if not isinstance(item, list | tuple | str):
        raise _FuncError(f"can't slice item of type {_go_type(item)}")
    lo, hi = ([_want_int(b) for b in bounds] + [0, len(item)][len(bounds) :])[:2]
    if not 0 <= lo <= hi <= len(item):
        raise _FuncError(f"invalid slice index: {lo}:{hi} (length {len(item)})")
    return item[lo:hi]


def _fn_len(v: Any) -> int:
    if v is None or v is NO_VALUE:
        raise _FuncError("len of nil pointer")
    if isinstance(v, str | list | tuple | Mapping):
        return len(v)
    raise _FuncError(f"len of type {_go_type(v)}")


def _kind(v: Any) -> str | None:
    """Go's basicKind: the comparable scalar class of a value."""
    if v is None or v is NO_VALUE:
        return "invalid"
    for typ, name in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string")):
        if isinstance(v, typ):
            return name
    return None


def _fn_eq(a: Any, *others: Any) -> bool:
    if not others:
        raise _FuncError("missing argument for comparison")
    for b in others:
        ka, kb = _kind(a), _kind(b)
        if ka != kb:
            if ka != "invalid" and kb != "invalid":  # nil compares unequal to anything
                raise _FuncError("incompatible types for comparison")
        elif isinstance(a, list | Mapping) or isinstance(b, list | Mapping):
            raise _FuncError(f"non-comparable type {_go_str(b)}: {_go_type(b)}")
        elif a == b or (ka == "invalid" and kb == "invalid"):
            return True
    return False


def _fn_lt(a: Any, b: Any) -> bool:
    ka, kb = _kind(a), _kind(b)
    if ka not in ("int", "float", "string") or kb not in ("int", "float", "string"):
        raise _FuncError("invalid type for comparison")
    if ka != kb:
        raise _FuncError("incompatible types for comparison")
    return bool(a < b)


def _fn_le(a: Any, b: Any) -> bool:
    return _fn_lt(a, b) or _fn_eq(a, b)


def _fn_not(v: Any) -> bool:
    return not _truth(v)


# name -> (function, min args, max args or None, missing values passed as nil)
_FUNCS: dict[str, tuple[Callable[..., Any], int, int | None, bool]] = {
    "json": (_json, 1, 1, True),
    "join": (_fn_join, 2, 2, True),
    "split": (_fn_split, 2, 2, True),
    "lower": (lambda s: _want_str(s).lower(), 1, 1, True),
    "upper": (lambda s: _want_str(s).upper(), 1, 1, True),
    "title": (_fn_title, 1, 1, True),
    "pad": (_fn_pad, 3, 3, True),
    "truncate": (_fn_truncate, 2, 2, True),
    "print": (_fn_print, 0, None, True),
    "println": (_fn_println, 0, None, True),
    "printf": (_fn_printf, 1, None, True),
    "index": (_fn_index, 1, None, False),
    "slice": (_fn_slice, 1, 3, False),
    "len": (_fn_len, 1, 1, False),
    "not": (_fn_not, 1, 1, False),
    "and": (lambda *a: a[-1], 1, None, False),  # short-circuit in _State.call
    "or": (lambda *a: a[-1], 1, None, False),
    "eq": (_fn_eq, 1, None, False),
    "ne": (lambda a, b: not _fn_eq(a, b), 2, 2, False),
    "lt": (_fn_lt, 2, 2, False),
    "le": (_fn_le, 2, 2, False),
    "gt": (lambda a, b: not _fn_le(a, b), 2, 2, False),
    "ge": (lambda a, b: not _fn_lt(a, b), 2, 2, False),
}


# --------------------------------------------------------------------------- execution


class _State:
    def __init__(self, data: Any):
        self.vars: list[tuple[str, Any]] = [("$", data)]
        self.out: list[str] = []

    def walk(self, dot: Any, nodes: Iterable[Any]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                self.out.append(node.text)
            elif isinstance(node, _Action):
                value = self.pipe(dot, node.pipe)
                if not node.pipe.decl:
                    self.out.append(_go_str(value))
            elif isinstance(node, _Control):
                mark = len(self.vars)
                if node.kind == "range":
                    self.walk_range(dot, node)
                else:
                    value = self.pipe(dot, node.pipe)
                    if _truth(value):
                        self.walk(value if node.kind == "with" else dot, node.body)
                    elif node.else_ is not None:
                        self.walk(dot, node.else_)
                del self.vars[mark:]
            else:
                raise _Break() if node.kind == "break" else _Continue()

    def walk_range(self, dot: Any, node: _Control) -> None:
        value = self.pipe(dot, node.pipe, bind=False)
        decl = node.pipe.decl
        if value is None or value is NO_VALUE:
            items: list[tuple[Any, Any]] = []
        elif isinstance(value, Mapping):
            items = [(k, value[k]) for k in _sorted_keys(value)]  # Go visits keys sorted
        elif isinstance(value, list | tuple):
            items = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):  # Go 1.22 "range 5"
            if len(decl) > 1:
                raise _ExecError(
                    f"can't use {value} to iterate over more than one variable", node.pipe
                )
            items = [(i, i) for i in range(value)]
        else:
            raise _ExecError(f"range can't iterate over {_go_str(value)}", node.pipe)
        if not items:
            if node.else_ is not None:
                self.walk(dot, node.else_)
            return
        for key, elem in items:
            mark = len(self.vars)
            # One variable gets the element, two get key/index and element.
            for name, val in zip(decl, [elem] if len(decl) == 1 else [key, elem], strict=False):
                self.bind(name, val, node.pipe.is_assign, node.pipe)
            try:
                self.walk(elem, node.body)
            except _Break:
                break
            except _Continue:
                pass
            finally:
                del self.vars[mark:]

    def bind(self, name: str, value: Any, assign: bool, node: Any) -> None:
        if not assign:
            self.vars.append((name, value))
            return
        for i in range(len(self.vars) - 1, -1, -1):
            if self.vars[i][0] == name:
                self.vars[i] = (name, value)
                return
        raise _ExecError(f"undefined variable: {name}", node)

    def var(self, name: str, node: Any) -> Any:
        for key, value in reversed(self.vars):
            if key == name:
                return value
        raise _ExecError(f"undefined variable: {name}", node)

    def pipe(self, dot: Any, pipe: _Pipe, bind: bool = True) -> Any:
        value = _NOARG
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)  # each result is the next one's last arg
        if bind:
            for name in pipe.decl:
                self.bind(name, value, pipe.is_assign, pipe)
        return value

    def command(self, dot: Any, cmd: _Cmd, final: Any) -> Any:
        first = cmd.args[0]
        if isinstance(first, _Ident):
            return self.call(dot, first, cmd.args[1:], final, cmd)
        if len(cmd.args) > 1 or final is not _NOARG:
            raise _ExecError(f"can't give argument to non-function {_show(first)}", first)
        if isinstance(first, _Lit) and first.text == "nil":
            raise _ExecError("nil is not a command", first)
        return self.arg(dot, first)

    def arg(self, dot: Any, node: Any) -> Any:
        if isinstance(node, _Field):
            return self.fields(dot, node.path, node)
        if isinstance(node, _Var):
            return self.fields(self.var(node.name, node), node.path, node)
        if isinstance(node, _Dot):
            return dot
        if isinstance(node, _Lit):
            return node.value
        if isinstance(node, _Ident):  # a function used as an argument is called without args
            return self.call(dot, node, [], _NOARG, node)
        if isinstance(node, _Chain):
            return self.fields(self.arg(dot, node.node), node.path, node)
        return self.pipe(dot, node)  # parenthesized pipeline

    def fields(self, value: Any, path: tuple[str, ...], node: Any) -> Any:
        for name in path:
            if value is NO_VALUE:  # Go: fields of a missing key are missing too
                return NO_VALUE
            if value is None:
                raise _ExecError(f"nil pointer evaluating interface {{}}.{name}", node)
            if isinstance(value, Mapping):
                value = value[name] if name in value else NO_VALUE
                continue
            if not isinstance(value, str | int | float | list | tuple) and not name.startswith("_"):
                try:
                    attr = getattr(value, name)
                except AttributeError:
                    pass
                else:
                    value = attr() if inspect.ismethod(attr) else attr  # Go calls methods
                    continue
            raise _ExecError(f"can't evaluate field {name} in type {_go_type(value)}", node)
        return value

    def call(self, dot: Any, ident: _Ident, arg_nodes: list[Any], final: Any, cmd: Any) -> Any:
        name = ident.name
        fn, lo, hi, nil_args = _FUNCS[name]
        count = len(arg_nodes) + (final is not _NOARG)
        if count < lo or (hi is not None and count > hi):
            want = f"at least {lo}" if hi is None else str(lo) if lo == hi else f"{lo} to {hi}"
            raise _ExecError(f"wrong number of args for {name}: want {want} got {count}", ident)
        thunks: list[Callable[[], Any]] = [lambda n=n: self.arg(dot, n) for n in arg_nodes]
        if final is not _NOARG:
            thunks.append(lambda: final)
        try:
            if name in ("and", "or"):
                # Go 1.18+: stop at the first falsy (and) / truthy (or) argument, return it.
                for thunk in thunks:
                    value = thunk()
                    if _truth(value) != (name == "and"):
                        break
                return value
            values = [thunk() for thunk in thunks]
            if nil_args:  # Go passes a missing value to an interface{} parameter as nil
                values = [None if v is NO_VALUE else v for v in values]
            return fn(*values)
        except _FuncError as err:
            raise _ExecError(f"error calling {name}: {err}", cmd) from None
        except _ArgError as err:
            raise _ExecError(str(err), cmd) from None


def _execute(src: str, nodes: tuple[Any, ...], data: Any) -> str:
    state = _State(data)
    try:
        state.walk(data, nodes)
    except _ExecError as err:
        pos = err.node.pos
        line = src.count("\n", 0, pos) + 1
        col = pos - (src.rfind("\n", 0, pos) + 1)
        raise InvalidArgument(
            f'template: :{line}:{col}: executing "" at <{_show(err.node)}>: {err}'
        ) from None
    return "".join(state.out)


# --------------------------------------------------------------------------- public API

_ESCAPES = re.compile(r"\\[tn]")


def _unescape(template: str) -> str:
    # Shells pass "\t" as backslash + t; docker's formatter turns \t and \n into the
    # real characters before parsing.
    return _ESCAPES.sub(lambda m: "\t" if m[0] == "\\t" else "\n", template)


def render(template: str, data: Any) -> str:
    """Execute ``template`` with ``data`` as dot; no trailing newline is added."""
    src = _unescape(template)
    return _execute(src, _parse(src), data)


def is_table(template: str) -> bool:
    """Whether ``template`` is a docker ``table ...`` format (docker checks the prefix only)."""
    return template.startswith("table")


def _table_body(template: str) -> str:
    body = template[len("table") :] if is_table(template) else template
    return _unescape(body.strip(" "))


def _first_field(node: Any) -> tuple[str, ...] | None:
    if isinstance(node, _Field | _Var):
        return node.path or None
    if isinstance(node, _Chain):
        return _first_field(node.node) or node.path
    if isinstance(node, _Pipe):
        for cmd in node.cmds:
            for arg in cmd.args:
                if path := _first_field(arg):
                    return path
    return None


def table_header(template: str, headers: Mapping[str, str] | None = None) -> str:
    """The header row of a table format, before alignment.

    Each top-level action becomes the name of the first field it uses, upper-cased with
    dots as spaces (``{{.State.Status}}`` -> ``STATE STATUS``) unless ``headers`` maps that
    field path (``"ID"``, ``"State.Status"``) to a title. Literal text is kept as is.
    """
    parts: list[str] = []
    for node in _parse(_table_body(template)):
        if isinstance(node, _Text):
            parts.append(node.text)
        elif not (isinstance(node, _Action) and node.pipe.decl):
            if path := _first_field(node.pipe):
                key = ".".join(path)
                parts.append((headers or {}).get(key, key.upper().replace(".", " ")))
    return "".join(parts)


def render_table(
    template: str, rows: Iterable[Any], headers: Mapping[str, str] | None = None
) -> str:
    """Header plus one rendered line per row, columns aligned like docker's tabwriter.

    Every line, the header included, ends with a newline.
    """
    body = _table_body(template)
    nodes = _parse(body)
    lines = [table_header(template, headers)] + [_execute(body, nodes, row) for row in rows]
    return tabwrite("".join(line + "\n" for line in lines))


def tabwrite(text: str, minwidth: int = 10, padding: int = 3) -> str:
    """Align tab-separated cells like Go's ``text/tabwriter`` (docker: minwidth 10, padding 3).

    A column block is a run of consecutive lines that have a tab-terminated cell in that
    column; its width is the widest cell plus ``padding`` (at least ``minwidth``). The
    last cell of a line is never padded.
    """
    lines = [line.split("\t") for line in text.split("\n")]
    out: list[str] = []
    widths: list[int] = []

    def write(lo: int, hi: int) -> None:
        for cells in lines[lo:hi]:
            out.append(
                "".join(c.ljust(widths[j]) if j < len(widths) else c for j, c in enumerate(cells))
            )

    def block(lo: int, hi: int) -> None:  # Go's Writer.format
        column = len(widths)
        this = lo
        while this < hi:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write(lo, this)
            lo, width = this, minwidth
            while this < hi and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + padding)
                this += 1
            widths.append(width)
            block(lo, this)
            widths.pop()
            lo = this
        write(lo, hi)

    block(0, len(lines))
    return "\n".join(out)
