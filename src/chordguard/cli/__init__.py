"""``chordguard`` and ``celery chordguard``: parse, call, render.

Common options (``-A/--app``, ``--broker``, ``--backend``, ``--json``, ``--verbose``) are
accepted anywhere on the line. Exit codes: 0 healthy, 1 problems found or error,
2 usage, 3 unknown (a source failed, the view was incomplete, or nothing reads this app's
chords: never "healthy" on what was not seen), 130 interrupted.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import click

from .._urls import mask_text
from .._version import VERSION
from ..errors import CannotVouchError, ChordguardError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_UNKNOWN, EXIT_INTERRUPTED = 0, 1, 2, 3, 130
_META_KEY = "chordguard.settings"
NON_TTY_WIDTH = 160

if TYPE_CHECKING:
    from celery import Celery
    from rich.console import Console


@dataclass
class Settings:
    """What the common options said, wherever on the line they stood."""

    app_path: str | None = None
    broker: str | None = None
    backend: str | None = None
    json: bool = False
    verbose: bool = False
    celery_app: Celery | None = None  # given by ``celery -A proj chordguard``
    _app: Celery | None = None

    @property
    def app(self) -> Celery:
        if self._app is None:
            if self.celery_app is not None and not self.app_path:
                from .appctx import set_up_framework

                self._app = self.celery_app
                set_up_framework(self._app)
                if self.broker or self.backend:
                    self._app.conf.update({k: v for k, v in (("broker_url", self.broker),
                                          ("result_backend", self.backend)) if v})
            else:
                from .appctx import load_app  # celery loads only for a command that runs

                self._app = load_app(self.app_path, self.broker, self.backend)
        return self._app

    @property
    def console(self) -> Console:
        from rich.console import Console

        wide = None if sys.stdout.isatty() else NON_TTY_WIDTH  # logs, cron mail, pipes
        return Console(highlight=False, soft_wrap=self.json, width=wide)

    def emit_json(self, document: Any) -> None:
        click.echo(json.dumps(document, indent=2, default=str))


IN_PROCESS = click.option(
    "--in-process", is_flag=True,
    help="When no guarded worker can fail a callback, run its old-style (request, exc, "
         "traceback) errbacks in this process (what they print is captured). By default a "
         "worker fails it, and such a callback is refused without one.")


class FiniteFloat(click.FloatRange):
    """A float range that refuses ``nan`` and ``inf`` (which compare as inside any range)."""

    name = "number"

    def convert(self, value: Any, param: click.Parameter | None,
                ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


def settings() -> Settings:
    ctx = click.get_current_context()
    return ctx.meta.setdefault(_META_KEY, Settings())


def _remember(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value not in (None, False):
        setattr(ctx.meta.setdefault(_META_KEY, Settings()), param.name, value)
    return value


def common_options(fn: Callable) -> Callable:
    """Add the common options to a group or command; their values land in ``settings()``."""
    options = [
        click.option("-A", "--app", "app_path", metavar="MODULE",
                     help="Celery app, as for celery -A."),
        click.option("--broker", metavar="URL", help="Broker URL when there is no app."),
        click.option("--backend", metavar="URL", help="Result backend URL when there is no app."),
        click.option("--json", "json", is_flag=True, help="Machine-readable output."),
        click.option("--verbose", "-v", "verbose", is_flag=True, help="More detail."),
    ]
    for option in options:
        fn = option(fn)
    for param in fn.__click_params__[-len(options):]:
        param.expose_value = False
        param.callback = _remember
        param.is_eager = True
    return fn


def command(group_commands: list[click.Command], **attrs: Any) -> Callable:
    """Declare a chordguard command: common options, errors shown plainly with exit 1."""

    def decorate(fn: Callable) -> click.Command:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                code = fn(*args, **kwargs)
            except CannotVouchError as exc:
                click.echo(f"chordguard: unknown: {mask_text(str(exc))}", err=True)
                code = EXIT_UNKNOWN
            except ChordguardError as exc:
                click.echo(f"chordguard: {mask_text(str(exc))}", err=True)
                code = EXIT_PROBLEMS
            except KeyboardInterrupt:
                click.echo("interrupted", err=True)
                code = EXIT_INTERRUPTED
            click.get_current_context().exit(code or EXIT_OK)

        cmd = click.command(**attrs)(common_options(run))
        group_commands.append(cmd)
        return cmd

    return decorate


COMMANDS: list[click.Command] = []
# command name -> the cli module that declares it: a command's module (and what it imports)
# loads only when that command runs, so ``check`` never loads the web server or SQLAlchemy
COMMAND_MODULES = {
    "status": "monitor", "check": "monitor", "inspect": "monitor", "watch": "watch",
    "doctor": "doctor", "revoke": "actions", "clean": "actions", "fix": "fix",
    "reap": "durable", "dlq": "dlq", "serve": "serve", "demo": "demo", "mcp": "mcp",
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use (see ``COMMAND_MODULES``)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is None:
            return None
        importlib.import_module(f"{__name__}.{module}")
        return next(cmd for cmd in COMMANDS if cmd.name == cmd_name)


def preload(argv: list[str]) -> None:
    """Import the module of the command named on ``argv`` now (the console script does this
    while Ctrl-C still exits quietly); a token that only looks like one costs an import."""
    module = next((COMMAND_MODULES[t] for t in argv if t in COMMAND_MODULES), None)
    if module is not None:
        importlib.import_module(f"{__name__}.{module}")


def _build_groups() -> tuple[click.Group, click.Group]:
    @click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(VERSION, "--version", prog_name="chordguard",
                          message="%(prog)s %(version)s")
    @common_options
    def cli() -> None:
        """chordguard: see, diagnose and end stuck Celery chords."""

    @click.group("chordguard", cls=LazyGroup)
    @common_options
    @click.pass_context
    def celery_group(ctx: click.Context) -> None:
        """chordguard: see, diagnose and end stuck Celery chords."""
        parent = ctx.find_root().obj
        settings().celery_app = getattr(parent, "app", None)

    return cli, celery_group


cli, celery_chordguard = _build_groups()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: map outcomes to the documented exit codes."""
    try:
        code = cli.main(args=argv, prog_name="chordguard", standalone_mode=False)
    except click.UsageError as exc:
        exc.show()
        code = EXIT_USAGE
    except click.ClickException as exc:
        exc.show()
        code = EXIT_PROBLEMS
    except (click.Abort, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        code = EXIT_INTERRUPTED
    sys.exit(code if isinstance(code, int) else EXIT_OK)
