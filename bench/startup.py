"""`chordguard --version` against `python -c "import celery"`, fresh processes, alternating.

    python bench/startup.py [--rounds 15]

Both are the console script's interpreter (``sys.executable``); ``chordguard`` is the
installed console script next to it, as a user runs it. Reports best and median wall time
and their ratios (target: ``--version`` within 1.3x of ``import celery``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("chordguard")


def timed(args: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=15)
    opts = parser.parse_args()
    runs = {"import celery": [sys.executable, "-c", "import celery"],
            "chordguard --version": [str(SCRIPT), "--version"]}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(opts.rounds):
        for name, args in runs.items():
            times[name].append(timed(args))
    for name, values in times.items():
        print(f"{name:22} best {min(values):.3f} s, median {statistics.median(values):.3f} s")
    ours, theirs = times["chordguard --version"], times["import celery"]
    print(f"ratio --version / import celery: best {min(ours) / min(theirs):.2f}, median "
          f"{statistics.median(ours) / statistics.median(theirs):.2f}  "
          f"(load average {os.getloadavg()[0]:.2f})")


if __name__ == "__main__":
    main()
