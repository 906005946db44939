"""task.*: clients' own tasks, cancel and destroy (the getters are generated).

The explicit setters check the caller may act on the task (its own, or any with
pool-operator rights), as xapi does; the work itself is in server/tasks.py.
"""
from __future__ import annotations

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
