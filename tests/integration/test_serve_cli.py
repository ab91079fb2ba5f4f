"""``chordguard serve`` as a process: it binds before it prints, ``--port 0`` prints the port
it got, a taken port is one line and exit 1, and Ctrl-C exits 130 like every other command."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import httpx
import pytest

from tests.cluster import REDIS_URL, ROOT

EXIT_PROBLEMS, EXIT_INTERRUPTED = 1, 130


def start(port: int, sigint=signal.SIG_DFL) -> subprocess.Popen:
    """``serve`` with SIGINT as at a terminal (SIG_DFL) or as in a background job (SIG_IGN)."""
    return subprocess.Popen(
        [sys.executable, "-m", "chordguard", "--broker", REDIS_URL, "--backend", REDIS_URL,
         "serve", "--port", str(port)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, sigint))


def announced_port(process: subprocess.Popen) -> int:
    line = process.stderr.readline()
    found = re.fullmatch(r"chordguard serve: http://127\.0\.0\.1:(\d+)/ \(read-only\)\n", line)
    assert found, line
    return int(found.group(1))


@pytest.mark.parametrize("sigint", [signal.SIG_DFL, signal.SIG_IGN])
def test_port_zero_taken_port_and_ctrl_c(sigint):
    first = start(0, sigint)
    try:
        port = announced_port(first)
        assert port != 0
        health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30)
        assert health.status_code in (200, 503) and "status" in health.json()

        second = start(port)
        out, err = second.communicate(timeout=60)
        assert second.returncode == EXIT_PROBLEMS, err
        assert (out, err) == ("", f"chordguard: cannot listen on 127.0.0.1:{port}: "
                                  "Address already in use\n")

        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=30)
        assert first.returncode == EXIT_INTERRUPTED, err
        assert err.strip() == "interrupted" and "Traceback" not in err
    finally:
        if first.poll() is None:
            first.kill()
            first.wait(10)
