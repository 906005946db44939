"""Host_driver / Driver_variant selection and rescan through XenAPI.py."""
from tests.test_vm_lifecycle import failure

NULL = "OpaqueRef:NULL"


def driver(x, name):
    [d] = [d for d, r in x.Host_driver.get_all_records().items() if r["name"] == name]
    return d


def variant(x, d, name):
    [v] = [v for v in x.Host_driver.get_variants(d) if x.Driver_variant.get_name(v) == name]
    return v


def test_host_lists_its_drivers(xapi):
    x = xapi
    host = x.host.get_all()[0]
    recs = x.Host_driver.get_all_records()
    assert {r["name"] for r in recs.values()} >= {"intel-ice", "megaraid-sas"}
    assert all(r["host"] == host for r in recs.values())
    d = driver(x, "intel-ice")
    generic = variant(x, d, "generic")
    assert x.Host_driver.get_active_variant(d) == generic
    assert x.Driver_variant.get_driver(generic) == d
    assert x.Driver_variant.get_hardware_present(generic) is True


def test_select_deselect_and_rescan_keeps_selection(xapi):
    x = xapi
    host = x.host.get_all()[0]
    d = driver(x, "intel-ice")
    oem, generic = variant(x, d, "oem"), variant(x, d, "generic")
    x.Host_driver.select(d, oem)
    assert x.Host_driver.get_selected_variant(d) == oem
    assert x.Host_driver.get_active_variant(d) == generic  # until the next boot
    other = variant(x, driver(x, "megaraid-sas"), "vendor")
    assert failure(x.Host_driver.select, d, other) == ["INVALID_VALUE", "variant", other]
    assert x.Host_driver.get_selected_variant(d) == oem
    x.Driver_variant.select(generic)
    assert x.Host_driver.get_selected_variant(d) == generic
    x.Host_driver.select(d, oem)

    x.Host_driver.rescan(host)
    d = driver(x, "intel-ice")  # rows made anew, the selection is the tool's
    assert x.Driver_variant.get_name(x.Host_driver.get_selected_variant(d)) == "oem"
    assert x.Driver_variant.get_name(x.Host_driver.get_active_variant(d)) == "generic"
    assert len(x.Host_driver.get_all()) == 3

    x.Host_driver.deselect(d)
    assert x.Host_driver.get_selected_variant(d) == NULL
    assert x.Host_driver.get_active_variant(d) == NULL
    x.Host_driver.rescan(host)
    assert x.Host_driver.get_selected_variant(driver(x, "intel-ice")) == NULL
    x.Driver_variant.select(variant(x, driver(x, "intel-ice"), "generic"))


def test_bad_refs(xapi):
    x = xapi
    assert failure(x.Host_driver.rescan, "OpaqueRef:h") == ["HANDLE_INVALID", "host", "OpaqueRef:h"]
    assert failure(x.Driver_variant.select, "OpaqueRef:v") == [
        "HANDLE_INVALID", "Driver_variant", "OpaqueRef:v"]
