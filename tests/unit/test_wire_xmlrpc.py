"""XML-RPC codec: spec examples, stdlib cross-checks, hostile input, property tests."""

from __future__ import annotations

import datetime as dt
import math
import xmlrpc.client as xc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pyxapi.wire import WireError as SharedWireError
from pyxapi.wire import parse_datetime
from pyxapi.wire.xmlrpc import (
    MAX_DEPTH,
    WireError,
    encode_call,
    encode_response,
    failure,
    fault,
    parse_call,
    success,
)

# --------------------------------------------------------------------- spec examples

# The serialised login call from the wire-protocol spec, verbatim.
SPEC_LOGIN = b"""<?xml version='1.0'?>
<methodCall>
<methodName>session.login_with_password</methodName>
<params>
<param>
<value><string>user</string></value>
</param>
<param>
<value><string>passwd</string></value>
</param>
</params>
</methodCall>
"""

SPEC_SET = """<array>
<data>
<value><string>CX8</string></value>
<value><string>PSE36</string></value>
<value><string>FPU</string></value>
</data>
</array>"""

SPEC_MAP = """<value>
<struct>
<member>
<name>Mike</name>
<value><double>2.3</double></value>
</member>
<member>
<name>John</name>
<value><double>1.2</double></value>
</member>
</struct>
</value>"""

SPEC_RESULT = """<struct>
<member>
<name>Status</name>
<value>Success</value>
</member>
<member>
<name>Value</name>
<value>
<array>
<data>
<value>81547a35-205c-a551-c577-00b982c5fe00</value>
<value>61c85a22-05da-b8a2-2e55-06b0847da503</value>
<value>1d401ec4-3c17-35a6-fc79-cee6bd9811fe</value>
</data>
</array>
</value>
</member>
</struct>"""

SPEC_RESULT_VALUE = {
    "Status": "Success",
    "Value": [
        "81547a35-205c-a551-c577-00b982c5fe00",
        "61c85a22-05da-b8a2-2e55-06b0847da503",
        "1d401ec4-3c17-35a6-fc79-cee6bd9811fe",
    ],
}


def call_with(*values_xml: str, method: str = "m") -> bytes:
    params = "".join(f"<param>{v}</param>" for v in values_xml)
    return (
        f"<?xml version='1.0'?><methodCall><methodName>{method}</methodName>"
        f"<params>{params}</params></methodCall>"
    ).encode()


def loads_value(body: bytes):
    (value,), method = xc.loads(body)
    assert method is None
    return value


def test_wire_error_is_shared_value_error():
    assert WireError is SharedWireError
    assert issubclass(WireError, ValueError)


def test_spec_login_call():
    assert parse_call(SPEC_LOGIN) == ("session.login_with_password", ["user", "passwd"])


def test_spec_set_decodes_and_encodes():
    name, params = parse_call(call_with(f"<value>{SPEC_SET}</value>"))
    assert params == [["CX8", "PSE36", "FPU"]]
    body = encode_response(["CX8", "PSE36", "FPU"])
    assert b"<array><data><value>CX8</value><value>PSE36</value><value>FPU</value></data></array>" in body
    assert loads_value(body) == ["CX8", "PSE36", "FPU"]


def test_spec_map_decodes_and_encodes():
    _, params = parse_call(call_with(SPEC_MAP))
    assert params == [{"Mike": 2.3, "John": 1.2}]
    assert list(params[0]) == ["Mike", "John"]  # member order kept
    body = encode_response({"Mike": 2.3, "John": 1.2})
    assert (
        b"<struct><member><name>Mike</name><value><double>2.3</double></value></member>"
        b"<member><name>John</name><value><double>1.2</double></value></member></struct>"
    ) in body
    assert loads_value(body) == {"Mike": 2.3, "John": 1.2}


def test_spec_result_struct_as_client_sees_it():
    body = (
        "<?xml version='1.0'?><methodResponse><params><param><value>"
        + SPEC_RESULT
        + "</value></param></params></methodResponse>"
    ).encode()
    assert loads_value(body) == SPEC_RESULT_VALUE
    # and our encoder produces the same untyped-string shape
    ours = success(SPEC_RESULT_VALUE["Value"])
    assert loads_value(ours) == SPEC_RESULT_VALUE
    assert b"<name>Status</name><value>Success</value>" in ours
    assert b"<value>81547a35-205c-a551-c577-00b982c5fe00</value>" in ours


