"""The server object: model, store, users, sessions, tasks, backend, dispatcher."""
from __future__ import annotations

import logging
import pathlib

from .. import model as _model
from ..db.persist import SqlitePersistence
from ..db.store import Store
from .audit import Audit
from .auth import Users, generate_password
from .dispatch import Dispatcher
from .sessions import Rbac, Sessions
from .tasks import Tasks

log = logging.getLogger("pyxapi")


class App:
    def __init__(self, state_dir: pathlib.Path | None, backend_name: str = "simulator",
                 backend_options: dict | None = None):
        self.model = _model.load()
        self.state_dir = pathlib.Path(state_dir) if state_dir else None
        if self.state_dir:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            self.persistence = SqlitePersistence(self.state_dir / "state.db")
        else:
            self.persistence = None
        self.store = Store(self.model, self.persistence)
        self.users = Users(self.persistence)
        self.sessions = Sessions(self)
        self.rbac = Rbac(self)
        self.audit = Audit(self.state_dir / "audit.log" if self.state_dir else None)
        self.tasks = Tasks(self)
        self.backend_name = backend_name
        self.backend = _make_backend(backend_name, self.state_dir, backend_options or {})
        self.dispatcher = Dispatcher(self)
        self.host_ref = None
        self.pool_ref = None

    async def start(self, root_password: str | None = None) -> str | None:
        """Load or create state. Returns a newly generated root password, if any."""
        from ..api import bootstrap

        self.store.load()
        generated = None
        if root_password:
            self.users.set("root", root_password, "pool-admin")
        elif self.users.get("root") is None:
            generated = generate_password()
            self.users.set("root", generated, "pool-admin")
        if self.backend is not None:
            await self.backend.open()
        await bootstrap.ensure_host(self)
        self.store.commit()
        return generated

    async def started(self) -> None:
        """Hook run inside the event loop once the listeners are up."""
        from ..api import bootstrap

        await bootstrap.on_loop_start(self)
        self.store.commit()

    def close(self) -> None:
        self.store.commit()
        self.audit.close()
        if self.persistence:
            self.persistence.close()


def _make_backend(name: str, state_dir, options: dict):
    from .. import backends

    make = getattr(backends, "make_backend", None)
    return make(name, state_dir, **options) if make else None
