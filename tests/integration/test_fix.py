"""``chordguard fix`` through a real terminal (pexpect) against a real cluster whose Redis
chords lost their counters: it asks, fails what it is told to, leaves the rest, fails very
stuck chords without asking, changes nothing on --dry-run and exits 130 on Ctrl-C."""

from __future__ import annotations

import json
import signal
import sys

import pexpect
import pytest
import redis
from celery import chord
from celery.exceptions import ChordError

from tests.cluster import PG_BACKEND, REDIS_URL, ROOT, chordguard_cli, lost_counter_chord, wait_for


@pytest.fixture
def cluster(make_cluster):
    """A Redis-backend cluster with one worker (cleaned up by make_cluster)."""
    made = make_cluster(REDIS_URL, REDIS_URL)
    made.start_worker()
    return made


def spawn_fix(cluster, *args: str) -> pexpect.spawn:
    return pexpect.spawn(sys.executable, ["-m", "chordguard", "-A", "tests.chordapp", "fix",
                                          *args], env=cluster.env(), cwd=str(ROOT),
                         encoding="utf-8", timeout=60, dimensions=(60, 220),
                         preexec_fn=terminal_signals)


def terminal_signals() -> None:
    """Ctrl-C as at a terminal, even when the suite runs as a background job (which starts
    its children with SIGINT ignored)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def stuck_ids(cluster, *args: str) -> set[str]:
    run = chordguard_cli(cluster, "check", "--json", *args)
    return {c["id"] for c in json.loads(run.stdout)["chords"]}


def test_fix_asks_fails_what_it_is_told_and_recommends(cluster):
    first, second = lost_counter_chord(cluster), lost_counter_chord(cluster)
    assert {first, second} <= stuck_ids(cluster)

    child = spawn_fix(cluster)
    child.expect("In-flight chords")
    child.expect(r"Fail chord (\S+)\?")
    answered_yes = child.match.group(1)
    child.sendline("y")
    child.expect(f"failed.*{answered_yes}")
    child.expect(r"Fail chord (\S+)\?")
    answered_no = child.match.group(1)
    child.sendline("n")
    child.expect("Recommendations")
    child.expect("counter_lost: ")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1  # one stuck chord left
    assert {answered_yes, answered_no} == {first, second}
    client = redis.Redis.from_url(REDIS_URL)
    prefix = cluster.group_key("")
    assert client.get(prefix + answered_yes + ".c") == b"done"  # disarmed for good
    assert client.exists(prefix + answered_no + ".j")  # untouched
    left = stuck_ids(cluster)
    assert answered_no in left and answered_yes not in left

    dry = spawn_fix(cluster, "--dry-run", "--yes")
    dry.expect(f"would fail.*{answered_no}")
    dry.expect(pexpect.EOF)
    dry.close()
    assert dry.exitstatus == 1 and "Fail chord" not in dry.before
    assert answered_no in stuck_ids(cluster)

    interrupted = spawn_fix(cluster)
    interrupted.expect(r"Fail chord (\S+)\?")
    interrupted.sendintr()
    interrupted.expect(pexpect.EOF)
    interrupted.close()
    assert interrupted.exitstatus == 130
    assert answered_no in stuck_ids(cluster)

    auto = spawn_fix(cluster, "--stuck-after", "0s", "--auto-fail-after", "0s")
    auto.expect(f"auto.*{answered_no}")
    auto.expect(f"failed.*{answered_no}")
    auto.expect(pexpect.EOF)
    auto.close()
    assert "Fail chord" not in auto.before
    assert client.get(prefix + answered_no + ".c") == b"done"
    assert answered_no not in stuck_ids(cluster)


def test_without_a_terminal_fix_only_lists_and_json_reports(cluster):
    gid = lost_counter_chord(cluster)
    run = chordguard_cli(cluster, "fix")  # stdin is not a terminal: nothing is asked
    assert run.returncode == 1
    assert "left as it is" in run.stdout and "Fail chord" not in run.stdout
    assert gid in stuck_ids(cluster)
    run = chordguard_cli(cluster, "fix", "--yes", "--json")
    doc = json.loads(run.stdout)
    assert run.returncode == 0, doc
    assert [p["chord_id"] for p in doc["failed"]] == [gid] and doc["left"] == []
    assert any(r.startswith("counter_lost") for r in doc["recommendations"])
    assert gid not in stuck_ids(cluster)


def test_fix_fails_a_polled_chord_so_its_callback_ends_failure(make_cluster):
    """A chord_unlock chord waiting on a header nobody will run: failing it marks the
    callback FAILURE with a ChordError (waiters stop waiting) and stops the polling."""
    cluster = make_cluster(REDIS_URL, PG_BACKEND)
    cluster.start_worker()
    app = cluster.app
    result = chord([app.signature("t.add", (1, 1), queue=f"nobody-{cluster.namespace}"),
                    app.signature("t.add", (2, 2))])(app.signature("t.collect"))
    gid = result.parent.id
    wait_for(lambda: gid in stuck_ids(cluster, "--max-hours", "0"), what="the polled chord")

    child = spawn_fix(cluster, "--stuck-after", "0s")
    child.expect(f"Fail chord {gid}\\?")
    child.sendline("y")
    child.expect(f"failed.*{gid}")
    child.expect("mark callback t.collect")
    child.expect(pexpect.EOF)
    child.close()
    callback = app.AsyncResult(result.id)  # the callback alone, not its revoked header
    with pytest.raises(ChordError, match="chordguard fix"):
        callback.get(timeout=10)
    assert callback.state == "FAILURE"
    wait_for(lambda: gid not in stuck_ids(cluster, "--max-hours", "0"), timeout=15,
             what="the chord gone from check")
