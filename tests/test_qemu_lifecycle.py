"""One suite, two backends: tests/test_vm_lifecycle.py run again with `--backend qemu`.

Its VMs boot firmware with empty disks, which is enough for the power-state machine, errors,
copies and settings.  Left out, because a real guest without tools is not the simulator's:
tests that wait for a guest agent (no PV drivers, so no suspend/checkpoint allowed, no guest
metrics) or for a balloon driver (memory_actual), and tests that start servers of their own.
"""
from __future__ import annotations

import inspect

import pytest

from tests import guest as G
from tests import test_vm_lifecycle as suite
from tests.server import RunningServer

pytestmark = pytest.mark.skipif(G.QEMU_MISSING is not None, reason=G.SKIP_REASON)

NEEDS_A_GUEST_AGENT = {
    "test_full_lifecycle",                              # waits for PV drivers before suspend
    "test_vcpu_settings",                               # waits for guest metrics
    "test_snapshot_revert_and_checkpoint",              # checkpoint needs PV drivers
    "test_memory_settings_need_the_right_power_state",  # memory_actual from a balloon driver
}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    path = tmp_path_factory.mktemp("pyxapi-qemu-lifecycle")
    srv = RunningServer(path, backend="qemu")
    yield srv
    srv.stop()
    G.kill_qemus(path)


@pytest.fixture(scope="module")
def xapi(server):
    session = server.session("http")
    yield session.xenapi
    session.xenapi.session.logout()


for _name, _fn in inspect.getmembers(suite, inspect.isfunction):
    if (_name.startswith("test_") and _name not in NEEDS_A_GUEST_AGENT
            and _name != "test_bad_transitions"
            and "fresh_server" not in inspect.signature(_fn).parameters):
        globals()[_name] = _fn


@pytest.mark.parametrize("state", [s for s in suite.BAD if s != "Suspended"])
def test_bad_transitions(xapi, state):
    suite.test_bad_transitions(xapi, state)     # Suspended needs a guest agent to get there
