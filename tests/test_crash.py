"""Issue 7: crash safety. The server is killed with SIGKILL in the middle of a storm of
concurrent writes; after a restart every write that was answered Success is there, and the
store is consistent (relations agree both ways, uuids are unique)."""
import threading
import time

from tests.server import PASSWORD
from tests.test_fuzz import Fast

WRITERS = 8


class Client:
    def __init__(self, url):
        self.fast = Fast(url)
        self.session = self.call("session.login_with_password", "root", PASSWORD)

    def call(self, method, *params):
        body = {"jsonrpc": "2.0", "id": 1, "method": method,
                "params": list(params) if method.startswith("session.login") else [self.session, *params]}
        reply = self.fast.post("/jsonrpc", json=body).json()
        if "error" in reply:
            raise RuntimeError(reply["error"])
        return reply["result"]


def storm(url, n, acked, attempted, stop):
    """Create VMs with a VBD each and set fields, noting each write answered Success."""
    try:
        c = Client(url)
        i = 0
        while not stop.is_set():
            i += 1
            name = f"w{n}-{i}"
            attempted.append(("VM", name))
            vm = c.call("VM.create", {"name_label": name, "other_config": {}})
            acked.append(("VM", vm, name))
            attempted.append(("VBD", vm))
            vbd = c.call("VBD.create", {"VM": vm, "VDI": "OpaqueRef:NULL", "userdevice": "3", "type": "CD",
                                        "mode": "RO", "empty": True, "bootable": False,
                                        "other_config": {}, "qos_algorithm_params": {}})
            acked.append(("VBD", vbd, vm))
            for k in range(3):
                value = f"{name}-d{k}"
                attempted.append(("desc", vm, value))
                c.call("VM.set_name_description", vm, value)
                acked.append(("desc", vm, value))
            attempted.append(("key", vm, name))
            c.call("VM.add_to_other_config", vm, "storm", name)
            acked.append(("key", vm, name))
    except (OSError, RuntimeError, ValueError):
        pass  # the server died under us: what was not answered is not acknowledged


def test_writes_answered_success_survive_kill_9(fresh_server):
    srv = fresh_server(https=False, unix=False)
    acked, attempted, stop = [], [], threading.Event()
    threads = [threading.Thread(target=storm, args=(srv.http, n, acked, attempted, stop))
               for n in range(WRITERS)]
    for t in threads:
        t.start()
    time.sleep(3)
    srv.kill()  # SIGKILL, mid-storm
    stop.set()
    for t in threads:
        t.join(30)
    assert len(acked) > 200, len(acked)

    again = fresh_server(https=False, unix=False)
    c = Client(again.http)
    vms = c.call("VM.get_all_records")
    vbds = c.call("VBD.get_all_records")
    found = 0
    last_desc = {}
    for kind, ref, value in acked:
        if kind == "VM":
            assert vms[ref]["name_label"] == value
        elif kind == "VBD":
            assert vbds[ref]["VM"] == value and ref in vms[value]["VBDs"]
        elif kind == "desc":
            last_desc[ref] = value
        else:
            assert vms[ref]["other_config"]["storm"] == value
        found += 1
    for vm, value in last_desc.items():
        # the last acknowledged value, or one sent after it that was stored but not answered
        later = [a[2] for a in attempted if a[0] == "desc" and a[1] == vm]
        assert vms[vm]["name_description"] in later[later.index(value):], (value, vms[vm]["name_description"])
    # the store is consistent: both sides of VM <-> VBD agree, uuids are unique
    for ref, vbd in vbds.items():
        assert vbd["VM"] in vms and ref in vms[vbd["VM"]]["VBDs"]
    for ref, vm in vms.items():
        assert all(vbds[v]["VM"] == ref for v in vm["VBDs"])
    for records in (vms, vbds):
        uuids = [r["uuid"] for r in records.values()]
        assert len(uuids) == len(set(uuids))
    unanswered = len(attempted) - len(acked)
    print(f"\ncrash: {len(acked)} writes acknowledged, {found} found after restart; "
          f"{unanswered} in flight at the kill")
    assert found == len(acked)
