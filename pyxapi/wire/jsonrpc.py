"""JSON-RPC 1.0 and 2.0 codec (`POST /jsonrpc`) with xapi's response shapes.

Success:
  1.0  {"result": value, "error": null, "id": id}
  2.0  {"jsonrpc": "2.0", "result": value, "id": id}
Xen-API failure (ErrorDescription = [code, p1, p2, ...]):
  1.0  {"result": null, "error": [code, p1, p2, ...], "id": id}
  2.0  {"jsonrpc": "2.0", "error": {"code": 1, "message": code, "data": [p1, p2, ...]}, "id": id}
       (xapi always sets error.code to 1: the API does not use it, but some clients
       treat 0 as "no error"; the Xen-API code is `message` and its params are `data`.)
Protocol errors (unparseable request), JSON-RPC 2.0 style codes -32700 / -32600:
  1.0  {"result": null, "error": {"code": c, "message": text}, "id": id}
  2.0  {"jsonrpc": "2.0", "error": {"code": c, "message": text}, "id": id}

Values: ints are JSON numbers, datetimes are xapi's `"YYYYMMDDTHH:MM:SSZ"` strings,
dict keys are strings. Non-finite floats (inf, nan) are written as `null`: xapi's
JSON printer would emit the bare tokens `NaN` / `Infinity`, which are not JSON and
make strict parsers (JavaScript's JSON.parse, hence Xen Orchestra) reject the whole
reply, so we prefer valid JSON.
"""

from __future__ import annotations

import datetime as _dt

import orjson

from . import WireError, format_datetime

__all__ = [
    "CONTENT_TYPE",
    "PARSE_ERROR",
    "INVALID_REQUEST",
    "WireError",
    "encode_call",
    "failure",
    "fragment",
    "parse_call",
    "protocol_error",
    "success",
]

# Xen Orchestra's client checks for exactly this value (no charset parameter).
CONTENT_TYPE = "application/json"
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
_API_ERROR_CODE = 1  # what xapi puts in error.code for every Xen-API failure (2.0)

# Dict keys must be str (the contract); OPT_NON_STR_KEYS would cost ~60% of encode time.
_OPTS = orjson.OPT_PASSTHROUGH_DATETIME


_ABSENT = object()


def _default(v):
    if isinstance(v, _dt.datetime):
        return format_datetime(v)
    raise TypeError(f"cannot encode {type(v).__name__} as JSON")


def _dumps(obj) -> bytes:
    return orjson.dumps(obj, default=_default, option=_OPTS)


def parse_call(body: bytes) -> tuple[str, list, object, str]:
    """Parse a request: return (method, params, id, version) with version "1.0" or "2.0".

    On failure raises WireError whose `.id`, `.version` and `.code` say how to answer.
    """
    if not body:
        raise WireError("empty request body", code=PARSE_ERROR)
    try:
        req = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise WireError(f"invalid JSON: {e}", code=PARSE_ERROR) from None
    if type(req) is not dict:
        if type(req) is list:
            raise WireError("batch requests are not supported")
        raise WireError("request must be a JSON object")
    rid = req.get("id")
    if rid is not None and type(rid) is not str and type(rid) is not int:
        raise WireError("'id' must be a string or an integer")
    jv = req.get("jsonrpc", _ABSENT)
    if jv is _ABSENT:
        version = "1.0"
    elif jv == "2.0":
        version = "2.0"
    elif jv == "1.0":  # not sent by xapi clients, but harmless to accept
        version = "1.0"
    else:
        raise WireError("'jsonrpc' must be \"2.0\" when present", id=rid)
    method = req.get("method")
    if type(method) is not str or not method:
        raise WireError("missing or invalid 'method' (must be a non-empty string)",
                        id=rid, version=version)
    params = req.get("params")
    if params is None:
        params = []
    elif type(params) is not list:
        raise WireError("'params' must be a JSON array (by-name params are not supported)",
                        id=rid, version=version)
    if rid is None:
        raise WireError("missing 'id': notifications are not supported", version=version)
    return method, params, rid, version


def success(value, id, version: str) -> bytes:
    if version == "2.0":
        return _dumps({"jsonrpc": "2.0", "result": value, "id": id})
    return _dumps({"result": value, "error": None, "id": id})


def fragment(value) -> orjson.Fragment:
    """`value` encoded once, for `success` to embed as is in many replies."""
    return orjson.Fragment(_dumps(value))


def failure(error_description: list[str], id, version: str) -> bytes:
    if version == "2.0":
        code = error_description[0] if error_description else ""
        err = {"code": _API_ERROR_CODE, "message": code, "data": list(error_description[1:])}
        return _dumps({"jsonrpc": "2.0", "error": err, "id": id})
    return _dumps({"result": None, "error": list(error_description), "id": id})


def protocol_error(message: str, id=None, version: str = "2.0", code: int = INVALID_REQUEST) -> bytes:
    err = {"code": code, "message": message}
    if version == "2.0":
        return _dumps({"jsonrpc": "2.0", "error": err, "id": id})
    return _dumps({"result": None, "error": err, "id": id})


def encode_call(method: str, params, id=0, version: str = "2.0") -> bytes:
    """A request body (for tests and clients)."""
    if version == "2.0":
        return _dumps({"jsonrpc": "2.0", "method": method, "params": list(params), "id": id})
    return _dumps({"method": method, "params": list(params), "id": id})
