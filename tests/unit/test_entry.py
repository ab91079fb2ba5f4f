"""The package's front door: a lazy public API and a quiet Ctrl-C while the CLI loads."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest

import chordguard


def test_every_public_name_resolves_and_nothing_else_is_exported():
    assert sorted(chordguard.__all__) == sorted(chordguard._EXPORTS)
    for name in chordguard.__all__:
        assert getattr(chordguard, name) is not None, name
    with pytest.raises(AttributeError):
        chordguard.no_such_name  # noqa: B018


def test_import_chordguard_loads_nothing_heavy():
    code = ("import sys, chordguard; heavy = [m for m in ('celery', 'sqlalchemy', 'redis', "
            "'starlette', 'rich') if m in sys.modules]; print(heavy)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


@pytest.mark.parametrize("delay", [0.02, 0.1, 0.25])
def test_ctrl_c_while_the_cli_starts_exits_130_without_a_traceback(delay):
    """Ctrl-C ``delay`` seconds after the console script's code started (told by
    ``-X importtime``: before that, the interrupt would land in Python's own start-up), while
    it waits on a broker that accepts connections and never answers (a refused one ends the
    command before the Ctrl-C)."""
    silent = socket.create_server(("127.0.0.1", 0), backlog=16)
    url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    process = subprocess.Popen([sys.executable, "-X", "importtime", "-m", "chordguard",
                                "--broker", url, "--backend", url, "status"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    # (as at a terminal, even when the suite runs as a background job: SIGINT ignored there)
    while "chordguard._entry" not in (line := process.stderr.readline()):
        assert line, "the console script never started"
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    silent.close()
    err = "\n".join(line for line in err.splitlines() if not line.startswith("import time:"))
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert process.returncode == 130 and err.strip() == "interrupted"
