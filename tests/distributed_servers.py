"""Private servers for the distributed-store tests: a 3-master Redis Cluster, a Redis master
and its replica watched by a Sentinel, and PgBouncer in transaction mode in front of the
shared PostgreSQL.

Each starts on first use, once per test process, on loopback ports reserved for it, in a
temporary folder (nothing saved to disk), and stops when the process exits. A server left
over by a run killed since is found by the pid file it left and stopped by that pid. A
missing binary, a port held by something else or a second run at the same time fails the
test loudly (never a skip).
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from tests.cluster import PG_URL, wait_for

CLUSTER_PORTS = (7500, 7501, 7502)  # their cluster bus ports are +10000
SENTINEL_MASTER_PORT, SENTINEL_PORT, SENTINEL_REPLICA_PORT = 7530, 7531, 7532
PGBOUNCER_PORT = 6440
MASTER_NAME = "cgmaster"
PIDS = Path(tempfile.gettempdir()) / "chordguard-test-servers"  # <port>.pid of each server
START_TIMEOUT = 30.0


def binary(name: str, package: str) -> str:
    found = shutil.which(name) or next(
        (p for d in ("/usr/sbin", "/usr/local/sbin") if os.access(p := f"{d}/{name}", os.X_OK)),
        None)
    if found is None:
        pytest.fail(f"{name} is not installed, and the distributed-store tests start it "
                    f"themselves: apt-get install -y {package} (scripts/system-deps.sh)",
                    pytrace=False)
    return found


def answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def wait_until(predicate, what: str) -> None:
    wait_for(predicate, START_TIMEOUT, 0.05, what)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _stop_leftover(port: int) -> None:
    """Stop what an earlier test run, killed since, started on ``port`` (by the pid it
    recorded); a run still alive keeps its servers, and this one fails."""
    pidfile = PIDS / f"{port}.pid"
    if pidfile.exists():
        server, owner = (int(n) for n in pidfile.read_text().split())
        if _alive(owner):
            pytest.fail(f"port {port} serves another test run (pid {owner}): the distributed-"
                        "store tests cannot run twice at once on this machine", pytrace=False)
        try:
            cmdline = Path(f"/proc/{server}/cmdline").read_bytes()
        except OSError:
            cmdline = b""
        if b"redis-server" in cmdline or b"pgbouncer" in cmdline:
            os.kill(server, signal.SIGKILL)
            wait_until(lambda: not answers(port), f"the leftover server on {port} to stop")
        pidfile.unlink()
    if answers(port):
        pytest.fail(f"port {port} (reserved for the distributed-store tests) is taken by "
                    "another program", pytrace=False)


class Servers:
    """The processes started in this test process, stopped (SIGKILL: nothing to save) at exit."""

    def __init__(self) -> None:
        self.processes: list[tuple[int, subprocess.Popen]] = []
        self.folder = Path(tempfile.mkdtemp(prefix="cg-servers-"))
        atexit.register(self.stop)

    def start(self, port: int, args: list[str], name: str) -> Path:
        _stop_leftover(port)
        log = self.folder / f"{name}.log"
        process = subprocess.Popen(args, cwd=self.folder, stdout=log.open("w"),
                                   stderr=subprocess.STDOUT, start_new_session=True)
        PIDS.mkdir(exist_ok=True)
        (PIDS / f"{port}.pid").write_text(f"{process.pid} {os.getpid()}")
        self.processes.append((port, process))
        try:
            wait_until(lambda: answers(port) or process.poll() is not None, f"{name} on {port}")
        except AssertionError as late:
            pytest.fail(f"{late}:\n{log.read_text(errors='replace')[-2000:]}", pytrace=False)
        if process.poll() is not None:
            pytest.fail(f"{name} exited at start:\n{log.read_text(errors='replace')[-2000:]}",
                        pytrace=False)
        return log

    def redis(self, port: int, *extra: str) -> Path:
        return self.start(port, [binary("redis-server", "redis-server"), "--port", str(port),
                                 "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--dir", str(self.folder), *extra], f"redis-{port}")

    def stop(self) -> None:
        for port, process in self.processes:
            if process.poll() is None:
                process.kill()
                process.wait(10)
            (PIDS / f"{port}.pid").unlink(missing_ok=True)
        self.processes.clear()
        shutil.rmtree(self.folder, ignore_errors=True)


@functools.cache
def _servers() -> Servers:
    return Servers()


def _redis_cli(*args: str) -> str:
    done = subprocess.run([binary("redis-cli", "redis-tools"), *args], capture_output=True,
                          text=True, timeout=60)
    if done.returncode != 0:
        pytest.fail(f"redis-cli {' '.join(args)} failed:\n{done.stdout}{done.stderr}",
                    pytrace=False)
    return done.stdout


@functools.cache
def redis_cluster() -> str:
    """A 3-master Redis Cluster (no replicas); its store URL."""
    servers = _servers()
    for port in CLUSTER_PORTS:
        servers.redis(port, "--cluster-enabled", "yes", "--cluster-config-file",
                      f"nodes-{port}.conf", "--cluster-node-timeout", "5000")
    _redis_cli("--cluster", "create", *(f"127.0.0.1:{p}" for p in CLUSTER_PORTS),
               "--cluster-replicas", "0", "--cluster-yes")

    def ready() -> bool:
        return all("cluster_state:ok" in _redis_cli("-p", str(p), "cluster", "info")
                   for p in CLUSTER_PORTS)

    wait_until(ready, "the Redis Cluster to agree on its slots")
    return f"redis+cluster://127.0.0.1:{CLUSTER_PORTS[0]}/0"


@functools.cache
def redis_sentinel() -> str:
    """A Redis master, its replica and one Sentinel watching them as ``MASTER_NAME``; the
    Sentinel URL in the form kombu and Celery accept (the master name goes in separately)."""
    servers = _servers()
    at_once = ("--repl-diskless-sync-delay", "0")  # a replica syncs without waiting 5 s
    servers.redis(SENTINEL_MASTER_PORT, *at_once)
    servers.redis(SENTINEL_REPLICA_PORT, *at_once, "--replicaof", "127.0.0.1",
                  str(SENTINEL_MASTER_PORT))
    wait_until(lambda: "master_link_status:up" in _redis_cli(
        "-p", str(SENTINEL_REPLICA_PORT), "info", "replication"), "the replica to sync")
    config = servers.folder / "sentinel.conf"  # Sentinel rewrites its file: it must own one
    config.write_text(f"port {SENTINEL_PORT}\nbind 127.0.0.1\ndir {servers.folder}\n"
                      f"sentinel monitor {MASTER_NAME} 127.0.0.1 {SENTINEL_MASTER_PORT} 1\n")
    servers.start(SENTINEL_PORT, [binary("redis-server", "redis-server"), str(config),
                                  "--sentinel"], "sentinel")
    wait_until(lambda: str(SENTINEL_MASTER_PORT) in _redis_cli(
        "-p", str(SENTINEL_PORT), "sentinel", "get-master-addr-by-name", MASTER_NAME),
        "the Sentinel to know its master")
    return f"sentinel://127.0.0.1:{SENTINEL_PORT}/0"


def sentinel_failover() -> int:
    """Make the Sentinel promote the replica (after one failover: the old master back), and
    once it names the new master, turn the old one into its replica at once (the Sentinel
    would, some 10 s later). Returns the new master's port."""
    ask = ("-p", str(SENTINEL_PORT), "sentinel")

    def master() -> dict[str, str]:
        lines = _redis_cli(*ask, "master", MASTER_NAME).splitlines()
        return dict(zip(lines[::2], lines[1::2], strict=True))

    before = master()["port"]
    _redis_cli(*ask, "failover", MASTER_NAME)
    wait_until(lambda: master()["port"] != before and master()["flags"] == "master",
               "the Sentinel to switch to the promoted replica")
    now = master()["port"]
    _redis_cli("-p", before, "replicaof", "127.0.0.1", now)
    return int(now)


