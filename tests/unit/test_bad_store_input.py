"""``dlq`` against a store that is missing, unparsable or down: one clear line, the
documented exit code, no traceback, no hang, and nothing created. No service needed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def dlq(cwd: Path, *args: str, state: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "XDG_STATE_HOME": str(state), "PYTHONPATH": str(ROOT / "src")}
    env.pop("CHORDGUARD_STORE", None)
    return subprocess.run([sys.executable, "-m", "chordguard", "--broker", "redis://127.0.0.1:1/0",
                           "dlq", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=30)


@pytest.mark.parametrize("url, says", [
    ("not a url", "unknown store URL 'not a url'"),
    ("mongodb://db/x", "unknown store URL 'mongodb://db/x'"),
    ("redis://127.0.0.1:6379/notanumber", "the Redis database must be a number"),
    ("redis://:pw@127.0.0.1:1/0", "store redis://:**@127.0.0.1:1/0 unreachable"),
    ("postgresql+psycopg://postgres@127.0.0.1:1/test", "unreachable"),
])
def test_a_bad_or_unreachable_store_is_one_line(tmp_path, url, says):
    started = time.monotonic()
    for command in (("list", "--store", url), ("show", "abc", "--store", url),
                    ("drop", "abc", "--reason", "r", "--store", url)):
        result = dlq(tmp_path, *command, state=tmp_path / "state")
        assert result.returncode == 1, (command, result.stderr)
        assert says in result.stderr and "Traceback" not in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
        assert "pw@" not in result.stderr
    assert time.monotonic() - started < 60


def test_read_only_commands_never_create_a_store(tmp_path):
    state = tmp_path / "state"
    listed = dlq(tmp_path, "list", state=state)
    assert listed.returncode == 0 and "no store at" in listed.stdout
    assert str(state / "chordguard" / "chordguard.sqlite") in listed.stdout.replace("\n", "")
    assert json.loads(dlq(tmp_path, "list", "--json", state=state).stdout)["dead_letters"] == []
    missing = tmp_path / "nowhere" / "x.sqlite"
    shown = dlq(tmp_path, "show", "abc", "--store", f"sqlite:///{missing}", state=state)
    assert shown.returncode == 1 and "no store at" in shown.stderr
    assert list(tmp_path.iterdir()) == [] or not any(p.suffix == ".sqlite"
                                                    for p in tmp_path.rglob("*"))
    assert not state.exists() and not missing.parent.exists()
