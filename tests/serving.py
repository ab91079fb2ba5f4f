"""A real ``chordguard serve`` subprocess for a test cluster, and what tests read from it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.cluster import ROOT, Cluster


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """``chordguard -A tests.chordapp serve`` on a free loopback port; ``target`` (app options)
    and ``env`` serve another app (then ``cluster`` may be None and ``log_dir`` is given)."""

    def __init__(self, cluster: Cluster | None, token: str | None = None,
                 extra: list[str] | None = None, target: list[str] | None = None,
                 env: dict[str, str] | None = None, log_dir: Path | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (log_dir or cluster.tmp) / f"serve-{self.port}.log"
        args = [sys.executable, "-m", "chordguard", *(target or ["-A", "tests.chordapp"]),
                "serve", "--port", str(self.port), "--refresh", "2", "--cache", "0.5",
                *(extra or [])]
        env = dict(env) if env is not None else cluster.env()
        env.pop("CHORDGUARD_TOKEN", None)
        if token:
            env["CHORDGUARD_TOKEN"] = token  # through the environment, as documented
        self.process = subprocess.Popen(args, env=env, cwd=ROOT, stdout=self.log.open("w"),
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.http = httpx.Client(base_url=self.url, timeout=30.0)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 40.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"serve exited:\n{self.output()}")
            try:
                self.http.get("/healthz")
                return
            except httpx.TransportError:
                time.sleep(0.2)
        raise RuntimeError(f"serve did not answer within {timeout:.0f} s:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.http.get(path, **kwargs)

    def post(self, path: str, **kwargs) -> httpx.Response:
        return self.http.post(path, **kwargs)

    def metrics(self) -> dict[str, dict[tuple, float]]:
        """Sample name -> {sorted label pairs: value} from /metrics."""
        response = self.get("/metrics")
        assert response.status_code == 200, response.text
        out: dict[str, dict[tuple, float]] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                out.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = \
                    sample.value
        return out

    def stop(self) -> None:
        self.http.close()
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def listed(server: Server, chord_id: str, query: str = "") -> dict | None:
    body = server.get(f"/api/chords?{query}").json()
    return next((c for c in body["chords"] if c["id"] == chord_id), None)
