"""XML-RPC codec with the Xen-API conventions (the server's hot path).

Requests are parsed with `xml.parsers.expat` and a small state machine. Hostile
input is refused: any DOCTYPE (so no entity declarations: no billion laughs, no
external entities), element nesting deeper than `MAX_DEPTH`, malformed XML or
invalid UTF-8 all raise `WireError`, and `parse_call` never raises anything else.

Responses follow xapi: strings are untyped `<value>text</value>`, every `int` is a
decimal string, `bool` is `<boolean>`, `float` is `<double>` (`inf`, `-inf`, `nan`
for the non-finite values, which is what xapi's `%.16g` prints), datetimes are
`<dateTime.iso8601>YYYYMMDDTHH:MM:SSZ`, `None` is the empty string (the Void rule).
Characters that XML 1.0 cannot carry are dropped so the output is always well-formed;
a carriage return is written as `&#13;` so it survives line-end normalisation.
"""

from __future__ import annotations

import binascii
import datetime as _dt
import functools
import re
from operator import itemgetter
from xml.parsers import expat

from . import WireError, format_datetime, parse_datetime

__all__ = [
    "CONTENT_TYPE",
    "MAX_DEPTH",
    "WireError",
    "encode_call",
    "encode_response",
    "failure",
    "fault",
    "parse_call",
    "success",
]

CONTENT_TYPE = "text/xml"
MAX_DEPTH = 64  # element nesting; a value nests 3 elements per level (value/struct/member)

_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1

# --------------------------------------------------------------------------- decoding

_SCALARS = ("string", "int", "i4", "i8", "boolean", "double", "dateTime.iso8601", "base64", "nil")
_XML_WS = " \t\r\n"
_INT_RE = re.compile(r"[+-]?[0-9]+", re.ASCII)
_FLOAT_RE = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)",
    re.ASCII | re.IGNORECASE,
)
_MISSING = object()

# What to do when element `tag` opens inside `parent` ("" = document); absent = refused.
_K_VALUE, _K_SCALAR, _K_MEMBER, _K_STRUCT, _K_ARRAY, _K_PARAM, _K_PARAMS, _K_OTHER = range(8)
_START = {
    ("param", "value"): _K_VALUE,
    ("data", "value"): _K_VALUE,
    ("member", "value"): _K_VALUE,
    ("struct", "member"): _K_MEMBER,
    ("member", "name"): _K_OTHER,
    ("value", "struct"): _K_STRUCT,
    ("value", "array"): _K_ARRAY,
    ("array", "data"): _K_OTHER,
    ("params", "param"): _K_PARAM,
    ("methodCall", "params"): _K_PARAMS,
    ("methodCall", "methodName"): _K_OTHER,
    ("", "methodCall"): _K_OTHER,
}
_START.update({("value", t): _K_SCALAR for t in _SCALARS})

# What to do when element `tag` closes (every tag that opened is in here).
_E_VALUE, _E_STRING, _E_SCALAR, _E_MEMBER, _E_NAME, _E_CONTAINER, _E_PARAM, _E_METHOD, _E_OTHER = range(9)
_END = {t: _E_SCALAR for t in _SCALARS}
_END.update(
    value=_E_VALUE, string=_E_STRING, member=_E_MEMBER, name=_E_NAME, struct=_E_CONTAINER,
    array=_E_CONTAINER, param=_E_PARAM, methodName=_E_METHOD, data=_E_OTHER, params=_E_OTHER,
    methodCall=_E_OTHER,
)


def _bad_start(parent: str, tag: str):
    if parent == "":
        raise WireError(f"expected <methodCall>, got <{tag}>")
    if parent == "value":
        raise WireError(f"unknown value type <{tag}>")
    raise WireError(f"unexpected element <{tag}> inside <{parent}>")


