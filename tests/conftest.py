import pytest

from tests.server import RunningServer


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """One server for the whole run (simulator backend), over HTTP, HTTPS and a Unix socket."""
    srv = RunningServer(tmp_path_factory.mktemp("pyxapi-state"))
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def xapi(server):
    """A logged-in XenAPI.py session's `xenapi` proxy over HTTP."""
    session = server.session("http")
    yield session.xenapi
    try:
        session.xenapi.session.logout()
    except Exception:
        pass


@pytest.fixture
def fresh_server(tmp_path):
    """A server of its own, for tests that restart or kill it."""
    servers = []

    def start(**kwargs):
        srv = RunningServer(tmp_path / "state", **kwargs)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture(scope="module")
def kernel():
    """The QEMU test guest's kernel and initramfs (tests/guest; built once, then cached)."""
    from tests import guest
    return guest.build()


@pytest.fixture
def cleanup(tmp_path):
    """Kills the QEMUs started under tmp_path: they outlive servers by design."""
    yield
    from tests import guest
    guest.kill_qemus(tmp_path)