def test_spec_result_struct_as_request_param():
    _, params = parse_call(call_with(f"<value>{SPEC_RESULT}</value>"))
    assert params == [SPEC_RESULT_VALUE]


# --------------------------------------------------------------------- decoding details


@pytest.mark.parametrize(
    "xml, expected",
    [
        ("<value>plain</value>", "plain"),
        ("<value>  spaced  </value>", "  spaced  "),
        ("<value/>", ""),
        ("<value></value>", ""),
        ("<value><string/></value>", ""),
        ("<value><string></string></value>", ""),
        ("<value><string>a&amp;b&lt;c&gt;</string></value>", "a&b<c>"),
        ("<value><![CDATA[<raw>&]]></value>", "<raw>&"),
        ("<value>a&#13;b</value>", "a\rb"),
        ("<value>\u00e9\u4e2d\U0001f600</value>", "\u00e9\u4e2d\U0001f600"),
        ("<value><i4>-42</i4></value>", -42),
        ("<value><int>+7</int></value>", 7),
        ("<value><i8>9223372036854775807</i8></value>", 2**63 - 1),
        ("<value><i8>-9223372036854775808</i8></value>", -(2**63)),
        ("<value><int> 12 </int></value>", 12),
        ("<value><boolean>1</boolean></value>", True),
        ("<value><boolean>0</boolean></value>", False),
        ("<value><double>-1.5e3</double></value>", -1500.0),
        ("<value><double>3</double></value>", 3.0),
        ("<value><dateTime.iso8601>20260101T12:00:00Z</dateTime.iso8601></value>",
         dt.datetime(2026, 1, 1, 12)),
        ("<value><dateTime.iso8601>20260101T12:00:00</dateTime.iso8601></value>",
         dt.datetime(2026, 1, 1, 12)),
        ("<value><dateTime.iso8601>2026-01-01T12:00:00Z</dateTime.iso8601></value>",
         dt.datetime(2026, 1, 1, 12)),
        ("<value><dateTime.iso8601>2026-01-01T13:30:00+01:30</dateTime.iso8601></value>",
         dt.datetime(2026, 1, 1, 12)),
        ("<value><base64>aGVsbG8g\n4pyT</base64></value>", "hello \u2713"),
        ("<value><nil/></value>", None),
        ("<value><array><data/></array></value>", []),
        ("<value><array/></value>", []),
        ("<value><struct/></value>", {}),
        ("<value>\n  <struct>\n  <member>\n <name>k</name>\n <value>v</value>\n </member>\n </struct>\n</value>",
         {"k": "v"}),
        ("<value><struct><member><name>a b&amp;</name><value><int>1</int></value></member></struct></value>",
         {"a b&": 1}),
        ("<value><array><data><value><array><data><value>x</value></data></array></value></data></array></value>",
         [["x"]]),
    ],
)
def test_decode_values(xml, expected):
    name, params = parse_call(call_with(xml))
    assert name == "m"
    assert params == [expected]
    assert type(params[0]) is type(expected)


@pytest.mark.parametrize(
    "body",
    [
        b"<methodCall><methodName>VM.get_all</methodName></methodCall>",
        b"<methodCall><methodName>VM.get_all</methodName><params/></methodCall>",
        b"<methodCall><methodName>VM.get_all</methodName><params></params></methodCall>",
        b"<?xml version='1.0' encoding='UTF-8'?>\n<methodCall>\n <methodName> VM.get_all </methodName>\n"
        b" <params>\n </params>\n</methodCall>\n",
        b"<!-- hi --><methodCall><methodName>VM.get_all</methodName><?pi x?></methodCall>",
    ],
)
def test_params_missing_or_empty(body):
    assert parse_call(body) == ("VM.get_all", [])


def test_latin1_declared_encoding():
    body = "<?xml version='1.0' encoding='ISO-8859-1'?><methodCall><methodName>m</methodName>" \
        "<params><param><value>caf\u00e9</value></param></params></methodCall>"
    assert parse_call(body.encode("latin-1")) == ("m", ["caf\u00e9"])


def test_parse_accepts_bytes_like():
    assert parse_call(bytearray(SPEC_LOGIN))[0] == "session.login_with_password"
    assert parse_call(memoryview(SPEC_LOGIN))[0] == "session.login_with_password"


# --------------------------------------------------------------------- stdlib cross-checks