def _scalar(tag: str, s: str):
    """Convert the text of a non-string scalar element; raise WireError when not valid."""
    if tag == "int" or tag == "i4" or tag == "i8":
        t = s.strip(_XML_WS)
        if len(t) > 24 or not _INT_RE.fullmatch(t):
            raise WireError(f"invalid <{tag}> value {s[:40]!r}")
        v = int(t)
        if v < _INT64_MIN or v > _INT64_MAX:
            raise WireError(f"<{tag}> value {t} out of 64-bit range")
        return v
    if tag == "boolean":
        t = s.strip(_XML_WS)
        if t == "1" or t == "true":
            return True
        if t == "0" or t == "false":
            return False
        raise WireError(f"invalid <boolean> value {s[:40]!r} (expected 0 or 1)")
    if tag == "double":
        t = s.strip(_XML_WS)
        if len(t) > 400 or not _FLOAT_RE.fullmatch(t):
            raise WireError(f"invalid <double> value {s[:40]!r}")
        return float(t)
    if tag == "dateTime.iso8601":
        try:
            return parse_datetime(s)
        except ValueError:
            raise WireError(f"invalid <dateTime.iso8601> value {s[:40]!r}") from None
    if tag == "base64":
        try:
            return binascii.a2b_base64(s).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise WireError("invalid <base64> value (not base64-encoded UTF-8 text)") from None
    # nil
    if s.strip(_XML_WS):
        raise WireError("<nil/> must be empty")
    return None


# The shape almost every call has (xmlrpc.client, XenAPI.py): a plain method name and
# string params with nothing to unescape. The fast path returns what the full (expat)
# parser would, without its callback per element (~75% of a getter's parse); anything
# else — entities, other types, CDATA, control characters, U+FFFE/U+FFFF, invalid UTF-8 —
# goes to the full parser (tests/unit/test_wire_xmlrpc_fast.py).
# First one pass over the bytes (translate, compare) refuses "&" (entities), "\r" (line-end
# folding) and control characters; then two tiers: the exact markup of the common writers,
# taken apart with bytes.partition, removeprefix and split (C speed, and their arguments
# are parsed cheaply, unlike find's or `in`'s); else one regular expression, which admits
# any whitespace between tags. Texts holding "]]>" (which XML forbids) are refused, and,
# in a body that is not ASCII, non-printable characters (U+FFFE, U+2028, …).

def _suspect_table() -> bytes:
    """A translate table moving each byte the fast path refuses to another byte."""
    table = bytearray(range(256))
    for b in (*range(9), 11, 12, 13, *range(14, 32), ord("&")):  # not \t, \n
        table[b] = 1 if b == 0 else 0
    return bytes(table)


_SUSPECT = _suspect_table()


def _layout(prolog: str, nl: str) -> tuple:
    """The markup around the texts, for one writer's prolog and whitespace between tags:
    (no params, empty params, [(before, between, after) the values, and the number of tags
    between two, typed and untyped])."""
    no_params = (f"{nl}</methodCall>{nl}", f"{nl}<params>{nl}</params>{nl}</methodCall>{nl}")
    shapes = []
    for open_, close in (("<string>", "</string>"), ("", "")):
        first = f"{nl}<params>{nl}<param>{nl}<value>{open_}"
        sep = f"{close}</value>{nl}</param>{nl}<param>{nl}<value>{open_}"
        last = f"{close}</value>{nl}</param>{nl}</params>{nl}</methodCall>{nl}"
        shapes.append((*(x.encode() for x in (first, sep, last)), sep.count("<")))
    return prolog.encode(), (*(x.encode() for x in no_params), shapes)


_LAYOUTS = dict((
    _layout("<?xml version='1.0'?>\n<methodCall>\n", "\n"),  # xmlrpc.client, XenAPI.py
    _layout('<?xml version="1.0"?><methodCall>', ""),  # encode_call, and many others
    _layout("<methodCall>", ""),
))