def sentinel_store() -> str:
    """The Sentinel URL as a store URL on its own: the master's name in the query."""
    return f"{redis_sentinel()}?master_name={MASTER_NAME}"


@functools.cache
def pgbouncer() -> str:
    """PgBouncer in transaction pool mode in front of the shared PostgreSQL; its store URL.

    Database ``test`` has a small server pool; ``test_single`` (the same database) has one
    server connection, so what one session left behind (prepared statements) shows."""
    servers = _servers()
    pg = PG_URL.split("@", 1)[1]  # host:port/db
    host_port, db = pg.split("/", 1)
    host, port = host_port.split(":")
    folder = servers.folder / "pgbouncer"
    folder.mkdir()
    config = folder / "pgbouncer.ini"
    server = f"host={host} port={port} dbname={db} user=postgres"
    config.write_text(
        f"[databases]\ntest = {server} pool_size=4\ntest_single = {server} pool_size=1\n"
        f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {PGBOUNCER_PORT}\n"
        f"unix_socket_dir =\nauth_type = any\npool_mode = transaction\n"
        f"max_client_conn = 500\nlogfile = {folder}/pgbouncer.log\n")
    user: list[str] = []
    if os.geteuid() == 0:  # PgBouncer refuses to run as root
        user = ["-u", "nobody"]
        servers.folder.chmod(0o755)
        shutil.chown(folder, "nobody")
    servers.start(PGBOUNCER_PORT, [binary("pgbouncer", "pgbouncer"), *user, str(config)],
                  "pgbouncer")
    return f"postgresql+psycopg://postgres@127.0.0.1:{PGBOUNCER_PORT}/test"


def pgbouncer_single() -> str:
    """The PgBouncer URL of ``test_single``: every client shares one server connection."""
    return pgbouncer().removesuffix("/test") + "/test_single"
