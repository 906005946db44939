"""VM.update_secureboot_certificates_on_boot moves a VM between "update_available" and
"update_on_boot"; no API call can put a VM in those states (varstored's certificate check
does in xapi), so the state machine is driven here on a store directly."""
import pytest

from pyxapi.api.vm_extras import update_secureboot_certificates_on_boot
from pyxapi.server.app import App
from pyxapi.server.dispatch import Context


@pytest.fixture
def ctx(tmp_path):
    app = App(tmp_path / "state")
    yield Context(app, None)
    app.close()


@pytest.mark.parametrize("state, mark, after", [
    ("update_available", True, "update_on_boot"),
    ("update_on_boot", False, "update_available"),
    ("update_on_boot", True, "update_on_boot"),
    ("update_available", False, "update_available"),
    ("ok", True, "ok"),
    ("ok", False, "ok"),
])
def test_mark_and_unmark(ctx, state, mark, after):
    vm = ctx.store.create("VM", {"name_label": "uefi", "secureboot_certificates_state": state})
    update_secureboot_certificates_on_boot(ctx, vm, mark)
    assert ctx.store.get("VM", vm)["secureboot_certificates_state"] == after