def _split_known(body: bytes) -> list | None:
    """[method name, param texts...] of a body in one of _LAYOUTS, else None."""
    prolog, _, rest = body.partition(b"<methodName>")
    layout = _LAYOUTS.get(prolog)
    if layout is None:
        return None
    none, empty, shapes = layout
    name, _, rest = rest.partition(b"</methodName>")
    if rest == none or rest == empty:
        return [name]
    for first, sep, last, sep_tags in shapes:
        inner = rest.removeprefix(first).removesuffix(last)
        if len(inner) == len(rest) - len(first) - len(last):
            texts = inner.split(sep)
            # every param of this shape: no markup but the separators' between the texts
            if inner.count(b"<") == sep_tags * (len(texts) - 1):
                texts.insert(0, name)
                return texts
    return None


_WS = rb"[ \t\r\n]*"
_TEXT = rb"[^<]*"
_FAST_CALL = re.compile(
    rb"(?:<\?xml version=(?:\"1\.0\"|'1\.0')\?>)?" + _WS + rb"<methodCall>" + _WS
    + rb"<methodName>([^<]*)</methodName>" + _WS
    + rb"(?:<params>((?:" + _WS + rb"<param>" + _WS + rb"<value>(?:<string>" + _TEXT
    + rb"</string>|" + _TEXT + rb")</value>" + _WS + rb"</param>)*)" + _WS + rb"</params>)?"
    + _WS + rb"</methodCall>" + _WS
)
_FAST_VALUE = re.compile(rb"<value>(?:<string>)?(" + _TEXT + rb")")
_NAMES: set = set()  # method names seen well-formed (at most _MAX_NAMES kept)
_MAX_NAMES = 10000


def _parse_fast(body: bytes) -> tuple[str, list] | None:
    if body.translate(_SUSPECT) != body:
        return None
    texts = _split_known(body)
    if texts is None:
        m = _FAST_CALL.fullmatch(body)
        if m is None:
            return None
        texts = [m.group(1), *_FAST_VALUE.findall(m.group(2) or b"")]
    try:
        name, *params = [t.decode() for t in texts]
    except UnicodeDecodeError:
        return None
    if name not in _NAMES:  # a name as the model spells them (the full parser strips spaces)
        if not (name.isascii() and name.replace(".", "_").replace("_", "a").isalnum()):
            return None
        if len(_NAMES) < _MAX_NAMES:
            _NAMES.add(name)
    ascii = body.isascii()
    for v in params:
        if "]]>" in v or not (ascii or v.replace("\t", " ").replace("\n", " ").isprintable()):
            return None
    return name, params


def parse_call(body: bytes) -> tuple[str, list]:
    """Parse an XML-RPC `<methodCall>`: return (method name, decoded params)."""
    if not body:
        raise WireError("empty request body")
    if type(body) is not bytes:  # bytearray, memoryview
        body = bytes(body)
    return _parse_fast(body) or _parse_full(body)


