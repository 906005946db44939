"""session.*: login and logout (the other session messages are generated)."""
from __future__ import annotations

from .bootstrap import on_loop_start_hook
from .registry import action


@action("session.login_with_password")
async def login_with_password(ctx, uname, pwd, version="", originator=""):
    return await ctx.app.sessions.login(uname, pwd, originator)


@action("session.slave_local_login_with_password")
async def slave_local_login_with_password(ctx, uname, pwd):
    return await ctx.app.sessions.login(uname, pwd, "")


@action("session.logout", "session.local_logout")
def logout(ctx):
    ctx.app.sessions.logout(ctx.session)


@action("session.change_password")
async def change_password(ctx, old_pwd, new_pwd):
    await ctx.app.sessions.change_password(ctx.session, new_pwd)


@on_loop_start_hook
async def drop_sessions_from_before_a_restart(app):
    """xapi does not persist sessions: after a restart every old session ref is SESSION_INVALID
    and clients log in again. Sessions of this run (in `live`) are kept."""
    for ref in app.store.refs("session"):
        if ref not in app.sessions.live:
            app.store.destroy("session", ref)
