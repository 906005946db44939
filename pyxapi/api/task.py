"""task.*: clients' own tasks, cancel and destroy (the getters are generated).

The explicit setters check the caller may act on the task (its own, or any with
pool-operator rights), as xapi does; the work itself is in server/tasks.py.
"""
from __future__ import annotations

from .bootstrap import on_loop_start_hook
from .registry import action


@action("task.create")
def create(ctx, label, description):
    return ctx.app.tasks.create(label, ctx.session, description, cancellable=False)


@action("task.cancel")
def cancel(ctx, task):
    ctx.app.tasks.check_owner(ctx.session, task)
    ctx.app.tasks.cancel(task)


@action("task.destroy")
def destroy(ctx, task):
    ctx.app.tasks.check_owner(ctx.session, task)
    ctx.app.tasks.destroy(task)


@action("task.set_status")
def set_status(ctx, task, value):
    ctx.app.tasks.check_owner(ctx.session, task)
    ctx.app.tasks.set_status(task, value)


@action("task.set_progress", "task.set_result", "task.set_error_info")
def set_field(ctx, task, value):
    ctx.app.tasks.check_owner(ctx.session, task)
    ctx.store.update("task", task, {ctx.message.name[len("set_"):]: value})


@on_loop_start_hook
async def drop_tasks_from_before_a_restart(app):
    """xapi keeps no task across a restart (their work ended with the process); clients such
    as Xen Orchestra notice them gone by valid_ref_counts. Tasks of this run are kept."""
    tasks = app.tasks
    for ref in app.store.refs("task"):
        if ref not in tasks.running and ref not in tasks.finished_at and ref not in tasks.owners:
            app.store.destroy("task", ref)