def test_stdlib_dumps_requests_parse():
    when = dt.datetime(2026, 3, 4, 5, 6, 7)
    params = (
        "s",
        42,
        -(2**31),
        True,
        False,
        1.25,
        xc.DateTime(when),
        None,
        [1, "two", [3.5]],
        {"a": {"b": [None, True]}},
        xc.Binary(b"bytes \xe2\x9c\x93"),
        "",
        "<&>",
    )
    body = xc.dumps(params, "VM.do", allow_none=True).encode()
    name, decoded = parse_call(body)
    assert name == "VM.do"
    assert decoded == [
        "s", 42, -(2**31), True, False, 1.25, when, None,
        [1, "two", [3.5]], {"a": {"b": [None, True]}}, "bytes \u2713", "", "<&>",
    ]
    assert [type(x) for x in decoded[:6]] == [str, int, int, bool, bool, float]


def test_stdlib_dumps_builtin_datetime():
    when = dt.datetime(1999, 12, 31, 23, 59, 59)
    body = xc.dumps((when,), "x").encode()
    assert parse_call(body) == ("x", [when])


def test_responses_parse_with_stdlib():
    when = dt.datetime(2026, 1, 2, 3, 4, 5)
    value = {
        "str": "hello",
        "int": 123,
        "neg": -(2**63),
        "big": 2**63 - 1,
        "bool_t": True,
        "bool_f": False,
        "float": 0.1,
        "when": when,
        "none": None,
        "list": [1, "a", [], {}],
        "nested": {"x": {"y": ["z"]}},
    }
    out = loads_value(success(value))
    assert out["Status"] == "Success"
    v = out["Value"]
    assert v["str"] == "hello"
    assert v["int"] == "123" and v["neg"] == str(-(2**63)) and v["big"] == str(2**63 - 1)
    assert v["bool_t"] is True and v["bool_f"] is False
    assert v["float"] == 0.1
    assert isinstance(v["when"], xc.DateTime) and v["when"].value == "20260102T03:04:05Z"
    assert v["none"] == ""
    assert v["list"] == ["1", "a", [], {}]
    assert v["nested"] == {"x": {"y": ["z"]}}


def test_encoding_rules_exact():
    assert encode_response("a<b") == (
        b'<?xml version="1.0"?><methodResponse><params><param><value>a&lt;b</value>'
        b"</param></params></methodResponse>"
    )
    assert b"<value>123</value>" in encode_response(123)
    assert b"<value>-5</value>" in encode_response(-5)
    assert b"<value><boolean>1</boolean></value>" in encode_response(True)
    assert b"<value><boolean>0</boolean></value>" in encode_response(False)
    assert b"<value><double>2.5</double></value>" in encode_response(2.5)
    assert b"<value><double>inf</double></value>" in encode_response(math.inf)
    assert b"<value><double>-inf</double></value>" in encode_response(-math.inf)
    assert b"<value><double>nan</double></value>" in encode_response(math.nan)
    assert b"<value></value>" in encode_response(None)
    assert b"<value><dateTime.iso8601>20260101T12:00:00Z</dateTime.iso8601></value>" in \
        encode_response(dt.datetime(2026, 1, 1, 12, 0, 0, 999))
    assert b"<member><name>1</name><value>x</value></member>" in encode_response({1: "x"})
    assert b"<name>a&amp;&lt;&gt;</name>" in encode_response({"a&<>": 1})


def test_non_finite_doubles_parse_with_stdlib():
    v = loads_value(encode_response([math.inf, -math.inf, math.nan]))
    assert v[0] == math.inf and v[1] == -math.inf and math.isnan(v[2])


def test_aware_datetime_converted_to_utc():
    tz = dt.timezone(dt.timedelta(hours=2))
    body = encode_response(dt.datetime(2026, 1, 1, 14, 0, tzinfo=tz))
    assert b"20260101T12:00:00Z" in body


def test_subclasses_and_tuples():
    import enum

    class Color(str, enum.Enum):
        RED = "red"

    class Num(enum.IntEnum):
        ONE = 1

    v = loads_value(encode_response({"c": Color.RED, "n": Num.ONE, "t": (1, "a")}))
    assert v == {"c": "red", "n": "1", "t": ["1", "a"]}


def test_unencodable_type_is_a_type_error():
    with pytest.raises(TypeError):
        encode_response(object())


