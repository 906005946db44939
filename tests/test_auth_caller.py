"""auth.* with no external authentication enabled, and the Caller / Rate_limit classes, through
XenAPI.py against a real server."""
from tests.test_vm_lifecycle import failure


def test_auth_questions_need_external_auth(xapi):
    x = xapi
    assert x.host.get_external_auth_type(x.host.get_all()[0]) == ""
    assert failure(x.auth.get_subject_identifier, "CORP\\alice") == ["AUTH_IS_DISABLED"]
    assert failure(x.auth.get_group_membership, "S-1-5-21-1") == ["AUTH_IS_DISABLED"]
    assert failure(x.auth.get_subject_information_from_identifier, "S-1-5-21-1") == [
        "AUTH_IS_DISABLED"]


def caller(x, agent="XenCenter/2024", ip="10.0.0.1", name="xc"):
    return x.Caller.create({"name_label": name, "name_description": "", "user_agent": agent,
                            "client_ip": ip})


def test_caller_create_validates_and_is_one_per_pattern(xapi):
    x = xapi
    before = x.Caller.get_all()
    assert failure(caller, x, "", "") == [
        "INVALID_VALUE", "user_agent/client_ip",
        "at least one of user_agent or client_ip must be set"]
    assert failure(caller, x, "*", "") == [
        "INVALID_VALUE", "user_agent/client_ip", "all-wildcard pattern not allowed"]
    assert failure(caller, x, "*", "*") == [
        "INVALID_VALUE", "user_agent/client_ip", "all-wildcard pattern not allowed"]
    assert x.Caller.get_all() == before
    c = caller(x, "XenCenter*", "10.0.0.2", "first")
    rec = x.Caller.get_record(c)
    assert rec["groups"] == [] and rec["rate_limit"] == "OpaqueRef:NULL"
    assert not rec["auto_registered"]
    again = caller(x, "XenCenter*", "10.0.0.2", "renamed")
    assert again == c and x.Caller.get_name_label(c) == "renamed"


def test_caller_groups_and_usage(xapi):
    x = xapi
    c = caller(x, "xo/5", "10.0.0.3")
    x.Caller.add_group(c, "backup-jobs")
    x.Caller.add_group(c, "backup-jobs")
    x.Caller.add_group(c, "ops.1")
    assert x.Caller.get_groups(c) == ["backup-jobs", "ops.1"]
    assert failure(x.Caller.add_group, c, "") == ["INVALID_VALUE", "group", "empty group name"]
    assert failure(x.Caller.add_group, c, "a b") == [
        "INVALID_VALUE", "group",
        "group name may only contain alphanumerics and '_', '-' or '.' characters"]
    assert failure(x.Caller.add_group, c, "g" * 65) == [
        "INVALID_VALUE", "group", "group name must be at most 64 characters"]
    x.Caller.remove_group(c, "ops.1")
    x.Caller.remove_group(c, "never-added")
    assert x.Caller.get_groups(c) == ["backup-jobs"]
    # rate limiting is off (xapi's default): no call is counted
    assert x.Caller.query_call_count(c) == "0"
    assert x.Caller.query_token_usage(c) == 0.0
    assert x.Caller.query_group_call_count("backup-jobs") == "0"
    assert x.Caller.query_group_token_usage("backup-jobs") == 0.0
    assert failure(x.Caller.query_group_call_count, "") == [
        "INVALID_VALUE", "group", "empty group name"]
    assert x.Caller.query_all_usage() == []
    assert failure(x.Caller.query_call_count, "OpaqueRef:x") == [
        "HANDLE_INVALID", "Caller", "OpaqueRef:x"]


def rate_limit(x, burst=10.0, fill=2.0):
    return x.Rate_limit.create({"name_label": "rl", "name_description": "",
                                "burst_size": burst, "fill_rate": fill})


def test_rate_limit_validation(xapi):
    x = xapi
    before = x.Rate_limit.get_all()
    assert failure(rate_limit, x, 10.0, 0.0) == ["INVALID_VALUE", "fill_rate", "0."]
    assert failure(rate_limit, x, -1.0, 1.5) == ["INVALID_VALUE", "burst_size", "-1."]
    assert x.Rate_limit.get_all() == before
    rl = rate_limit(x)
    assert failure(x.Rate_limit.set_fill_rate, rl, -0.5) == ["INVALID_VALUE", "fill_rate", "-0.5"]
    assert failure(x.Rate_limit.set_burst_size, rl, 0.0) == ["INVALID_VALUE", "burst_size", "0."]
    assert x.Rate_limit.get_burst_size(rl) == 10.0 and x.Rate_limit.get_fill_rate(rl) == 2.0
    x.Rate_limit.set_burst_size(rl, 20.0)
    assert x.Rate_limit.get_burst_size(rl) == 20.0


def test_rate_limit_callers(xapi):
    x = xapi
    a, b = rate_limit(x), rate_limit(x)
    c = caller(x, "script/1", "10.0.0.9")
    x.Rate_limit.add_caller(a, c)
    assert x.Caller.get_rate_limit(c) == a and x.Rate_limit.get_callers(a) == [c]
    x.Rate_limit.add_caller(b, c)  # one rate limit a caller: it moves
    assert x.Rate_limit.get_callers(a) == [] and x.Rate_limit.get_callers(b) == [c]
    x.Rate_limit.remove_caller(a, c)  # not a's: nothing changes
    assert x.Caller.get_rate_limit(c) == b
    assert failure(x.Rate_limit.add_caller, a, "OpaqueRef:nope") == [
        "HANDLE_INVALID", "Caller", "OpaqueRef:nope"]
    x.Rate_limit.remove_caller(b, c)
    assert x.Caller.get_rate_limit(c) == "OpaqueRef:NULL" and x.Rate_limit.get_callers(b) == []
    x.Rate_limit.add_caller(a, c)
    x.Rate_limit.destroy(a)  # its callers are left unlimited
    assert x.Caller.get_rate_limit(c) == "OpaqueRef:NULL"