def _parse_full(body: bytes) -> tuple[str, list]:

    stack = [""]  # open element names, under a sentinel for the document
    colls: list = []  # open arrays (list), structs (dict) and members ([name, value])
    text: list = []  # character data since the last tag
    params: list = []
    method = None
    val = None  # the value of the typed element that just closed ...
    have = False  # ... when this is True (reset when its <value> closes)
    n_params = 0  # len(params) when the current <param> opened
    seen_params = False

    def start(tag, attrs):
        nonlocal n_params, seen_params
        parent = stack[-1]
        if text:
            if not (len(text) == 1 and text[0].isspace()) and "".join(text).strip(_XML_WS):
                if parent == "value":
                    raise WireError(f"text mixed with <{tag}> inside <value>")
                raise WireError(f"unexpected text inside <{parent}>")
            text.clear()
        kind = _START.get((parent, tag))
        if kind is None:
            _bad_start(parent, tag)
        if len(stack) > MAX_DEPTH:
            raise WireError(f"XML nested deeper than {MAX_DEPTH} elements")
        stack.append(tag)
        if kind == _K_VALUE:
            return
        if kind <= _K_ARRAY:
            if kind == _K_MEMBER:
                colls.append([_MISSING, _MISSING])
                return
            if have:
                raise WireError(f"more than one type inside <value> (second is <{tag}>)")
            if kind == _K_STRUCT:
                colls.append({})
            elif kind == _K_ARRAY:
                colls.append([])
        elif kind == _K_PARAM:
            n_params = len(params)
        elif kind == _K_PARAMS:
            if seen_params:
                raise WireError("more than one <params>")
            seen_params = True

    def end(tag):
        nonlocal val, have, method
        stack.pop()
        if text:
            s = text[0] if len(text) == 1 else "".join(text)
            text.clear()
        else:
            s = ""
        kind = _END[tag]
        if kind == _E_VALUE:
            if have:
                if s and s.strip(_XML_WS):
                    raise WireError("text mixed with a typed value inside <value>")
                v = val
                have = False
            else:
                v = s  # untyped: a string, as is (no stripping)
            parent = stack[-1]
            if parent == "data":
                colls[-1].append(v)
            elif parent == "member":
                box = colls[-1]
                if box[1] is not _MISSING:
                    raise WireError("more than one <value> in <member>")
                box[1] = v
            else:  # param
                if len(params) != n_params:
                    raise WireError("more than one <value> in <param>")
                params.append(v)
        elif kind == _E_STRING:
            val = s
            have = True
        elif kind == _E_SCALAR:
            val = _scalar(tag, s)
            have = True
        elif kind == _E_MEMBER:
            k, v = colls.pop()
            if k is _MISSING:
                raise WireError("<member> without <name>")
            if v is _MISSING:
                raise WireError(f"<member> {k[:40]!r} without <value>")
            colls[-1][k] = v
        elif kind == _E_NAME:
            box = colls[-1]
            if box[0] is not _MISSING:
                raise WireError("more than one <name> in <member>")
            box[0] = s
        elif kind == _E_METHOD:
            if method is not None:
                raise WireError("more than one <methodName>")
            method = s.strip(_XML_WS)
        elif s and s.strip(_XML_WS):
            raise WireError(f"unexpected text inside <{tag}>")
        elif kind == _E_CONTAINER:
            val = colls.pop()
            have = True
        elif kind == _E_PARAM:
            if len(params) == n_params:
                raise WireError("<param> without <value>")

    def refuse_doctype(*_args):
        raise WireError("DOCTYPE and entity declarations are not allowed")

    p = expat.ParserCreate()
    p.buffer_text = True
    p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    p.StartDoctypeDeclHandler = refuse_doctype
    p.EntityDeclHandler = refuse_doctype
    p.UnparsedEntityDeclHandler = refuse_doctype
    p.ExternalEntityRefHandler = refuse_doctype
    p.StartElementHandler = start
    p.EndElementHandler = end
    p.CharacterDataHandler = text.append
    try:
        p.Parse(body, True)
    except WireError:
        raise
    except expat.ExpatError as e:
        raise WireError(
            f"not well-formed XML at line {e.lineno}, column {e.offset}: "
            f"{expat.ErrorString(e.code)}"
        ) from None
    except (ValueError, TypeError, OverflowError, UnicodeError, RecursionError) as e:
        raise WireError(f"cannot parse request: {e}") from None
    finally:
        # break the closure cycles so the parser is freed promptly
        p.StartElementHandler = p.EndElementHandler = p.CharacterDataHandler = None
    if method is None:
        raise WireError("missing <methodName>")
    if not method:
        raise WireError("empty <methodName>")
    return method, params


# --------------------------------------------------------------------------- encoding

# Characters XML 1.0 cannot carry (the surrogates cannot even be UTF-8 encoded). Our own
# markup never contains these nor "\r", so they are handled once, on the whole output:
# see _finish.
_ILLEGAL = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_CTRL_BYTES = bytes(c for c in range(32) if c not in (9, 10))  # includes \r


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _finish(text: str) -> bytes:
    """UTF-8 encode the output, dropping XML-illegal characters and protecting "\r".

    The check is one C-speed pass over the bytes; the rewrite only runs when needed.
    """
    try:
        b = text.encode()
    except UnicodeEncodeError:  # lone surrogates
        b = None
    if (
        b is None
        or len(b.translate(None, _CTRL_BYTES)) != len(b)
        or "\ufffe" in text
        or "\uffff" in text
    ):
        b = _ILLEGAL.sub("", text).replace("\r", "&#13;").encode()
    return b


