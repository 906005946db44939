"""`pyxapi serve` and the administrative commands."""
from __future__ import annotations

import argparse
import getpass
import logging
import os
import pathlib
import sys

DEFAULT_STATE_DIR = os.environ.get("PYXAPI_STATE_DIR", "./pyxapi-state")


def main(argv=None) -> int:
    from .client import run_command  # xe-style client commands (vm-list, …) and `docs`

    status = run_command(sys.argv[1:] if argv is None else list(argv))
    if status is not None:
        return status
    parser = argparse.ArgumentParser(prog="pyxapi", description="A Xen-API server in Python.")
    sub = parser.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the Xen-API server")
    s.add_argument("--http", action="append", default=[], metavar="HOST:PORT")
    s.add_argument("--https", action="append", default=[], metavar="HOST:PORT")
    s.add_argument("--unix", action="append", default=[], metavar="PATH")
    s.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
    s.add_argument("--backend", choices=("simulator", "qemu"), default="simulator")
    s.add_argument("--root-password", default=os.environ.get("PYXAPI_ROOT_PASSWORD"))
    s.add_argument("--tls-cert")
    s.add_argument("--tls-key")
    s.add_argument("--log-level", default=os.environ.get("PYXAPI_LOG_LEVEL", "INFO"))
    s.add_argument("--session-timeout", type=float, default=86400, metavar="SECONDS",
                   help="end sessions unused for this long (default: 24 h, as xapi)")
    s.add_argument("--max-sessions", type=int, default=500, metavar="N",
                   help="sessions kept per user / per originator; the least recently used go first")

    u = sub.add_parser("user", help="manage local users")
    usub = u.add_subparsers(dest="user_command", required=True)
    for name in ("add", "passwd"):
        p = usub.add_parser(name)
        p.add_argument("name")
        p.add_argument("--password", help="default: asked on the terminal or read from stdin")
        p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)
        if name == "add":
            p.add_argument("--role", default="pool-admin")
    p = usub.add_parser("list")
    p.add_argument("--state-dir", default=DEFAULT_STATE_DIR)

    args = parser.parse_args(argv)
    if args.command == "serve":
        return serve(args)
    if args.command == "user":
        return user(args)
    return 2


def _fixed_mmap_threshold() -> None:
    """glibc raises its mmap threshold each time a big block is freed; big replies (every
    record of a pool) then come from the heap and leave it fragmented: ~40 MB more RSS at
    10,000 VMs. Setting the threshold keeps it fixed (a no-op off glibc)."""
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-3, 128 * 1024)  # M_MMAP_THRESHOLD, glibc's default
    except (OSError, AttributeError):
        pass


def serve(args) -> int:
    import uvloop

    _fixed_mmap_threshold()

    from .server.app import App
    from .server.listen import Listener, parse_hostport, serve as run

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state_dir = pathlib.Path(args.state_dir).resolve()
    listeners = [Listener("http", *parse_hostport(h, 80)) for h in args.http]
    listeners += [Listener("https", *parse_hostport(h, 443)) for h in args.https]
    listeners += [Listener("unix", path=str(pathlib.Path(p).resolve())) for p in args.unix]
    if not listeners:
        listeners = [Listener("http", "127.0.0.1", 8080)]
    app = App(state_dir, args.backend)
    app.sessions.configure(timeout=args.session_timeout, max_per_group=args.max_sessions)
    tls_files = None
    if any(lst.kind == "https" for lst in listeners):
        from .server.tls import ensure_certificate  # only for HTTPS: cryptography is slow to import

        if args.tls_cert and args.tls_key:
            tls_files = (pathlib.Path(args.tls_cert), pathlib.Path(args.tls_key))
        else:
            tls_files = ensure_certificate(state_dir, [lst.host for lst in listeners])

    generated = None

    def ready(lsts):
        print(f"pyxapi {app.backend_name} backend, state in {state_dir}", flush=True)
        for lst in lsts:
            print(f"listening: {lst.url}", flush=True)
        if tls_files:
            from .server.tls import fingerprint

            print(f"TLS certificate SHA-256 fingerprint: {fingerprint(tls_files[0])}", flush=True)
        if generated:
            print(f"user: root  password: {generated}  (generated now, shown once)", flush=True)
        else:
            print("user: root  (password as set)", flush=True)

    async def main():
        nonlocal generated
        generated = await app.start(args.root_password)
        await run(app, listeners, tls_files, ready)

    uvloop.run(main())
    return 0


def user(args) -> int:
    from .db.persist import SqlitePersistence
    from .server.auth import Users

    state_dir = pathlib.Path(args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    users = Users(SqlitePersistence(state_dir / "state.db"))
    if args.user_command == "list":
        for name, role in users.persistence.users():
            print(f"{name}\t{role}")
        return 0
    password = args.password
    if password is None:
        password = getpass.getpass(f"password for {args.name}: ") if sys.stdin.isatty() else sys.stdin.readline().rstrip("\n")
    if args.user_command == "add":
        if users.get(args.name):
            print(f"user {args.name} exists; use `pyxapi user passwd`", file=sys.stderr)
            return 1
        try:
            users.set(args.name, password, args.role)
        except ValueError as e:
            print(e, file=sys.stderr)
            return 2
    else:
        row = users.get(args.name)
        if not row:
            print(f"no user {args.name}", file=sys.stderr)
            return 1
        users.set(args.name, password, row[2])
    print(f"user {args.name}: saved")
    return 0


if __name__ == "__main__":
    sys.exit(main())
