"""Networking beyond VLANs and bonds, through XenAPI.py: PIF and Bond properties, IPv6,
database-only PIF introduce/forget, tunnels, SR-IOV and the SDN controller. A server of this
module's own: these change the host's NICs."""
import pytest

from tests.helpers import NULL, failure, new_network, own_server, pif, records


@pytest.fixture(scope="module")
def x(tmp_path_factory):
    with own_server(tmp_path_factory, "netx") as x:
        yield x


def test_pif_set_property(x):
    eth1 = pif(x, "eth1")
    before = records(x, "PIF")
    assert failure(x.PIF.set_property, eth1, "gro", "maybe") == \
        ["INVALID_VALUE", "properties", "gro = maybe"]
    assert failure(x.PIF.set_property, eth1, "mtu", "on") == \
        ["INVALID_VALUE", "properties", "mtu = on"]
    assert records(x, "PIF") == before
    x.PIF.set_property(eth1, "gro", "off")
    assert x.PIF.get_properties(eth1) == {"gro": "off"}
    x.PIF.set_property(eth1, "gro", "on")
    assert x.PIF.get_properties(eth1) == {"gro": "on"}


def test_bond_properties(x):
    eth0, eth1 = pif(x, "eth0"), pif(x, "eth1")
    net = new_network(x, "bond net")
    # the master takes its members' properties: they must agree
    x.PIF.set_property(eth1, "gro", "off")
    before = records(x, "Bond", "PIF")
    assert failure(x.Bond.create, net, [eth0, eth1], "", "lacp", {}) == \
        ["INCOMPATIBLE_PIF_PROPERTIES"]
    assert records(x, "Bond", "PIF") == before
    x.PIF.set_property(eth1, "gro", "on")
    bond = x.Bond.create(net, [eth0, eth1], "", "active-backup", {"lacp-time": "fast"})
    try:
        assert x.Bond.get_properties(bond) == {}   # not a lacp property set in this mode
        assert failure(x.Bond.set_property, bond, "lacp-time", "fast") == \
            ["INVALID_VALUE", "properties", "lacp-time = fast"]
        x.Bond.set_mode(bond, "lacp")
        assert x.Bond.get_properties(bond) == {"hashing_algorithm": "tcpudp_ports",
                                               "lacp-time": "slow", "lacp-fallback-ab": "true"}
        x.Bond.set_property(bond, "lacp-time", "fast")
        x.Bond.set_property(bond, "lacp-aggregation-key", "42")
        before = records(x, "Bond")
        assert failure(x.Bond.set_property, bond, "lacp-time", "sometimes") == \
            ["INVALID_VALUE", "properties", "lacp-time = sometimes"]
        assert failure(x.Bond.set_property, bond, "lacp-aggregation-key", "x") == \
            ["INVALID_VALUE", "properties", "lacp-aggregation-key = x"]
        assert failure(x.Bond.set_property, bond, "colour", "red") == \
            ["INVALID_VALUE", "properties", "colour = red"]
        assert records(x, "Bond") == before
        props = x.Bond.get_properties(bond)
        assert props["lacp-time"] == "fast" and props["lacp-aggregation-key"] == "42"
        # a member's own properties are the bond's business; the master passes them on
        assert failure(x.PIF.set_property, eth0, "gro", "off") == \
            ["CANNOT_CHANGE_PIF_PROPERTIES", eth0]
        master = x.Bond.get_master(bond)
        x.PIF.set_property(master, "gro", "off")
        assert [x.PIF.get_properties(p)["gro"] for p in (master, eth0, eth1)] == ["off"] * 3
        x.PIF.set_property(master, "gro", "on")
    finally:
        x.Bond.destroy(bond)
        x.network.destroy(net)


