"""The CLI's contract: exit codes, bad input, masked secrets, options anywhere, celery plugin."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from tests.cluster import AMQP_URL, PG_BACKEND, REDIS_URL, ROOT, chordguard_cli
from tests.private_servers import private_redis


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chordguard", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_usage_error_exits_2():
    assert run("status", "--no-such-option").returncode == 2
    assert run("check", "--max-hours", "-1", "--broker", REDIS_URL).returncode == 2


def test_nan_and_inf_are_refused_as_numbers():
    for value in ("nan", "inf", "NaN"):
        result = run("check", "--max-hours", value, "--broker", REDIS_URL)
        assert result.returncode == 2 and "is not a finite number" in result.stderr, value
    assert run("watch", "--every", "nan", "--broker", REDIS_URL).returncode == 2


def test_a_wrong_app_path_says_what_to_type_instead(tmp_path):
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "tasks.py").write_text(
        f"from celery import Celery\napp = Celery('p', broker={REDIS_URL!r}, "
        f"backend={REDIS_URL!r})\n")

    def load(app_path: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "chordguard", "-A", app_path, "status"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=30)

    for app_path, hint in (("proj/tasks.py", "try -A proj.tasks"),
                           ("proj.tasks:missing", "has no attribute 'missing': try -A proj.tasks"),
                           ("nosuch", "No module named 'nosuch' (run from the directory")):
        result = load(app_path)
        assert result.returncode == 1 and hint in result.stderr, (app_path, result.stderr)
        assert "Traceback" not in result.stderr
    assert load("proj.tasks").returncode == 0


def test_no_app_and_no_broker_is_a_clear_error():
    result = run("status")
    assert result.returncode == 1
    assert "-A/--app" in result.stderr


def test_unreachable_backend_answers_within_seconds_and_masks_the_password():
    started = time.monotonic()
    result = run("status", "--broker", "redis://:hunter2@127.0.0.1:1/0",
                 "--backend", "redis://:hunter2@127.0.0.1:1/0", timeout=30)
    assert time.monotonic() - started < 10
    assert result.returncode == 3  # unknown: the monitor could not see
    assert "hunter2" not in result.stdout + result.stderr
    assert "backend FAILED" in result.stdout and "broker FAILED" in result.stdout
    assert "cannot read backend: redis://:**@127.0.0.1:1/0: Error 111" in result.stdout


def test_unreachable_amqp_broker_answers_within_seconds():
    started = time.monotonic()
    result = run("check", "--broker", "amqp://guest:s3cret@127.0.0.1:1//",
                 "--backend", PG_BACKEND, timeout=30)
    assert time.monotonic() - started < 10
    assert result.returncode == 3 and "unknown" in result.stdout
    assert "s3cret" not in result.stdout + result.stderr


def test_source_timeout_bounds_each_source():
    """Broker and backend stalled: past ``check --source-timeout 2`` the verdict is unknown
    at once and the output says how to wait longer; a 4 s stall within ``--source-timeout
    10`` gets the definite verdict (an empty cluster: healthy)."""
    with private_redis() as stalled:
        with stalled.hung(8):
            started = time.monotonic()
            short = run("check", "--broker", stalled.url, "--backend", stalled.url,
                        "--source-timeout", "2")
            answered = time.monotonic() - started
        assert short.returncode == 3, short.stdout + short.stderr
        assert "did not answer within 2 s" in short.stdout, short.stdout
        assert "--source-timeout" in short.stdout
        assert answered < 7, answered  # the bound, not the stall's end
        with stalled.hung(4):
            long = run("--json", "check", "--broker", stalled.url, "--backend", stalled.url,
                       "--source-timeout", "10")
        assert long.returncode == 0, long.stdout + long.stderr
        assert json.loads(long.stdout)["health"]["status"] == "healthy"


def test_a_look_at_a_stalled_broker_gets_the_time_its_source_gives_it():
    """The look at workers and queues (inspect round and peek) is bounded by what the source
    gives it, so a long queue's peek gets longer with ``--source-timeout``: a broker stalled
    for 9 s is waited out by a look given 14 s; the default gives up after 7 s and names the
    peek (was: 7 s whatever the source timeout, so 100,000 queued chords stayed unknown)."""
    from celery import Celery

    from chordguard.errors import UnreachableError
    from chordguard.monitor.sources.holdings import OBSERVE_TIMEOUT, Holdings

    with private_redis() as stalled:
        app = Celery("stalled-look", broker=stalled.url, backend=REDIS_URL)
        with stalled.hung(9):
            started = time.monotonic()
            with pytest.raises(UnreachableError,
                               match=f"peek did not answer within {OBSERVE_TIMEOUT:.0f} s"):
                Holdings(app, 6.0).first()
            assert time.monotonic() - started < 8.5
        with stalled.hung(9):
            started = time.monotonic()
            [look] = Holdings(app, 14.0).first()
            assert time.monotonic() - started >= 8.5
        assert look.view is not None and look.view.transport == "redis"
        assert "celery" in look.view.queues and look.view.messages == []


def test_what_the_monitor_cannot_read_is_unknown_never_healthy():
    """Nothing listening, a backend no source reads, a URL that is not one: exit 3 with a
    reason, and health_check says the same."""
    from celery import Celery

    from chordguard import health_check

    for args in (("--broker", "amqp://guest:guest@127.0.0.1:5699//"),
                 ("--broker", REDIS_URL, "--backend", "zzz://x"),
                 ("--broker", "garbage://:::")):
        result = run("check", *args)
        assert result.returncode == 3, (args, result.stdout, result.stderr)
        assert "unknown" in result.stdout and "healthy" not in result.stdout.replace(
            "unhealthy", ""), args
        as_json = json.loads(run("check", "--json", *args).stdout)
        assert as_json["health"]["status"] == "unknown" and as_json["health"]["reason"]
    health = health_check(Celery("blind", broker=REDIS_URL, backend="redis://127.0.0.1:1/0"))
    assert health["status"] == "unknown" and health["sources_failed"] == ["backend"]
    assert health["reason"].startswith("cannot read backend: redis://127.0.0.1:1/0: ")


def test_unknown_chord_id_is_a_clear_error(make_cluster):
    cluster = make_cluster(REDIS_URL, REDIS_URL)
    result = chordguard_cli(cluster, "inspect", "no-such-chord")
    assert result.returncode == 1
    assert "unknown chord" in result.stderr and "no-such-chord" in result.stderr


def test_options_anywhere_and_json_schema(make_cluster):
    cluster = make_cluster(REDIS_URL, REDIS_URL)
    before = chordguard_cli(cluster, "--json", "status")
    after = chordguard_cli(cluster, "status", "--json")
    for result in (before, after):
        assert result.returncode == 0, result.stderr
        document = json.loads(result.stdout)
        assert document["schema"] == "chordguard.status/1"
        assert document["health"]["status"] == "healthy"
        assert document["chords"] == []


def test_celery_plugin_runs_the_same_command(make_cluster):
    cluster = make_cluster(AMQP_URL, PG_BACKEND)
    result = subprocess.run([sys.executable, "-m", "celery", "-A", "tests.chordapp",
                             "chordguard", "status", "--json"], env=cluster.env(), cwd=ROOT,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["schema"] == "chordguard.status/1"


def test_a_misspelt_or_refusing_place_is_named_with_why():
    """Each says which place and why, masked, in text and in --json (``sources_failed``)."""
    cases = [
        (("--broker", "reddis://127.0.0.1:6379/5", "--backend", REDIS_URL),
         "broker", "cannot read broker: reddis://127.0.0.1:6379/5: 'No such transport: reddis"),
        (("--broker", "amqp://guest:wr0ng@127.0.0.1:5672//", "--backend", PG_BACKEND),
         "broker", "cannot read broker: amqp://guest:**@127.0.0.1:5672//: (0, 0): (403) "
         "ACCESS_REFUSED"),
        (("--broker", REDIS_URL, "--backend", "reddis://127.0.0.1:6379/5"),
         "backend", "cannot read backend: reddis://127.0.0.1:6379/5: unknown result backend "
         "scheme 'reddis'"),
    ]
    for args, place, reason in cases:
        started = time.monotonic()
        text, as_json = run("check", *args), run("check", "--json", *args)
        assert time.monotonic() - started < 20, args
        assert text.returncode == as_json.returncode == 3, (args, text.stdout, text.stderr)
        assert reason in text.stdout and "wr0ng" not in text.stdout + as_json.stdout, text.stdout
        health = json.loads(as_json.stdout)["health"]
        assert health["sources_failed"] == [place] and health["reason"].startswith(reason)
        verbose = run("status", "-v", *args)
        assert verbose.returncode == 3 and reason in verbose.stdout, verbose.stdout


def test_acting_commands_never_clear_a_blind_view():
    """fix, bulk revoke and clean on a view that could not see: exit 3 saying what, never
    "no stuck chords"; inspect does not vouch for a chord either."""
    down = ("--broker", "redis://127.0.0.1:1/0", "--backend", PG_BACKEND)
    unread = ("--broker", REDIS_URL, "--backend", "rpc://")
    for args, why in ((down, "cannot read broker: redis://127.0.0.1:1/0: Error 111"),
                      (unread, "no source reads the chords of this app's result backend "
                               "(RPCBackend does not support chords)")):
        for command in (["fix", "--yes"], ["revoke", "--max-hours", "0", "--force"],
                        ["clean", "--force"], ["inspect", "some-chord-id"]):
            result = run(*command, *args)
            out = result.stdout + result.stderr
            assert result.returncode == 3, (command, args, out)
            assert why in out and "no stuck chords" not in out, (command, out)
    as_json = json.loads(run("fix", "--yes", "--json", *down).stdout)
    assert as_json["unseen"].startswith("cannot read broker: ")
