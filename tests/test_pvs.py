"""PVS accelerator objects through XenAPI.py: sites, servers and proxies."""
import pytest

from tests.helpers import failure, new_network


def records(x):
    return {cls: getattr(x, cls).get_all_records() for cls in ("PVS_site", "PVS_server",
                                                                "PVS_proxy")}


@pytest.fixture
def vm_vifs(xapi):
    x = xapi
    [template] = [t for t in x.VM.get_by_name_label("Debian Bookworm 12")
                  if x.VM.get_is_a_template(t)]
    vm = x.VM.clone(template, "PVS target")
    x.VM.set_is_a_template(vm, False)
    net = new_network(x, "PVS net")
    vifs = [x.VIF.create({"device": d, "network": net, "VM": vm, "MAC": "", "MTU": "1500",
                          "other_config": {}, "qos_algorithm_type": "",
                          "qos_algorithm_params": {}}) for d in ("0", "1")]
    yield vifs
    for vif in vifs:
        x.VIF.destroy(vif)
    x.VM.destroy(vm)
    x.network.destroy(net)


def test_site_and_servers(xapi):
    x = xapi
    site = x.PVS_site.introduce("farm", "the PVS farm", "b1b4ee2a-1234-4567-89ab-0123456789ab")
    s = x.PVS_site.get_record(site)
    assert (s["name_label"], s["name_description"], s["PVS_uuid"], s["servers"]) == \
        ("farm", "the PVS farm", "b1b4ee2a-1234-4567-89ab-0123456789ab", [])
    before = records(x)
    assert failure(x.PVS_server.introduce, ["10.0.0.300"], "6910", "6930", site) == \
        ["INVALID_IP_ADDRESS_SPECIFIED", "addresses"]
    assert failure(x.PVS_server.introduce, ["10.0.0.30"], "0", "6930", site) == \
        ["VALUE_NOT_SUPPORTED", "first_port", "0", "Port out of range"]
    assert failure(x.PVS_server.introduce, ["10.0.0.30"], "6930", "6910", site) == \
        ["VALUE_NOT_SUPPORTED", "last_port", "6910", "last_port smaller than first_port"]
    assert failure(x.PVS_server.introduce, ["10.0.0.30"], "6910", "6930", "OpaqueRef:x")[0] == \
        "HANDLE_INVALID"
    assert records(x) == before
    server = x.PVS_server.introduce(["10.0.0.30", "10.0.0.31", "10.0.0.30"], "6910", "6930", site)
    r = x.PVS_server.get_record(server)
    assert (sorted(r["addresses"]), r["first_port"], r["last_port"], r["site"]) == \
        (["10.0.0.30", "10.0.0.31"], "6910", "6930", site)
    assert x.PVS_site.get_servers(site) == [server]
    assert failure(x.PVS_server.introduce, ["10.0.0.31", "10.0.0.32"], "6910", "6930", site) == \
        ["PVS_SERVER_ADDRESS_IN_USE", "10.0.0.31"]
    assert failure(x.PVS_site.forget, site) == ["PVS_SITE_CONTAINS_SERVERS", server]
    x.PVS_server.forget(server)
    assert x.PVS_site.get_servers(site) == []
    x.PVS_site.forget(site)
    assert site not in x.PVS_site.get_all()


def test_proxy(xapi, vm_vifs):
    x = xapi
    first, second = vm_vifs
    site = x.PVS_site.introduce("proxied", "", "")
    before = records(x)
    assert failure(x.PVS_proxy.create, site, second) == ["PVS_VIF_MUST_BE_FIRST_DEVICE"]
    assert records(x) == before
    proxy = x.PVS_proxy.create(site, first)
    p = x.PVS_proxy.get_record(proxy)
    assert (p["site"], p["VIF"], p["currently_attached"], p["status"]) == \
        (site, first, False, "stopped")
    assert x.PVS_site.get_proxies(site) == [proxy]
    assert failure(x.PVS_proxy.create, site, first) == ["PVS_PROXY_ALREADY_PRESENT", proxy]
    # a stopped proxy does not keep its site
    x.PVS_site.forget(site)
    x.PVS_proxy.destroy(proxy)
    assert x.PVS_proxy.get_all() == []
