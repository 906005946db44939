"""Issue 3: the host a first start makes (storage, networks, templates), seen through XenAPI.py,
and a restart that keeps all of it."""
import json
import pathlib
import re
import xml.dom.minidom

import pytest

from tests.helpers import own_server

TEMPLATES = json.loads((pathlib.Path(__file__).parent.parent / "pyxapi" / "model" / "data"
                        / "templates.json").read_text())["templates"]
GiB = 2**30


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A server of this module's own, untouched since its first start."""
    with own_server(tmp_path_factory, "inventory") as x:
        yield x


def by_name(x, cls, name):
    refs = getattr(x, cls).get_by_name_label(name)
    assert len(refs) == 1, (cls, name, refs)
    return refs[0]


def test_local_storage_is_the_default_sr(first):
    x = first
    host = x.host.get_all()[0]
    pool = x.pool.get_all()[0]
    sr = by_name(x, "SR", "Local storage")
    rec = x.SR.get_record(sr)
    assert rec["type"] == "ext" and rec["content_type"] == "user"
    assert rec["shared"] is False
    assert int(rec["physical_size"]) >= 100 * GiB
    assert rec["other_config"]["i18n-key"] == "local-storage"
    assert "vdi_create" in rec["allowed_operations"] and "destroy" not in rec["allowed_operations"]
    [pbd] = rec["PBDs"]
    prec = x.PBD.get_record(pbd)
    assert prec["SR"] == sr and prec["host"] == host and prec["currently_attached"] is True
    assert prec["device_config"]["device"].startswith("/dev/")
    assert pbd in x.host.get_PBDs(host)
    assert x.pool.get_default_SR(pool) == sr
    assert x.pool.get_suspend_image_SR(pool) == sr
    assert x.pool.get_crash_dump_SR(pool) == sr
    assert x.host.get_suspend_image_sr(host) == sr
    assert x.host.get_crash_dump_sr(host) == sr


def test_every_sr_has_a_plugged_pbd_both_ways(first):
    x = first
    host = x.host.get_all()[0]
    srs = x.SR.get_all_records()
    pbds = x.PBD.get_all_records()
    assert len(srs) == 5 and len(pbds) == 5
    for ref, pbd in pbds.items():
        assert pbd["host"] == host and pbd["currently_attached"] is True
        assert ref in srs[pbd["SR"]]["PBDs"]
    for ref, sr in srs.items():
        assert [p for p in sr["PBDs"] if pbds[p]["SR"] == ref] == sr["PBDs"]
        for vdi in sr["VDIs"]:
            assert x.VDI.get_SR(vdi) == ref
    assert sorted(x.host.get_PBDs(host)) == sorted(pbds)


def test_iso_library_and_tools(first):
    x = first
    lib = x.SR.get_record(by_name(x, "SR", "ISO library"))
    assert lib["type"] == "iso" and lib["content_type"] == "iso"
    isos = [x.VDI.get_record(v) for v in lib["VDIs"]]
    assert len(isos) >= 3
    for v in isos:
        assert re.match(r"[\w.+-]+\.iso\Z", v["name_label"]), v["name_label"]
        assert v["read_only"] is True and v["is_tools_iso"] is False
        assert int(v["virtual_size"]) > 100 * 2**20
    assert any(v["name_label"].startswith("debian-12") for v in isos)
    # the SR's usage is the sum of its disks'
    assert int(lib["physical_utilisation"]) == sum(int(v["physical_utilisation"]) for v in isos)
    assert int(lib["virtual_allocation"]) == sum(int(v["virtual_size"]) for v in isos)
    tools = x.SR.get_record(by_name(x, "SR", "XCP-ng Tools"))
    assert tools["is_tools_sr"] is True and tools["type"] == "iso"
    [iso] = tools["VDIs"]
    assert x.VDI.get_is_tools_iso(iso) is True
    assert x.VDI.get_name_label(iso) == "guest-tools.iso"


def test_removable_storage_srs(first):
    x = first
    cd = x.SR.get_record(by_name(x, "SR", "DVD drives"))
    disk = x.SR.get_record(by_name(x, "SR", "Removable storage"))
    assert (cd["type"], cd["content_type"], cd["sm_config"]["type"]) == ("udev", "iso", "cd")
    assert (disk["type"], disk["content_type"], disk["sm_config"]["type"]) == ("udev", "disk", "block")
    assert x.PBD.get_device_config(cd["PBDs"][0]) == {"location": "/dev/xapi/cd"}
    assert "udev" in x.SR.get_supported_types()


