"""Pure wire codecs: XML-RPC (`wire.xmlrpc`) and JSON-RPC (`wire.jsonrpc`).

No I/O and no knowledge of the data model: both take and give plain Python
values (`str, int, float, bool, datetime.datetime (naive UTC), list, dict, None`).
"""

from __future__ import annotations

import datetime as _dt
import re as _re

__all__ = ["Shared", "WireError", "format_datetime", "parse_datetime"]


class Shared(dict):
    """A struct that many replies carry as is (event.from's batch, to every watcher one write
    wakes): the dispatcher encodes it once per wire format and keeps the bytes here."""

    __slots__ = ("xml", "json")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.xml = self.json = None


class WireError(ValueError):
    """A request body that cannot be understood; the message says what is wrong.

    JSON-RPC only: `id` and `version` carry what could be recovered from the request
    (so the error reply can echo them), and `code` is the JSON-RPC error code to answer
    with (-32700 parse error, -32600 invalid request).
    """

    def __init__(self, message: str, *, id=None, version: str = "2.0", code: int = -32600):
        super().__init__(message)
        self.id = id
        self.version = version
        self.code = code


def format_datetime(v: _dt.datetime) -> str:
    """xapi's wire form: `YYYYMMDDTHH:MM:SSZ` (UTC; aware datetimes are converted)."""
    if v.tzinfo is not None:
        off = v.utcoffset()
        if off:
            v = v - off
    return "%04d%02d%02dT%02d:%02d:%02dZ" % (v.year, v.month, v.day, v.hour, v.minute, v.second)


_DT_RE = _re.compile(
    r"(\d{4})(-?)(\d\d)\2(\d\d)T(\d\d)(:?)(\d\d)\6(\d\d)(?:[.,](\d+))?(Z|[+-]\d\d(?::?\d\d)?)?",
    _re.ASCII,
)


def parse_datetime(text: str) -> _dt.datetime:
    """Parse the datetime forms clients send, giving a naive UTC datetime.

    Accepts `20260101T12:00:00Z` (xapi), `20260101T12:00:00` (Python's xmlrpc.client),
    `2026-01-01T12:00:00Z`, compact `20260101T120000`, optional fractional seconds and
    a numeric UTC offset (converted to UTC). Raises ValueError otherwise.
    """
    m = _DT_RE.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a datetime: {text[:64]!r}")
    y, _, mo, d, h, _, mi, s, frac, tz = m.groups()
    micro = int((frac + "00000")[:6]) if frac else 0
    v = _dt.datetime(int(y), int(mo), int(d), int(h), int(mi), int(s), micro)
    if tz and tz != "Z":
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        off = _dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4] or 0))
        v = v - sign * off
    return v