def test_pif_reconfigure_ipv6(x):
    eth1 = pif(x, "eth1")
    before = records(x, "PIF")
    assert failure(x.PIF.reconfigure_ipv6, eth1, "Static", "fd00::5", "", "") == \
        ["INVALID_CIDR_ADDRESS_SPECIFIED", "IPv6"]
    assert failure(x.PIF.reconfigure_ipv6, eth1, "Static", "10.0.0.5/24", "", "") == \
        ["INVALID_CIDR_ADDRESS_SPECIFIED", "IPv6"]
    assert failure(x.PIF.reconfigure_ipv6, eth1, "Static", "fd00::5/64", "fd00::zz", "") == \
        ["INVALID_IP_ADDRESS_SPECIFIED", "gateway"]
    assert failure(x.PIF.reconfigure_ipv6, eth1, "Static", "fd00::5/64", "", "1.1.1.1") == \
        ["INVALID_IP_ADDRESS_SPECIFIED", "DNS"]
    assert records(x, "PIF") == before
    x.PIF.reconfigure_ipv6(eth1, "Static", "fd00::5/64", "fd00::1", "")
    r = x.PIF.get_record(eth1)
    assert (r["ipv6_configuration_mode"], r["IPv6"], r["ipv6_gateway"]) == \
        ("Static", ["fd00::5/64"], "fd00::1")
    x.PIF.reconfigure_ipv6(eth1, "Autoconf", "", "", "")
    [addr] = x.PIF.get_IPv6(eth1)
    assert addr.startswith("fd00::") and addr.endswith("/64")   # EUI-64 of the MAC
    x.PIF.reconfigure_ipv6(eth1, "None", "", "", "")
    assert x.PIF.get_IPv6(eth1) == [] and x.PIF.get_ipv6_configuration_mode(eth1) == "None"


def test_pif_db_introduce_and_forget(x):
    host = x.host.get_all()[0]
    net = new_network(x, "introduced")
    ref = x.PIF.db_introduce("eth7", net, host, "02:00:00:00:00:07", "9000", "-1", True, "None",
                             "", "", "", "", NULL, NULL, False, {"k": "v"}, False, "None", [],
                             "", "IPv4", True, {"gro": "on"})
    r = x.PIF.get_record(ref)
    assert (r["device"], r["network"], r["host"], r["MTU"], r["physical"], r["other_config"]) == \
        ("eth7", net, host, "9000", True, {"k": "v"})
    assert r["currently_attached"] is False and ref in x.network.get_PIFs(net)
    assert failure(x.PIF.db_introduce, "eth8", "OpaqueRef:nope", host, "", "1500", "-1", True,
                   "None", "", "", "", "", NULL, NULL, False, {}, False, "None", [], "",
                   "IPv4", True, {})[0] == "HANDLE_INVALID"
    x.PIF.db_forget(ref)
    assert ref not in x.PIF.get_all() and x.network.get_PIFs(net) == []
    x.network.destroy(net)


def test_tunnel_create_and_destroy(x):
    eth0, eth1 = pif(x, "eth0"), pif(x, "eth1")
    net = new_network(x, "overlay")
    before = records(x, "PIF", "tunnel")
    # the transport needs an address to reach the other end
    assert failure(x.tunnel.create, eth1, net, "gre") == ["TRANSPORT_PIF_NOT_CONFIGURED", eth1]
    eth0_net = x.PIF.get_network(eth0)
    assert failure(x.tunnel.create, eth0, eth0_net, "gre") == \
        ["NETWORK_ALREADY_CONNECTED", eth0_net, eth0]
    assert failure(x.tunnel.create, eth0, net, "ipip")[0] == "INVALID_VALUE"
    assert records(x, "PIF", "tunnel") == before
    tunnel = x.tunnel.create(eth0, net, "vxlan")
    t = x.tunnel.get_record(tunnel)
    assert (t["transport_PIF"], t["protocol"], t["status"]) == (eth0, "vxlan", {"active": "false"})
    a = x.PIF.get_record(t["access_PIF"])
    assert (a["device"], a["network"], a["physical"], a["currently_attached"]) == \
        ("tunnel0", net, False, True)
    assert x.PIF.get_tunnel_transport_PIF_of(eth0) == [tunnel]
    o2 = new_network(x, "o2")
    assert failure(x.tunnel.create, t["access_PIF"], o2, "gre") == \
        ["IS_TUNNEL_ACCESS_PIF", t["access_PIF"]]
    x.network.destroy(o2)
    x.PIF.reconfigure_ip(eth1, "Static", "10.9.0.2", "255.255.255.0", "", "")
    on_eth1 = x.tunnel.create(eth1, new_network(x, "o3"), "gre")
    assert failure(x.PIF.forget, eth1) == ["PIF_TUNNEL_STILL_EXISTS", eth1]
    x.tunnel.destroy(on_eth1)
    x.PIF.reconfigure_ip(eth1, "None", "", "", "", "")
    x.tunnel.destroy(tunnel)
    assert t["access_PIF"] not in x.PIF.get_all() and x.network.get_PIFs(net) == []
    assert x.PIF.get_tunnel_transport_PIF_of(eth0) == []
    x.network.destroy(net)