def test_management_network_and_pif(first):
    x = first
    host = x.host.get_all()[0]
    net = by_name(x, "network", "Pool-wide network associated with eth0")
    nrec = x.network.get_record(net)
    assert nrec["bridge"] == "xenbr0" and int(nrec["MTU"]) == 1500
    [pif] = nrec["PIFs"]
    p = x.PIF.get_record(pif)
    assert p["device"] == "eth0" and p["network"] == net and p["host"] == host
    assert p["management"] is True and p["physical"] is True and p["currently_attached"] is True
    assert p["ip_configuration_mode"] in ("Static", "DHCP")
    for field in ("IP", "netmask", "gateway", "DNS"):
        assert re.match(r"\d+\.\d+\.\d+\.\d+", p[field]), (field, p[field])
    assert re.match(r"([0-9a-f]{2}:){5}[0-9a-f]{2}\Z", p["MAC"])
    assert int(p["MTU"]) == 1500 and int(p["VLAN"]) == -1
    metrics = x.PIF_metrics.get_record(p["metrics"])
    assert metrics["carrier"] is True and int(metrics["speed"]) > 0
    assert pif in x.host.get_PIFs(host)
    # one PIF per NIC, every one on its own xenbrN network
    for ref, rec in x.PIF.get_all_records().items():
        n = rec["device"].removeprefix("eth")
        assert x.network.get_bridge(rec["network"]) == "xenbr" + n
        assert x.network.get_PIFs(rec["network"]) == [ref]


def test_host_internal_management_network(first):
    x = first
    net = x.network.get_record(by_name(x, "network", "Host internal management network"))
    assert net["bridge"] == "xenapi" and net["PIFs"] == []
    assert net["other_config"]["is_host_internal_management_network"] == "true"
    assert net["other_config"]["is_guest_installer_network"] == "true"


def test_templates_from_the_catalogue(first):
    x = first
    records = x.VM.get_all_records()
    templates = {r["name_label"]: r for r in records.values() if r["is_a_template"]}
    assert sorted(templates) == sorted(t["name_label"] for t in TEMPLATES)
    for name in ("Debian Bookworm 12", "Ubuntu Noble Numbat 24.04", "Rocky Linux 9",
                 "Windows 11", "Other install media"):
        assert name in templates
    for spec in TEMPLATES:
        t = templates[spec["name_label"]]
        assert t["uuid"] == spec["uuid"]
        assert t["is_default_template"] is True and t["power_state"] == "Halted"
        assert t["other_config"]["default_template"] == "true"
        assert t["resident_on"] == "OpaqueRef:NULL" and t["VBDs"] == [] and t["VIFs"] == []
        assert int(t["memory_static_max"]) >= int(t["memory_static_min"]) > 0
        assert x.VM_metrics.get_uuid(t["metrics"])      # a real metrics object
        disks = t["other_config"].get("disks")
        if disks:
            doc = xml.dom.minidom.parseString(disks)
            for d in doc.getElementsByTagName("disk"):
                assert int(d.getAttribute("size")) > 0
    debian = templates["Debian Bookworm 12"]
    assert "provision" in debian["allowed_operations"] and "clone" in debian["allowed_operations"]
    assert debian["reference_label"] == "debian-12"


def test_restart_keeps_storage_networks_and_templates(fresh_server):
    srv = fresh_server(https=False, unix=False)
    x = srv.session().xenapi
    local = by_name(x, "SR", "Local storage")
    vdi = x.VDI.create({"SR": local, "virtual_size": str(3 * GiB), "name_label": "keep me",
                        "type": "user", "sharable": False, "read_only": False,
                        "other_config": {"k": "v"}})
    [template] = x.VM.get_by_name_label("Debian Bookworm 12")
    rec = x.VM.get_record(template)
    rec.update(name_label="kept VM", is_a_template=False, is_default_template=False,
               other_config={})
    vm = x.VM.create(rec)
    x.VBD.create({"VM": vm, "VDI": vdi, "userdevice": "0", "bootable": True, "mode": "RW",
                  "type": "Disk", "unpluggable": True, "empty": False, "other_config": {},
                  "qos_algorithm_type": "", "qos_algorithm_params": {}})
    eth0 = by_name(x, "network", "Pool-wide network associated with eth0")
    x.VIF.create({"device": "0", "network": eth0, "VM": vm, "MAC": "", "MTU": "1500",
                  "other_config": {}, "qos_algorithm_type": "", "qos_algorithm_params": {}})
    before = {cls: getattr(x, cls).get_all_records()
              for cls in ("SR", "PBD", "VDI", "VBD", "VIF", "network", "PIF", "PIF_metrics",
                          "pool")}
    templates = sorted(r for r, v in x.VM.get_all_records().items() if v["is_a_template"])
    # an SR unplugged before the restart is plugged again by it, as xapi does
    x.PBD.unplug(x.SR.get_PBDs(local)[0])
    srv.stop()

    again = fresh_server(https=False, unix=False)
    y = again.session().xenapi
    for cls, records in before.items():
        assert getattr(y, cls).get_all_records() == records, cls
    assert sorted(r for r, v in y.VM.get_all_records().items() if v["is_a_template"]) == templates
    # the disks are still there in the backend: it was attached again and can make more
    assert y.VDI.get_other_config(vdi) == {"k": "v"}
    y.SR.scan(local)
    assert vdi in y.SR.get_VDIs(local)
    new = y.VDI.create({"SR": local, "virtual_size": str(GiB), "name_label": "after restart",
                        "type": "user", "sharable": False, "read_only": False,
                        "other_config": {}})
    assert int(y.SR.get_virtual_allocation(local)) == 4 * GiB
    y.VDI.destroy(new)
    y.VDI.destroy(vdi)              # its VBD of the halted VM goes with it
    assert y.VM.get_VBDs(vm) == [] and len(y.VM.get_VIFs(vm)) == 1
    assert int(y.SR.get_virtual_allocation(local)) == 0
