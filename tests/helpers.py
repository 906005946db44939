"""Small helpers the test modules share."""
import contextlib
import http.server
import threading

import pytest
import XenAPI

from tests.server import RunningServer

NULL = "OpaqueRef:NULL"


def failure(fn, *args, **kwargs):
    """The details of the XenAPI.Failure a call must raise: [code, params...]."""
    with pytest.raises(XenAPI.Failure) as exc:
        fn(*args, **kwargs)
    return exc.value.details


def records(x, *classes):
    """All records of these classes: what a refused call must leave as it was."""
    return {cls: getattr(x, cls).get_all_records() for cls in classes}


def the_pool(x):
    return x.pool.get_all()[0]


def the_host(x):
    """The pool's one host."""
    return x.host.get_all()[0]


def pif(x, device):
    """The host's physical PIF of this device (eth0, eth1...)."""
    [ref] = [r for r, v in x.PIF.get_all_records().items()
             if v["device"] == device and v["physical"]]
    return ref


def drop_vm(x, vm):
    """A test VM goes, with its disks and devices, whatever its power state."""
    if x.VM.get_power_state(vm) != "Halted":
        x.VM.hard_shutdown(vm)
    for cls in ("VGPU", "VUSB", "VTPM"):
        for dev in getattr(x.VM, f"get_{cls}s")(vm):
            getattr(x, cls).destroy(dev)
    for vbd in x.VM.get_VBDs(vm):
        vdi = x.VBD.get_VDI(vbd)
        if vdi != NULL and x.VBD.get_type(vbd) == "Disk":
            x.VDI.destroy(vdi)
    x.VM.destroy(vm)


def new_network(x, name="test net", **extra):
    rec = {"name_label": name, "name_description": "", "MTU": "1500", "other_config": {},
           "tags": []}
    rec.update(extra)
    return x.network.create(rec)


@contextlib.contextmanager
def own_server(tmp_path_factory, name):
    """A server of the test module's own (HTTP only), for tests that change the host's
    NICs or clustering: a logged-in XenAPI.py `xenapi` proxy on it."""
    srv = RunningServer(tmp_path_factory.mktemp(name), https=False, unix=False)
    try:
        session = srv.session()
        yield session.xenapi
        session.xenapi.session.logout()
    finally:
        srv.stop()


@contextlib.contextmanager
def put_receiver():
    """A local HTTP server keeping what is PUT to it: yields (its URL, [(path, body), ...])."""
    received = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            received.append((self.path, self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}", received
    finally:
        httpd.shutdown()
        httpd.server_close()
