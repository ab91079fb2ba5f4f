"""Which errbacks Celery would call in the process failing a body (old-style), found in a
task body and in a group body's members: those an operator's command never runs itself."""

import pytest
from celery import Celery, group

from chordguard.actions.callback import old_style_errbacks


def make_app() -> Celery:
    app = Celery("styles", broker="memory://", backend="cache+memory://")

    @app.task(name="s.body")
    def body(values):
        return values

    @app.task(name="s.old")
    def old(request, exc, traceback):
        return None

    @app.task(name="s.new")
    def new(task_id):
        return task_id

    return app


@pytest.mark.compat  # each Celery tells old-style errbacks its own way (_compat)
def test_old_style_errbacks_of_a_task_body_and_of_group_members():
    app = make_app()
    task_body = app.signature("s.body").on_error(app.signature("s.old")) \
        .on_error(app.signature("s.new")).on_error(app.signature("s.unregistered"))
    assert old_style_errbacks(app, dict(task_body)) == ["s.old"]
    members = group(app.signature("s.body").on_error(app.signature("s.new")),
                    app.signature("s.body").on_error(app.signature("s.old")))
    assert old_style_errbacks(app, dict(members)) == ["s.old"]
    assert old_style_errbacks(app, dict(app.signature("s.body"))) == []
