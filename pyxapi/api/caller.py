"""Callers and rate limits (prototyped in xapi): Caller.create/add_group/remove_group/query_*,
Rate_limit.create/set_burst_size/set_fill_rate/add_caller/remove_caller.

A Caller names clients by user agent and client IP ("prefix*" matches a prefix); a
Rate_limit is a token bucket (burst_size, fill_rate) callers can be attached to, one each.
xapi only counts calls and applies the buckets when started with rate limiting on (off by
default); here it is off, so no call is counted: the usage queries answer 0 (and no rows),
as xapi's do for callers it has not seen a call from.
"""
from __future__ import annotations

import re

from ..db.store import NULL
from ..errors import ApiError
from .generic import check_record
from .registry import action

_GROUP = re.compile(r"[A-Za-z0-9_.-]+")
MAX_GROUP_NAME = 64


def _ocaml_float(value: float) -> str:
    """A float as xapi's messages print it (OCaml's string_of_float: "2.", "0.5", "-1.")."""
    text = f"{value:.12g}"
    return text if any(c in text for c in ".eni") else text + "."


@action("Caller.create")
def caller_create(ctx, args):
    store = ctx.store
    fields = check_record(ctx, "Caller", args, ignore=("uuid", "last_access", "groups",
                                                      "rate_limit", "auto_registered"))
    agent, ip = fields.get("user_agent", ""), fields.get("client_ip", "")
    if agent == "" and ip == "":
        raise ApiError("INVALID_VALUE", "user_agent/client_ip",
                       "at least one of user_agent or client_ip must be set")
    if agent in ("", "*") and ip in ("", "*"):  # "" and "*" both match anything
        raise ApiError("INVALID_VALUE", "user_agent/client_ip", "all-wildcard pattern not allowed")
    for ref, row in store.tables["Caller"].items():  # one caller a pattern: the same is renamed
        if row["user_agent"] == agent and row["client_ip"] == ip:
            store.update("Caller", ref, {"name_label": fields.get("name_label", ""),
                                         "name_description": fields.get("name_description", ""),
                                         "auto_registered": False})
            return ref
    return store.create("Caller", {**fields, "user_agent": agent, "client_ip": ip,
                                   "groups": [], "rate_limit": NULL, "auto_registered": False})


def _valid_group(group: str) -> None:
    if group == "":
        raise ApiError("INVALID_VALUE", "group", "empty group name")
    if len(group) > MAX_GROUP_NAME:
        raise ApiError("INVALID_VALUE", "group",
                       f"group name must be at most {MAX_GROUP_NAME} characters")
    if not _GROUP.fullmatch(group):
        raise ApiError("INVALID_VALUE", "group", "group name may only contain alphanumerics "
                                                 "and '_', '-' or '.' characters")


@action("Caller.add_group")
def add_group(ctx, self, group):
    _valid_group(group)
    groups = ctx.store.get("Caller", self)["groups"]
    if group not in groups:
        ctx.store.update("Caller", self, {"groups": [*groups, group]})


@action("Caller.remove_group")
def remove_group(ctx, self, group):
    groups = ctx.store.get("Caller", self)["groups"]
    if group in groups:
        ctx.store.update("Caller", self, {"groups": [g for g in groups if g != group]})


@action("Caller.query_token_usage")
def query_token_usage(ctx, self):
    return 0.0


@action("Caller.query_call_count")
def query_call_count(ctx, self):
    return 0


@action("Caller.query_group_token_usage")
def query_group_token_usage(ctx, group):
    if group == "":
        raise ApiError("INVALID_VALUE", "group", "empty group name")
    return 0.0


@action("Caller.query_group_call_count")
def query_group_call_count(ctx, group):
    if group == "":
        raise ApiError("INVALID_VALUE", "group", "empty group name")
    return 0


@action("Caller.query_all_usage")
def query_all_usage(ctx):
    return []  # [uuid, name_label, tokens, calls] for each caller seen since the start


# ---- Rate_limit ---------------------------------------------------------------------------

def _valid_bucket(burst_size: float, fill_rate: float) -> None:
    if fill_rate <= 0:
        raise ApiError("INVALID_VALUE", "fill_rate", _ocaml_float(fill_rate))
    if burst_size <= 0:
        raise ApiError("INVALID_VALUE", "burst_size", _ocaml_float(burst_size))


@action("Rate_limit.create")
def rate_limit_create(ctx, args):
    fields = check_record(ctx, "Rate_limit", args, ignore=("uuid",))
    _valid_bucket(fields.get("burst_size", 0.0), fields.get("fill_rate", 0.0))
    return ctx.store.create("Rate_limit", fields)


@action("Rate_limit.destroy")
def rate_limit_destroy(ctx, self):
    store = ctx.store
    for caller in store.field("Rate_limit", self, "callers"):
        store.update("Caller", caller, {"rate_limit": NULL})
    store.destroy("Rate_limit", self)


@action("Rate_limit.set_burst_size")
def set_burst_size(ctx, self, value):
    _valid_bucket(value, ctx.store.get("Rate_limit", self)["fill_rate"])
    ctx.store.update("Rate_limit", self, {"burst_size": value})


@action("Rate_limit.set_fill_rate")
def set_fill_rate(ctx, self, value):
    _valid_bucket(ctx.store.get("Rate_limit", self)["burst_size"], value)
    ctx.store.update("Rate_limit", self, {"fill_rate": value})


@action("Rate_limit.add_caller")
def add_caller(ctx, self, caller):
    """One rate limit a caller: attaching moves it from any other; an admin's rule makes an
    auto-registered caller the admin's."""
    if ctx.store.get("Caller", caller)["rate_limit"] != self:
        ctx.store.update("Caller", caller, {"rate_limit": self, "auto_registered": False})


@action("Rate_limit.remove_caller")
def remove_caller(ctx, self, caller):
    if ctx.store.get("Caller", caller)["rate_limit"] == self:
        ctx.store.update("Caller", caller, {"rate_limit": NULL})
