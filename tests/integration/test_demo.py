"""The README's first command: the embedded demo finds and fails the stuck chord."""

import subprocess
import sys

from tests.cluster import ROOT


def test_demo_finds_the_lost_header_and_fails_the_chord(tmp_path):
    done = subprocess.run([sys.executable, "-m", "chordguard", "demo", "--dir", str(tmp_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "sum of squares 0..9 = 285" in done.stdout
    assert "lost_header" in done.stdout
    assert "is now FAILURE" in done.stdout and "ChordError" in done.stdout
    assert (tmp_path / "results.sqlite").exists()
