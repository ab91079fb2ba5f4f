"""The README's first command: the embedded demo finds and fails the stuck chord, and leaves
nothing behind."""

import os
import subprocess
import sys

import pytest

from tests.cluster import ROOT


@pytest.mark.compat
def test_demo_finds_the_lost_header_and_fails_the_chord(tmp_path):
    """... and leaves nothing in the user's state directory (the workers' roster) or in the
    store the user's environment names."""
    root, state, store = tmp_path / "demo", tmp_path / "state", tmp_path / "user.sqlite"
    state.mkdir()
    env = {**os.environ, "XDG_STATE_HOME": str(state), "CHORDGUARD_STORE": f"sqlite:///{store}"}
    done = subprocess.run([sys.executable, "-m", "chordguard", "demo", "--dir", str(root)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "The healthy chord" in out and "285" in out and "SUCCESS" in out
    first_status = out.split("chordguard status")[1].split("chordguard check")[0]
    assert "lost_header" in first_status and " healthy" not in first_status
    assert "is now FAILURE" in out and "ChordError" in out
    assert f"demo files removed ({root})" in out.replace("\n", "") and not root.exists()
    assert list(state.iterdir()) == [] and not store.exists()


def test_demo_keeps_its_files_when_asked(tmp_path):
    done = subprocess.run([sys.executable, "-m", "chordguard", "demo", "--dir", str(tmp_path),
                           "--keep"], cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "results.sqlite").exists() and "demo files kept in" in done.stdout