def test_illegal_xml_chars_dropped_output_well_formed():
    nasty = "a\x00b\x01c\x08d\x0be\x0cf\x1fg\ud800h\ufffei\uffffj\tk\nl\rm\x7fn"
    body = encode_response(nasty)
    assert loads_value(body) == "abcdefghij\tk\nl\rm\x7fn"
    body = encode_response({nasty: [nasty]})
    assert loads_value(body) == {"abcdefghij\tk\nl\rm\x7fn": ["abcdefghij\tk\nl\rm\x7fn"]}


def test_failure_envelope():
    body = failure(["VM_BAD_POWER_STATE", "OpaqueRef:1", "halted", "running"])
    assert loads_value(body) == {
        "Status": "Failure",
        "ErrorDescription": ["VM_BAD_POWER_STATE", "OpaqueRef:1", "halted", "running"],
    }
    assert body == encode_response(
        {"Status": "Failure", "ErrorDescription": ["VM_BAD_POWER_STATE", "OpaqueRef:1", "halted", "running"]}
    )


def test_success_same_as_encode_response():
    v = {"a": [1, None, True]}
    assert success(v) == encode_response({"Status": "Success", "Value": v})


def test_fault():
    with pytest.raises(xc.Fault) as info:
        xc.loads(fault(-32700, "not well-formed <x> & co"))
    assert info.value.faultCode == -32700
    assert info.value.faultString == "not well-formed <x> & co"


def test_encode_call_parses_with_stdlib_and_ours():
    body = encode_call("VM.set_name_label", ["OpaqueRef:a", "new <name>", 5, True])
    assert xc.loads(body) == (("OpaqueRef:a", "new <name>", "5", True), "VM.set_name_label")
    assert parse_call(body) == ("VM.set_name_label", ["OpaqueRef:a", "new <name>", "5", True])


# --------------------------------------------------------------------- hostile input

BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE lolz [
 <!ENTITY lol "lol">
 <!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
 <!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
 <!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
 <!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
 <!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
 <!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
 <!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<methodCall><methodName>&lol9;</methodName></methodCall>
"""

EXTERNAL_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>
<methodCall><methodName>x</methodName><params><param><value>&xxe;</value></param></params></methodCall>
"""

PARAM_ENTITY = b"""<?xml version="1.0"?>
<!DOCTYPE foo [ <!ENTITY % ext SYSTEM "http://example.invalid/x.dtd"> %ext; ]>
<methodCall><methodName>x</methodName></methodCall>
"""

EXTERNAL_DTD = b"""<?xml version="1.0"?>
<!DOCTYPE methodCall SYSTEM "http://example.invalid/x.dtd">
<methodCall><methodName>x</methodName></methodCall>
"""


def deep(n: int) -> bytes:
    return call_with("<value><array><data>" * n + "<value>x</value>" + "</data></array></value>" * n)


@pytest.mark.parametrize(
    "body, fragment",
    [
        (BILLION_LAUGHS, "DOCTYPE"),
        (EXTERNAL_ENTITY, "DOCTYPE"),
        (PARAM_ENTITY, "DOCTYPE"),
        (EXTERNAL_DTD, "DOCTYPE"),
        (b"<methodCall><methodName>&undefined;</methodName></methodCall>", "undefined entity"),
        (deep(10_000), "deeper"),
        (deep(30), "deeper"),
        (b"<methodCall><methodName>m\xff\xfe</methodName></methodCall>", "line 1, column"),
        (b"<methodCall><methodName>\xc3\x28</methodName></methodCall>", "not well-formed"),
        (b"<methodCall><methodName>m</methodName><params><param><value>\xed\xa0\x80</value>"
         b"</param></params></methodCall>", "not well-formed"),
        (SPEC_LOGIN[: len(SPEC_LOGIN) // 2], "not well-formed XML at line 6"),
        (SPEC_LOGIN[:-15], "no element found"),
        (b"\x00\x01\x02garbage\xff", "not well-formed"),
        (b"not xml at all", "not well-formed"),
        (b"", "empty"),
        (b"   ", "no element found"),
        (b"<methodResponse><params/></methodResponse>", "expected <methodCall>"),
        (b"<methodCall><params/></methodCall>", "missing <methodName>"),
        (b"<methodCall><methodName></methodName></methodCall>", "empty <methodName>"),
        (b"<methodCall><methodName>a</methodName><methodName>b</methodName></methodCall>",
         "more than one <methodName>"),
        (b"<methodCall><methodName>a</methodName><params/><params/></methodCall>", "more than one <params>"),
        (b"<methodCall><methodName>a</methodName><foo/></methodCall>", "unexpected element <foo>"),
        (call_with("<value><foo>1</foo></value>"), "unknown value type <foo>"),
        (call_with("<value><string>a</string><string>b</string></value>"), "more than one type"),
        (call_with("<value>a<string>b</string></value>"), "text mixed"),
        (call_with("<value><string>b</string>a</value>"), "text mixed"),
        (call_with("<value><string><i4>1</i4></string></value>"), "unexpected element <i4> inside <string>"),
        (call_with("<value><int>1.5</int></value>"), "invalid <int>"),
        (call_with("<value><int>1_000</int></value>"), "invalid <int>"),
        (call_with("<value><int></int></value>"), "invalid <int>"),
        (call_with("<value><i8>9223372036854775808</i8></value>"), "out of 64-bit range"),
        (call_with("<value><i4>" + "9" * 5000 + "</i4></value>"), "invalid <i4>"),
        (call_with("<value><boolean>yes</boolean></value>"), "invalid <boolean>"),
        (call_with("<value><double>1,5</double></value>"), "invalid <double>"),
        (call_with("<value><double>1_0</double></value>"), "invalid <double>"),
        (call_with("<value><dateTime.iso8601>yesterday</dateTime.iso8601></value>"), "invalid <dateTime"),
        (call_with("<value><dateTime.iso8601>20261301T00:00:00Z</dateTime.iso8601></value>"), "invalid <dateTime"),
        (call_with("<value><base64>/w==</base64></value>"), "invalid <base64>"),
        (call_with("<value><base64>abc</base64></value>"), "invalid <base64>"),
        (call_with("<value><nil>x</nil></value>"), "<nil/> must be empty"),
        (call_with("<value>a</value><value>b</value>"), "more than one <value> in <param>"),
        (call_with(""), "<param> without <value>"),
        (call_with("<value><struct><member><value>1</value></member></struct></value>"), "without <name>"),
        (call_with("<value><struct><member><name>k</name></member></struct></value>"), "without <value>"),
        (call_with("<value><struct><member><name>k</name><name>j</name><value/></member></struct></value>"),
         "more than one <name>"),
        (call_with("<value><struct><member><name>k</name><value/><value/></member></struct></value>"),
         "more than one <value> in <member>"),
        (call_with("<value><struct>junk</struct></value>"), "unexpected text inside <struct>"),
        (call_with("<value><array><data>junk</data></array></value>"), "unexpected text inside <data>"),
        (call_with("<value><array><value/></array></value>"), "unexpected element <value> inside <array>"),
        (b"<methodCall><methodName>a</methodName>junk</methodCall>", "unexpected text"),
        (b"<methodCall><methodName>a</methodName><params>junk<param><value/></param></params></methodCall>",
         "unexpected text inside <params>"),
        (b"<methodCall><methodName>a</methodName></methodCall><methodCall/>", "junk after document element"),
    ],
)
def test_hostile_or_malformed(body, fragment):
    with pytest.raises(WireError) as info:
        parse_call(body)
    assert type(info.value) is WireError
    assert fragment in str(info.value)


def test_depth_limit_boundary():
    # methodCall/params/param/value = 4 elements, then 3 per array level, plus the leaf value
    levels_ok = (MAX_DEPTH - 4) // 3
    _, params = parse_call(deep(levels_ok))
    v = params[0]
    for _ in range(levels_ok):
        v = v[0]
    assert v == "x"
    with pytest.raises(WireError):
        parse_call(deep(levels_ok + 1))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=300))
def test_fuzz_bytes_only_wire_error(data):
    try:
        name, params = parse_call(data)
    except WireError:
        return
    assert isinstance(name, str) and isinstance(params, list)


_TAGS = st.sampled_from(
    [
        "<methodCall>", "</methodCall>", "<methodName>", "</methodName>", "m", "<params>", "</params>",
        "<param>", "</param>", "<value>", "</value>", "<value/>", "<string>", "</string>", "<int>",
        "</int>", "<i4>", "</i4>", "<i8>", "</i8>", "12", "-3", "<boolean>", "</boolean>", "1", "0",
        "<double>", "</double>", "1.5", "nan", "<dateTime.iso8601>", "</dateTime.iso8601>",
        "20260101T00:00:00Z", "<base64>", "</base64>", "aGk=", "<nil/>", "<array>", "</array>",
        "<data>", "</data>", "<struct>", "</struct>", "<member>", "</member>", "<name>", "</name>",
        " ", "\n", "&amp;", "&#0;", "&#13;", "<![CDATA[x]]>", "<!DOCTYPE x>", "<?xml version='1.0'?>",
        "\u00e9", "<x/>",
    ]
)


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_TAGS, max_size=40))
def test_fuzz_tag_soup_only_wire_error(tokens):
    body = "".join(tokens).encode()
    try:
        name, params = parse_call(body)
    except WireError:
        return
    assert isinstance(name, str) and isinstance(params, list)