class _Out(list):
    """The string pieces of an output being built. Past _CHUNK pieces they are joined and
    encoded into `done`: a big reply (every object of a pool) is never held as millions of
    small strings at once. _finish works character by character, so finishing in parts
    gives the same bytes as finishing the whole."""

    __slots__ = ("done",)

    def __init__(self, *pieces: str):
        super().__init__(pieces)
        self.done: list[bytes] = []

    def flush(self) -> None:
        self.done.append(_finish("".join(self)))
        self.clear()

    def bytes(self) -> bytes:
        self.flush()
        return self.done[0] if len(self.done) == 1 else b"".join(self.done)


_CHUNK = 512  # pieces (of markup, or a whole record: see _enc_planned): a part fits in cache


def _flush(out) -> None:
    if type(out) is _Out:  # a plain list (a task's result) is kept whole
        out.flush()


_HEADS: dict[str, str] = {}  # member name -> its opening markup, for names seen before


def _head(k) -> str:
    key = k
    if type(k) is not str:
        k = str(k)
    if "&" in k or "<" in k or ">" in k:
        k = _esc(k)
    head = f"<member><name>{k}</name>"
    if type(key) is str and len(_HEADS) < 10_000:  # bounded: map keys come from clients
        _HEADS[key] = head
    return head


def _enc(v, out) -> None:
    """Append the `<value>` for `v` to the list of string pieces `out` (a list or _Out)."""
    t = type(v)
    if t is str:
        if "&" in v or "<" in v or ">" in v:
            v = _esc(v)
        out.append(f"<value>{v}</value>")
    elif t is dict:
        if _PLAN_MIN <= len(v) <= _PLAN_MAX and _enc_planned(v, out):
            return
        append = out.append
        append("<value><struct>")
        for k, x in v.items():
            # "<member><name>k</name>": record field names repeat, so looked up once
            head = _HEADS.get(k) if type(k) is str else None
            if head is None:
                head = _head(k)
            # the common cases inlined (records are mostly strings, ints, bools and
            # empty maps/sets): one f-string per member instead of a call and 3 appends
            if type(x) is str:
                if "&" in x or "<" in x or ">" in x:
                    x = _esc(x)
                append(f"{head}<value>{x}</value></member>")
            elif type(x) is bool:
                append(head + ("<value><boolean>1</boolean></value></member>" if x
                               else "<value><boolean>0</boolean></value></member>"))
            elif type(x) is int:
                append(f"{head}<value>{int.__repr__(x)}</value></member>")
            elif not x and type(x) is dict:
                append(head + "<value><struct></struct></value></member>")
            elif not x and type(x) is list:
                append(head + "<value><array><data></data></array></value></member>")
            else:
                append(head)
                _enc(x, out)
                append("</member>")
                if len(out) > _CHUNK:
                    _flush(out)
        append("</struct></value>")
    elif t is list:
        append = out.append
        append("<value><array><data>")
        for x in v:
            if type(x) is str:
                if "&" in x or "<" in x or ">" in x:
                    x = _esc(x)
                append(f"<value>{x}</value>")
            else:
                _enc(x, out)
                if len(out) > _CHUNK:
                    _flush(out)
        append("</data></array></value>")
    elif t is bool:
        out.append("<value><boolean>1</boolean></value>" if v else "<value><boolean>0</boolean></value>")
    elif t is int:
        out.append("<value>" + int.__repr__(v) + "</value>")
    elif t is float:
        out.append("<value><double>" + float.__repr__(v) + "</double></value>")
    elif v is None:
        out.append("<value></value>")
    elif t is _dt.datetime:
        out.append("<value><dateTime.iso8601>" + format_datetime(v) + "</dateTime.iso8601></value>")
    else:
        _enc_other(v, out)


