"""Host and VM data sources and free memory measured on a real QEMU guest
(`pyxapi serve --backend qemu`), through XenAPI.py."""
from __future__ import annotations

import time

import pytest

from tests import guest as G
from tests.test_qemu_api import make_vm

pytestmark = pytest.mark.skipif(G.QEMU_MISSING is not None, reason=G.SKIP_REASON)


def test_data_sources_follow_a_real_guest(fresh_server, tmp_path, kernel):
    srv = fresh_server(backend="qemu")
    try:
        x = srv.session().xenapi
        host = x.host.get_all()[0]
        total = int(x.host_metrics.get_memory_total(x.host.get_metrics(host)))
        assert x.host.query_data_source(host, "memory_total_kib") == total / 1024
        free0 = int(x.host.compute_free_memory(host))
        assert free0 == int(x.host.query_data_source(host, "memory_free_kib")) * 1024

        vm, _ = make_vm(x, kernel)
        x.VM.start(vm, False, False)
        vm_dir = srv.state_dir / "qemu" / x.VM.get_uuid(vm)
        G.wait_for(vm_dir / "serial.log")
        memory = int(x.VM.get_memory_dynamic_max(vm))
        assert int(x.host.compute_free_memory(host)) <= free0 - memory
        assert x.VM.query_data_source(vm, "memory") == float(
            x.VM_metrics.get_memory_actual(x.VM.get_metrics(vm)))
        assert {"cpu0", "memory", "memory_target"} <= {
            d["name_label"] for d in x.VM.get_data_sources(vm)}

        # the guest's vCPU load, measured by the host between two queries
        con = G.Console(vm_dir / "serial.sock")
        try:
            x.VM.query_data_source(vm, "cpu0")
            con.run("(timeout 3 sh -c 'while :; do :; done' &) ; echo spinning")
            time.sleep(2.5)
            busy = x.VM.query_data_source(vm, "cpu0")
            time.sleep(3)
            x.VM.query_data_source(vm, "cpu0")
            time.sleep(2)
            idle = x.VM.query_data_source(vm, "cpu0")
        finally:
            con.close()
        assert 0.0 <= idle < busy <= 1.0
        assert busy - idle > 0.2, (busy, idle)

        x.VM.hard_shutdown(vm)
        assert int(x.host.compute_free_memory(host)) == free0
        assert x.VM.get_data_sources(vm) == []
    finally:
        G.kill_qemus(tmp_path)