def test_network_sriov(x):
    eth1 = pif(x, "eth1")
    net = new_network(x, "SR-IOV on eth1")
    vlan_net = new_network(x, "a VLAN")
    vlan = x.VLAN.create(eth1, "7", vlan_net)
    untagged = x.VLAN.get_untagged_PIF(vlan)
    before = records(x, "PIF", "network_sriov")
    assert failure(x.network_sriov.create, untagged, net) == ["PIF_IS_NOT_PHYSICAL", untagged]
    assert records(x, "PIF", "network_sriov") == before
    x.VLAN.destroy(vlan)
    x.network.destroy(vlan_net)
    sriov = x.network_sriov.create(eth1, net)
    s = x.network_sriov.get_record(sriov)
    assert (s["physical_PIF"], s["requires_reboot"], s["configuration_mode"]) == \
        (eth1, False, "sysfs")
    lp = x.PIF.get_record(s["logical_PIF"])
    assert (lp["device"], lp["network"], lp["physical"], lp["currently_attached"]) == \
        ("eth1", net, False, True)
    assert x.network_sriov.get_remaining_capacity(sriov) == "64"
    assert failure(x.network_sriov.create, eth1, new_network(x, "again")) == \
        ["NETWORK_SRIOV_ALREADY_ENABLED", eth1]
    assert failure(x.PIF.forget, eth1) == ["PIF_SRIOV_STILL_EXISTS", eth1]
    assert failure(x.PIF.forget, s["logical_PIF"]) == \
        ["CANNOT_FORGET_SRIOV_LOGICAL", s["logical_PIF"]]
    assert x.PIF.get_sriov_physical_PIF_of(eth1) == [sriov]
    x.network_sriov.destroy(sriov)
    assert s["logical_PIF"] not in x.PIF.get_all() and x.PIF.get_sriov_physical_PIF_of(eth1) == []
    x.network.destroy(net)


def test_sdn_controller(x):
    before = records(x, "SDN_controller")
    assert failure(x.SDN_controller.introduce, "ssl", "controller", "6632") == \
        ["INVALID_IP_ADDRESS_SPECIFIED", "address"]
    assert failure(x.SDN_controller.introduce, "ssl", "10.0.0.9", "70000") == \
        ["VALUE_NOT_SUPPORTED", "port", "70000", "Port out of range"]
    assert failure(x.SDN_controller.introduce, "pssl", "10.0.0.9", "0") == \
        ["INVALID_VALUE", "address", "10.0.0.9"]
    assert records(x, "SDN_controller") == before
    sdn = x.SDN_controller.introduce("ssl", "10.0.0.9", "0")
    assert (x.SDN_controller.get_address(sdn), x.SDN_controller.get_port(sdn)) == \
        ("10.0.0.9", "6632")
    err = failure(x.SDN_controller.introduce, "pssl", "", "0")
    assert err[0] == "OPERATION_NOT_ALLOWED"
    x.SDN_controller.forget(sdn)
    assert x.SDN_controller.get_all() == []
    passive = x.SDN_controller.introduce("pssl", "", "0")
    assert x.SDN_controller.get_protocol(passive) == "pssl"
    x.SDN_controller.forget(passive)