# Records: a reply of many records has one struct per object, all with the same member
# names and value types in the same order. Such a struct is written from a plan made
# once for its shape: the markup around its values is precomputed, the values are
# slotted in between (one slice assignment) and the whole joined once. Python only
# touches the values that are not strings (numbers, maps, sets, ...), and the strings
# only when one of them has markup to escape (checked on all of them at once).
_PLAN_MIN = 8  # members: a smaller struct is as quick member by member
_PLAN_MAX = 256  # members: records have up to ~100; a bigger struct is a one-off (records by ref)
_PLANS: dict = {}  # member names -> [a _Plan per value types seen], or None when seen once
_PLANS_MAX = 512  # member name lists remembered (map keys come from clients: bounded)


def _array(v: list) -> str:
    """The `<value>` markup of a list. Most are sets of refs or enum values: strings,
    written with one join when none has markup to escape."""
    if not v:
        return "<value><array><data></data></array></value>"
    try:
        text = "".join(v)
    except TypeError:  # not all strings
        return _value(v)
    if "&" in text or "<" in text or ">" in text:
        return _value(v)
    return "<value><array><data><value>" + "</value><value>".join(v) + "</value></data></array></value>"


def _struct(v: dict) -> str:
    return _value(v) if v else "<value><struct></struct></value>"


# value type -> (markup before its text, markup after, how its text is written); a type
# not here is written whole by _value
_SLOTS = {
    str: ("<value>", "</value>", None),
    int: ("<value>", "</value>", int.__repr__),
    bool: ("<value><boolean>", "</boolean></value>", {True: "1", False: "0"}.__getitem__),
    float: ("<value><double>", "</double></value>", float.__repr__),
    # (a table's datetimes are mostly a few values: its defaults, one time for a batch)
    _dt.datetime: ("<value><dateTime.iso8601>", "</dateTime.iso8601></value>",
                   functools.lru_cache(maxsize=1024)(format_datetime)),
    type(None): ("<value>", "</value>", lambda v: ""),
    list: ("", "", _array),
    dict: ("", "", _struct),
}


class _Plan:
    __slots__ = ("types", "markup", "strs", "get_strs", "convert")

    def __init__(self, names: tuple, types: tuple):
        self.types = types
        # markup[2i] goes before value i, whose text goes at 2i+1; the last closes the struct
        markup = []
        self.strs = []  # positions of strings
        self.convert = []  # (position, how its text is written) of the other values
        after = "<value><struct>"
        for i, (k, t) in enumerate(zip(names, types)):
            head = _HEADS.get(k) if type(k) is str else None
            before, next_after, text = _SLOTS.get(t, ("", "", _value))
            markup += (after + (head or _head(k)) + before, None)
            after = next_after + "</member>"
            if t is str:
                self.strs.append(2 * i + 1)
            else:
                self.convert.append((2 * i + 1, text))
        markup.append(after + "</struct></value>")
        self.markup = markup
        strs = self.strs
        self.get_strs = itemgetter(*strs) if len(strs) > 1 else lambda v: [v[i] for i in strs]


def _plan(d: dict) -> _Plan | None:
    """The plan for the shape of struct `d`; None the first time its names are seen
    (a one-off struct is not worth one)."""
    names = tuple(d)
    plans = _PLANS.get(names, _MISSING)
    if plans is _MISSING or plans is None:
        if len(_PLANS) >= _PLANS_MAX:
            _PLANS.clear()
        _PLANS[names] = None if plans is _MISSING else []
        if plans is _MISSING:
            return None
        plans = _PLANS[names]
    types = tuple(map(type, d.values()))
    for plan in plans:
        if plan.types == types:
            return plan
    plan = _Plan(names, types)
    if len(plans) < 8:  # (Option fields: a few type lists per shape)
        plans.append(plan)
    return plan


