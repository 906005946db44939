"""Clustering through XenAPI.py: Cluster and Cluster_host on the one-host pool. A server of
this module's own: clustering pins the management PIF (disallow_unplug)."""
import pytest

from tests.helpers import NULL, failure, own_server, pif


def records(x):
    return {cls: getattr(x, cls).get_all_records() for cls in ("Cluster", "Cluster_host", "PIF")}


@pytest.fixture(scope="module")
def x(tmp_path_factory):
    with own_server(tmp_path_factory, "cluster") as x:
        yield x


def test_cluster_create_checks_and_lifecycle(x):
    host = x.host.get_all()[0]
    eth0, eth1 = pif(x, "eth0"), pif(x, "eth1")
    before = records(x)
    assert failure(x.Cluster.create, eth0, "pacemaker", True, 20.0, 1.0) == \
        ["INVALID_CLUSTER_STACK", "pacemaker"]
    assert failure(x.Cluster.create, eth0, "corosync", True, 0.5, 1.0) == \
        ["INVALID_VALUE", "token_timeout", "0.5"]
    assert failure(x.Cluster.create, eth0, "corosync", True, 20.0, 0.1) == \
        ["INVALID_VALUE", "token_timeout_coefficient", "0.1"]
    assert failure(x.Cluster.create, eth0, "corosync", True, 20.0, 1.0) == \
        ["PIF_ALLOWS_UNPLUG", eth0]
    x.PIF.set_disallow_unplug(eth1, True)
    assert failure(x.Cluster.create, eth1, "corosync", True, 20.0, 1.0) == \
        ["PIF_HAS_NO_NETWORK_CONFIGURATION", eth1]
    x.PIF.set_disallow_unplug(eth1, False)
    assert records(x) == before

    x.PIF.set_disallow_unplug(eth0, True)
    cluster = x.Cluster.create(eth0, "corosync", True, 20.0, 1.0)
    c = x.Cluster.get_record(cluster)
    assert (c["cluster_stack"], c["pool_auto_join"], c["is_quorate"], c["quorum"],
            c["live_hosts"], c["expected_hosts"]) == ("corosync", True, True, "1", "1", "1")
    assert float(c["token_timeout"]) == 20.0 and c["cluster_token"]
    [ch] = c["cluster_hosts"]
    h = x.Cluster_host.get_record(ch)
    assert (h["host"], h["PIF"], h["enabled"], h["joined"], h["live"]) == \
        (host, eth0, True, True, True)
    assert x.Cluster.get_network(cluster) == x.PIF.get_network(eth0)

    # one cluster per pool; one member per host; the last member stays
    assert failure(x.Cluster.create, eth0, "corosync", True, 20.0, 1.0) == \
        ["CLUSTER_ALREADY_EXISTS"]
    assert failure(x.Cluster_host.create, cluster, host, eth0)[0] == "INTERNAL_ERROR"
    assert failure(x.Cluster_host.destroy, ch) == ["CLUSTER_HOST_IS_LAST", ch]
    # the clustering PIF is pinned: its address cannot change, it cannot be unplugged
    assert failure(x.PIF.reconfigure_ipv6, eth0, "Autoconf", "", "", "") == \
        ["CLUSTERING_ENABLED", ch]
    assert failure(x.PIF.reconfigure_ip, eth0, "DHCP", "", "", "", "") == \
        ["CLUSTERING_ENABLED", ch]
    assert failure(x.PIF.set_disallow_unplug, eth0, False) == ["CLUSTERING_ENABLED", ch]
    assert x.PIF.get_disallow_unplug(eth0) is True
    assert x.PIF.get_ip_configuration_mode(eth0) == "Static"
    assert failure(x.PIF.unplug, eth0)[0] in ("PIF_IS_MANAGEMENT_INTERFACE",
                                              "PIF_DOES_NOT_ALLOW_UNPLUG")
    # a vTPM's state lives in the database, which a fenced host could not write back
    [template] = [t for t in x.VM.get_by_name_label("Debian Bookworm 12")
                  if x.VM.get_is_a_template(t)]
    vm = x.VM.clone(template, "clustered")
    x.VM.set_is_a_template(vm, False)
    assert failure(x.VTPM.create, vm, True) == \
        ["NOT_IMPLEMENTED", "VTPM.create with HA or clustering enabled"]
    x.VM.destroy(vm)
    assert records(x)["Cluster_host"] == {ch: x.Cluster_host.get_record(ch)}

    x.Cluster_host.disable(ch)
    r = x.Cluster.get_record(cluster)
    assert x.Cluster_host.get_enabled(ch) is False and r["is_quorate"] is False
    assert failure(x.Cluster.pool_destroy, cluster) == ["CLUSTERING_DISABLED", ch]
    x.Cluster_host.enable(ch)
    assert x.Cluster.get_is_quorate(cluster) is True
    x.Cluster.pool_resync(cluster)
    assert x.Cluster.get_cluster_hosts(cluster) == [ch]
    x.Cluster.pool_destroy(cluster)
    assert x.Cluster.get_all() == [] and x.Cluster_host.get_all() == []
    x.PIF.set_disallow_unplug(eth0, False)


def test_cluster_pool_create_and_force_destroy(x):
    eth0 = pif(x, "eth0")
    net0, net1 = x.PIF.get_network(eth0), x.PIF.get_network(pif(x, "eth1"))
    before = records(x)
    assert failure(x.Cluster.pool_create, net1, "corosync", 20.0, 1.0) == \
        ["PIF_HAS_NO_NETWORK_CONFIGURATION", pif(x, "eth1")]
    assert failure(x.Cluster.pool_create, net0, "none", 20.0, 1.0) == \
        ["INVALID_CLUSTER_STACK", "none"]
    assert records(x) == before
    # pool_create pins the PIF itself
    cluster = x.Cluster.pool_create(net0, "corosync", 20.0, 1.0)
    assert x.PIF.get_disallow_unplug(eth0) is True
    assert x.Cluster.get_pool_auto_join(cluster) is True
    [ch] = x.Cluster.get_cluster_hosts(cluster)
    x.Cluster_host.force_destroy(ch)
    assert x.Cluster.get_cluster_hosts(cluster) == []
    assert x.Cluster.get_is_quorate(cluster) is False
    assert x.Cluster.get_network(cluster) == NULL
    x.Cluster.pool_force_destroy(cluster)
    assert x.Cluster.get_all() == []
    # made and destroyed through Cluster.destroy too
    cluster = x.Cluster.create(eth0, "corosync", False, 1.0, 0.65)
    x.Cluster.destroy(cluster)
    assert x.Cluster.get_all() == [] and x.Cluster_host.get_all() == []
    x.PIF.set_disallow_unplug(eth0, False)
    assert failure(x.Cluster.create, eth0, "corosync", True, 20.0, 1.0) == \
        ["PIF_ALLOWS_UNPLUG", eth0]
