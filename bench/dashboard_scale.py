"""The dashboard, ``/api/chords``, ``/metrics`` and ``/healthz`` over 100,000 in-flight chords.

    python bench/dashboard_scale.py [--chords 100000] [--seconds 40] --redis URL

(``--redis``: a private server, broker and backend, so the shared one is not flooded.)
Chords are published as ``bench/check_redis_chords.py`` publishes them (through Celery, their
header messages queued, under a key prefix of their own, deleted afterwards unless
``--keep``; ``--prefix`` reuses a kept run's). Then
``chordguard -A bench.check_redis_chords serve`` runs as a subprocess on a free loopback
port, with a background snapshot every ``--refresh`` seconds; the bench waits for its first
snapshot (the time it took, by the sources' own figures and from the process start), then
for ``--seconds`` requests every endpoint in turn, so some requests meet a collection under
way: best, median and worst of each, the load average, and the server's RSS (current, peak).

There is no Celery baseline: Celery has no dashboard (Flower lists tasks, not chords).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench import check_redis_chords as chords  # noqa: E402

ROOT = chords.ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def memory(pid: int) -> tuple[int, int]:
    """Current and peak RSS of ``pid``, MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text()
                  .splitlines() if ":" in line)
    return (int(fields["VmRSS"].split()[0]) // 1024, int(fields["VmHWM"].split()[0]) // 1024)


def start_serve(env: dict[str, str], port: int, refresh: float, log: Path,
                extra: list[str]) -> subprocess.Popen:
    args = [sys.executable, "-m", "chordguard", "-A", "bench.check_redis_chords", "serve",
            "--port", str(port), "--refresh", str(refresh), "--max-hours", "1", *extra]
    return subprocess.Popen(args, env=env, cwd=ROOT, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def first_snapshot(http: httpx.Client, process: subprocess.Popen, log: Path) -> dict:
    """The first ``/api/chords?limit=0`` answer (it waits for the first snapshot)."""
    end = time.monotonic() + 300
    while time.monotonic() < end:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited:\n{log.read_text()[-3000:]}")
        try:
            return http.get("/api/chords?limit=0").json()
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("no first snapshot within 300 s")


def timed_get(http: httpx.Client, path: str) -> tuple[float, httpx.Response]:
    """Seconds of one GET of ``path`` (read whole), and the response."""
    started = time.perf_counter()
    response = http.get(path)
    return time.perf_counter() - started, response


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--chords", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=40.0,
                        help="how long to keep requesting (every endpoint in turn)")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between rounds")
    parser.add_argument("--refresh", type=float, default=5.0,
                        help="serve --refresh: background snapshots during the requests")
    parser.add_argument("--redis", default=chords.REDIS_URL, help="Redis URL (broker and backend)")
    parser.add_argument("--serve-arg", action="append", default=[],
                        help="extra `serve` option (repeatable), e.g. --serve-arg=--refresh=30")
    parser.add_argument("--keep", action="store_true", help="leave the chords for a rerun")
    parser.add_argument("--prefix", help="the key prefix of a kept run: reuse its chords")
    opts = parser.parse_args()
    chords.REDIS_URL = opts.redis
    prefix = opts.prefix or f"cgbench{uuid.uuid4().hex[:8]}:"
    env = {**os.environ, chords.PREFIX_ENV: prefix, "CG_TEST_REDIS": opts.redis,
           "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env.pop("CHORDGUARD_TOKEN", None)
    app = chords.make_app(prefix)
    port = free_port()
    log = Path(f"/tmp/dashboard-scale-{port}.log")
    process = None
    try:
        started = time.perf_counter()
        if chords.existing(app) != opts.chords:
            chords.create(app, opts.chords)
        print(f"made {opts.chords} chords in {time.perf_counter() - started:.1f} s "
              f"(load average {os.getloadavg()[0]:.2f})")
        started = time.perf_counter()
        process = start_serve(env, port, opts.refresh, log, opts.serve_arg)
        http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120.0)
        first = first_snapshot(http, process, log)
        waited = time.perf_counter() - started
        assert first["total"] == opts.chords, (first["total"], first["sources"])
        source_seconds = max(s["seconds"] for s in first["sources"])
        print(f"first snapshot: {waited:.2f} s from process start, sources took "
              f"{source_seconds:.2f} s; health {first['health']['status']}; sources "
              + ", ".join(f"{s['name']} {'ok' if s['ok'] else 'DOWN'}" for s in first["sources"]))
        middle = opts.chords // 2
        sample = http.get(f"/api/chords?limit=1&offset={middle}").json()["chords"][0]["id"]
        paths = {"GET / (HTML page)": "/",
                 "/api/chords (first page, default limit)": "/api/chords",
                 "/api/chords?state=running (500 of 100,000)": "/api/chords?state=running",
                 "/api/chords?diagnosis=lost_header (none)": "/api/chords?diagnosis=lost_header",
                 "/api/chords?callback=callback (substring)": "/api/chords?callback=callback",
                 f"/api/chords?kind=redis&limit=50&offset={middle}":
                     f"/api/chords?kind=redis&limit=50&offset={middle}",
                 "/api/chords/<id> (one chord)": f"/api/chords/{sample}",
                 "/metrics": "/metrics",
                 "/healthz": "/healthz"}
        runs: dict[str, list[float]] = {name: [] for name in paths}
        shape: dict[str, tuple[int, int]] = {}
        snapshots: set[str] = set()
        verdicts: Counter[str] = Counter()
        listed: Counter[bool] = Counter()  # /api/chords answers: all chords in them or not
        end = time.monotonic() + opts.seconds
        while time.monotonic() < end or min(len(r) for r in runs.values()) < 3:
            for name, path in paths.items():
                seconds, response = timed_get(http, path)
                runs[name].append(seconds)
                shape[name] = response.status_code, len(response.content)
                if path.startswith("/api/chords?") or path == "/api/chords":
                    body = response.json()
                    snapshots.add(body["taken_at"])
                    listed[body["total"] == opts.chords] += 1
                    verdicts[body["health"]["status"]] += 1
            time.sleep(opts.pause)
        print(f"{opts.seconds:.0f} s of requests, {min(len(r) for r in runs.values())} per "
              f"endpoint, over {len(snapshots)} snapshots (serve collected in the background "
              f"meanwhile; the first request of a filter after each snapshot walks the chords)")
        print(f"list answers holding all {opts.chords} chords: {listed[True]} of "
              f"{sum(listed.values())}; health: "
              + ", ".join(f"{v} {n}x" for v, n in verdicts.most_common()))
        print(f"{'endpoint':46} {'best':>7} {'median':>7} {'worst':>7} {'status':>6} {'bytes':>8}")
        for name, seconds in runs.items():
            status, size = shape[name]
            print(f"{name:46} {_ms(min(seconds))} {_ms(statistics.median(seconds))} "
                  f"{_ms(max(seconds))} {status:>6} {size:>8}")
        rss, peak = memory(process.pid)
        print(f"serve RSS {rss} MiB (peak {peak} MiB); load average {os.getloadavg()[0]:.2f}")
        http.close()
    finally:
        if process is not None and process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(20)
        if not opts.keep:
            print(f"deleted {chords.delete_all(app, prefix)} bench keys")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:5.0f}ms"


if __name__ == "__main__":
    main()