def _enc_planned(d: dict, out) -> bool:
    """Write struct `d` with its shape's plan; False (nothing written) without one."""
    plan = _plan(d)
    if plan is None:
        return False
    parts = plan.markup.copy()
    parts[1::2] = d.values()
    if plan.strs:
        joined = "".join(plan.get_strs(parts))
        if "&" in joined or "<" in joined or ">" in joined:
            for i in plan.strs:
                x = parts[i]
                if "&" in x or "<" in x or ">" in x:
                    parts[i] = _esc(x)
    for i, text in plan.convert:
        parts[i] = text(parts[i])
    out.append("".join(parts))
    return True


def _value(v) -> str:
    """The `<value>` markup of one value, as one string."""
    pieces: list[str] = []
    _enc(v, pieces)
    return pieces[0] if len(pieces) == 1 else "".join(pieces)


def _enc_other(v, out) -> None:
    # subclasses (str/int enums, OrderedDict, ...) and tuples: the slow path
    if isinstance(v, bool):
        _enc(bool(v), out)
    elif isinstance(v, str):
        _enc(str.__str__(v), out)
    elif isinstance(v, int):
        _enc(int(v), out)
    elif isinstance(v, float):
        _enc(float(v), out)
    elif isinstance(v, _dt.datetime):
        out.append("<value><dateTime.iso8601>" + format_datetime(v) + "</dateTime.iso8601></value>")
    elif isinstance(v, dict):
        _enc(dict(v), out)
    elif isinstance(v, (list, tuple)):
        _enc(list(v), out)
    else:
        raise TypeError(f"cannot encode {type(v).__name__} as XML-RPC")


_RESPONSE_HEAD = '<?xml version="1.0"?><methodResponse><params><param>'
_RESPONSE_TAIL = "</param></params></methodResponse>"


def encode_response(value) -> bytes:
    """A `<methodResponse>` carrying `value` (usually the Status/Value struct)."""
    out = _Out(_RESPONSE_HEAD)
    _enc(value, out)
    out.append(_RESPONSE_TAIL)
    return out.bytes()


_SUCCESS_HEAD = (_RESPONSE_HEAD + "<value><struct><member><name>Status</name><value>Success</value>"
                 "</member><member><name>Value</name>")
_SUCCESS_TAIL = "</member></struct></value>" + _RESPONSE_TAIL


def success(value) -> bytes:
    """The Xen-API success envelope: {Status: Success, Value: value}."""
    if type(value) is str:  # most calls (getters, refs): the reply in one piece
        if "&" in value or "<" in value or ">" in value:
            value = _esc(value)
        text = f"{_SUCCESS_HEAD}<value>{value}</value>{_SUCCESS_TAIL}"
        # printable text needs none of _finish's repairs (our markup never does)
        return text.encode() if value.isprintable() else _finish(text)
    out = _Out(_SUCCESS_HEAD)
    _enc(value, out)
    out.append(_SUCCESS_TAIL)
    return out.bytes()


def failure(error_description: list[str]) -> bytes:
    """The Xen-API failure envelope: {Status: Failure, ErrorDescription: [code, params...]}."""
    return encode_response({"Status": "Failure", "ErrorDescription": list(error_description)})


def fault(code: int, message: str) -> bytes:
    """An XML-RPC `<fault>`; only for requests that cannot be parsed at all."""
    text = (
        '<?xml version="1.0"?><methodResponse><fault><value><struct>'
        "<member><name>faultCode</name><value><int>%d</int></value></member>"
        "<member><name>faultString</name><value><string>%s</string></value></member>"
        "</struct></value></fault></methodResponse>" % (int(code), _esc(str(message)))
    )
    return _finish(text)


def encode_call(method: str, params) -> bytes:
    """A `<methodCall>` with the same value rules as responses (ints as decimal strings)."""
    out = _Out('<?xml version="1.0"?><methodCall><methodName>', _esc(method), "</methodName><params>")
    for x in params:
        out.append("<param>")
        _enc(x, out)
        out.append("</param>")
    out.append("</params></methodCall>")
    return out.bytes()
