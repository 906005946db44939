"""xapi's filter expressions for `get_all_records_where`.

    field "name__label" = "x" and not (field "power_state" <> "Running")

Grammar: expr := factor (("and" | "or") factor)*  (equal precedence, left to right);
factor := "not" factor | "(" expr ")" | "true" | "false" | value ("=" | "<>") value ;
value := field "<name>" | "<literal>". Values compare as xapi's stored strings.
"""
from __future__ import annotations

import datetime as _dt
import re
from typing import Callable

from ..errors import ApiError

_TOKEN = re.compile(r'\s*(?:(")((?:[^"\\]|\\.)*)"|(<>|=|\(|\))|([A-Za-z_]+))')


def _tokens(text: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise _error(text)
        pos = m.end()
        if m.group(1):
            out.append(("str", m.group(2).replace('\\"', '"').replace("\\\\", "\\")))
        elif m.group(3):
            out.append(("op", m.group(3)))
        else:
            out.append(("word", m.group(4).lower()))
    return out


def _error(text: str) -> ApiError:
    return ApiError("INTERNAL_ERROR", f"Db_filter.Expression_error: cannot parse {text!r}")


def as_db_string(v) -> str:
    """The string form xapi's database holds for a value."""
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, _dt.datetime):
        return v.strftime("%Y%m%dT%H:%M:%SZ")
    if isinstance(v, float):
        return repr(v)
    return str(v)


def compile_filter(text: str) -> Callable[[dict], bool]:
    toks = _tokens(text)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else (None, None)

    def take(kind=None, value=None):
        nonlocal pos
        tok = peek()
        if tok[0] is None or (kind and tok[0] != kind) or (value and tok[1] != value):
            raise _error(text)
        pos += 1
        return tok

    def value():
        kind, v = peek()
        if kind == "word" and v == "field":
            take()
            name = take("str")[1].replace("__", "_")
            return lambda row: as_db_string(row.get(name, ""))
        lit = take("str")[1]
        return lambda row: lit

    def factor():
        kind, v = peek()
        if kind == "word" and v == "not":
            take()
            inner = factor()
            return lambda row: not inner(row)
        if kind == "op" and v == "(":
            take()
            inner = expr()
            take("op", ")")
            return inner
        if kind == "word" and v in ("true", "false"):
            take()
            return (lambda row: True) if v == "true" else (lambda row: False)
        left = value()
        op = take("op")[1]
        right = value()
        if op == "=":
            return lambda row: left(row) == right(row)
        if op == "<>":
            return lambda row: left(row) != right(row)
        raise _error(text)

    def expr():
        # xapi gives "and" and "or" equal precedence, grouping left to right
        f = factor()
        while peek() in (("word", "and"), ("word", "or")):
            op = take()[1]
            g, prev = factor(), f
            if op == "and":
                f = lambda row, a=prev, b=g: a(row) and b(row)  # noqa: E731
            else:
                f = lambda row, a=prev, b=g: a(row) or b(row)  # noqa: E731
        return f

    result = expr()
    if pos != len(toks):
        raise _error(text)
    return result
