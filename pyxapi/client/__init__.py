"""The `pyxapi` client commands: `xe`-style verbs (`pyxapi vm-list`) and `pyxapi docs`.

`run_command(argv)` is the one entry point `pyxapi.cli` calls: it returns an exit
status when argv is a client command, None when it is not (serve, user, …).
"""
from __future__ import annotations

import re

# `class-action` words: vm-list, host-cpu-param-list, vm-start, …
_XE_COMMAND = re.compile(r"^[A-Za-z][A-Za-z0-9_]*(-[A-Za-z0-9_]+)+$")
_SERVER_COMMANDS = ("serve", "user")


def run_command(argv: list[str]) -> int | None:
    if not argv or argv[0] in _SERVER_COMMANDS or argv[0] in ("-h", "--help"):
        return None
    if argv[0] == "docs":
        from .coverage import main

        return main(argv[1:])
    # xe takes its connection options anywhere, also before the command
    if argv[0] == "help" or _XE_COMMAND.match(argv[0]) or argv[0].startswith("-"):
        from .xe import main

        return main(argv)
    return None
