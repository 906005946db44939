"""VM.pool_migrate, VM.send_trigger and VM.send_sysrq on a real QEMU guest through XenAPI.py
(`pyxapi serve --backend qemu`): the guest lives on across the localhost migration, and QMP
triggers and keys reach it."""
from __future__ import annotations

import pytest

from tests import guest as G
from tests.test_qemu_api import make_vm, wait_state

pytestmark = pytest.mark.skipif(G.QEMU_MISSING is not None, reason=G.SKIP_REASON)


def uptime(con) -> float:
    return float(con.run("cut -d' ' -f1 /proc/uptime"))


def test_migrate_and_triggers_on_a_real_guest(fresh_server, cleanup, kernel):
    srv = fresh_server(backend="qemu")
    x = srv.session().xenapi
    vm, vdi = make_vm(x, kernel)
    vm_dir = srv.state_dir / "qemu" / x.VM.get_uuid(vm)
    host = x.host.get_all()[0]
    x.VM.start(vm, False, False)
    G.wait_for(vm_dir / "serial.log")
    con = G.Console(vm_dir / "serial.sock")
    try:
        con.run("echo before-migration > /tmp/mark")
        before = uptime(con)
    finally:
        con.close()
    domid = x.VM.get_domid(vm)

    # the localhost migration: a new domain holding the same running guest
    x.VM.pool_migrate(vm, host, {"force": "true"})
    assert x.VM.get_power_state(vm) == "Running" and x.VM.get_domid(vm) != domid
    con = G.Console(vm_dir / "serial.sock")
    try:
        assert con.run("cat /tmp/mark") == "before-migration"
        assert uptime(con) >= before  # not rebooted
        x.VM.send_trigger(vm, "nmi")  # an NMI: the guest logs it and goes on
        assert x.VM.get_power_state(vm) == "Running"
        assert uptime(con) >= before
        x.VM.send_sysrq(vm, "h")  # SysRq help: harmless
        x.VM.send_trigger(vm, "power")  # the ACPI power button: the guest shuts down
        wait_state(x, vm, "Halted", con)
    finally:
        con.close()
    assert x.VM.get_domid(vm) == "-1"