@settings(max_examples=200)
@given(st.binary(max_size=40), st.integers(0, len(SPEC_LOGIN)))
def test_fuzz_corrupted_valid_request(junk, pos):
    body = SPEC_LOGIN[:pos] + junk + SPEC_LOGIN[pos:]
    try:
        parse_call(body)
    except WireError:
        pass


# --------------------------------------------------------------------- property tests

_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=20
) | st.sampled_from(["&", "<", ">", "]]>", "&amp;", "\r\n", "\t", " ", "", "OpaqueRef:NULL"])
_xml_text = _text.map(lambda s: "".join(c for c in s if c in "\t\n\r" or not (c < " " or c in "\ufffe\uffff")))
_ints = st.integers(-(2**63), 2**63 - 1)
_floats = st.floats(allow_nan=False, allow_infinity=False)
_datetimes = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59)).map(
    lambda d: d.replace(microsecond=0)
)
_scalars = st.one_of(_xml_text, _ints, _floats, st.booleans(), _datetimes)
_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_xml_text, children, max_size=4),
    max_leaves=25,
)


def ints_to_str(v):
    """What a value becomes after the Xen-API int rule (ints written as strings)."""
    if type(v) is int:
        return str(v)
    if type(v) is list:
        return [ints_to_str(x) for x in v]
    if type(v) is dict:
        return {k: ints_to_str(x) for k, x in v.items()}
    return v


def stdlib_view(v):
    """Our values as xmlrpc.client.loads gives them back (DateTime objects as strings)."""
    if isinstance(v, xc.DateTime):
        return v.value
    if type(v) is list:
        return [stdlib_view(x) for x in v]
    if type(v) is dict:
        return {k: stdlib_view(x) for k, x in v.items()}
    return v


def fmt(d: dt.datetime, date_sep: str = "", time_sep: str = ":", z: str = "Z") -> str:
    # strftime("%Y") does not zero-pad years below 1000 on glibc
    return (f"{d.year:04d}{date_sep}{d.month:02d}{date_sep}{d.day:02d}T"
            f"{d.hour:02d}{time_sep}{d.minute:02d}{time_sep}{d.second:02d}{z}")


def expected_stdlib(v):
    if type(v) is dt.datetime:
        return fmt(v)
    if type(v) is int:
        return str(v)
    if type(v) is list:
        return [expected_stdlib(x) for x in v]
    if type(v) is dict:
        return {k: expected_stdlib(x) for k, x in v.items()}
    return v


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_values, max_size=4), _xml_text.filter(lambda s: s.strip(" \t\r\n") != ""))
def test_roundtrip_encode_call_parse_call(params, method):
    name, decoded = parse_call(encode_call(method, params))
    assert name == method.strip(" \t\r\n")
    assert decoded == ints_to_str(params)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(_values)
def test_roundtrip_encode_response_stdlib(value):
    got = stdlib_view(loads_value(success(value)))
    assert got == {"Status": "Success", "Value": expected_stdlib(value)}


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_values, max_size=4))
def test_stdlib_dumps_parse_call_roundtrip(params):
    # xmlrpc.client can only send 32-bit ints, and it does not protect "\r" from the
    # parser's line-end normalisation; adjust those, keep the rest as they are
    def fit(v):
        if type(v) is int and not -(2**31) <= v < 2**31:
            return str(v)
        if type(v) is str:
            return v.replace("\r", "")
        if type(v) is list:
            return [fit(x) for x in v]
        if type(v) is dict:
            return {fit(k): fit(x) for k, x in v.items()}
        return v

    params = fit(params)
    name, decoded = parse_call(xc.dumps(tuple(params), "a.b", allow_none=True).encode())
    assert name == "a.b"
    assert decoded == params


@given(_datetimes)
def test_parse_datetime_forms(d):
    for text in (fmt(d), fmt(d, z=""), fmt(d, date_sep="-"), fmt(d, time_sep="", z=""),
                 fmt(d, date_sep="-", z="+00:00")):
        assert parse_datetime(text) == d
