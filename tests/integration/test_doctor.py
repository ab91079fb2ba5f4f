"""``chordguard doctor``: the seed guide's configuration is flagged, a clean one passes, and
each hazard is found where it is and not elsewhere."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from celery import Celery, chord
from celery.exceptions import ChordError

import chordguard
from chordguard.monitor.doctor import config_from_app, lint
from tests.cluster import PG_BACKEND, REDIS_URL, ROOT, chordguard_cli

SEED_CODES = {"ignored_setting", "unlock_max_retries", "unlock_backoff_ignored",
              "backoff_without_autoretry"}


def doctor(app_path: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chordguard", "-A", app_path, "doctor", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)


def codes(app: Celery) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for item in lint(config_from_app(app)):
        found.setdefault(item.code, []).append(item.summary)
    return found


def app_with(backend: str | None = REDIS_URL, broker: str = REDIS_URL, **conf) -> Celery:
    app = Celery("doctor-test", broker=broker, backend=backend)
    app.conf.update({"worker_send_task_events": True, "task_time_limit": 600,
                     "result_expires": 86400, **conf})
    return app


def test_the_seed_guide_configuration_is_flagged():
    run = doctor("tests.doctor_apps:seed", "--json")
    assert run.returncode == 1, run.stderr
    findings = json.loads(run.stdout)["findings"]
    by_code: dict[str, list[dict]] = {}
    for item in findings:
        by_code.setdefault(item["code"], []).append(item)
        assert item["why"] and item["fix"]
    assert set(by_code) >= SEED_CODES
    assert {f["setting"] for f in by_code["ignored_setting"]} == {
        "chord_unlock_max_retries", "chord_unlock_retry_delay"}
    assert "~3 s" in by_code["unlock_max_retries"][0]["summary"]
    assert "retry_jitter" in by_code["unlock_backoff_ignored"][0]["summary"]
    assert by_code["backoff_without_autoretry"][0]["setting"].endswith("collect_results")
    assert "events_disabled" not in by_code  # the guide does turn events on
    text = doctor("tests.doctor_apps:seed")
    assert text.returncode == 1
    assert "unlock_max_retries" in text.stdout and "fix:" in text.stdout


def test_a_clean_configuration_exits_0():
    run = doctor("tests.doctor_apps:clean")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "no chord hazards" in run.stdout
    assert json.loads(doctor("tests.doctor_apps:clean", "--json").stdout)["findings"] == []


@pytest.mark.parametrize(("conf", "code", "needle"), [
    ({"result_backend": "rpc://"}, "rpc_backend_chords", "rpc"),
    ({"result_backend": None}, "no_result_backend", "no result backend"),
    ({"worker_send_task_events": False}, "events_disabled", "off"),
    ({"task_annotations": {"*": {"max_retries": 5}}}, "unlock_max_retries", "~5 s"),
    ({"result_chord_retry_interval": 2.0,
      "task_annotations": [{"celery.chord_unlock": {"max_retries": 10}}]},
     "unlock_max_retries", "~20 s"),
    ({"chordguard_deadline": 7200, "result_expires": 3600},
     "results_expire_before_chord", "chordguard_deadline"),
    ({"result_chord_expires": 60}, "results_expire_before_chord", "result_chord_expires"),
    ({"task_time_limit": None}, "unbounded_chords", "no chordguard deadline"),
    ({"task_time_limit": 7200, "task_acks_late": True}, "visibility_timeout_short", "60.0 min"),
    ({"broker_transport_options": {"visibility_timeout": 300}, "task_acks_late": True},
     "visibility_timeout_short", "5.0 min"),
    ({"task_acks_late": True}, "acks_late_not_run_once", "celery.chord_unlock"),
    ({"CHORD_UNLOCK_MAX_RETRIES": 3}, "ignored_setting", "CHORD_UNLOCK_MAX_RETRIES"),
    ({"task_acks_lat": True}, "ignored_setting", "task_acks_lat"),
])
def test_each_hazard_is_found(conf, code, needle):
    app = app_with(**conf)
    found = codes(app)
    assert code in found, found
    assert any(needle in summary for summary in found[code]), found[code]
    baseline = codes(app_with())
    assert code not in baseline, baseline


def test_visibility_timeout_is_a_hazard_only_for_acks_late_tasks_on_redis():
    app = app_with(broker="amqp://guest:guest@127.0.0.1:5672//", task_time_limit=7200,
                   task_acks_late=True)
    assert "visibility_timeout_short" not in codes(app)
    assert "visibility_timeout_short" not in codes(app_with(task_time_limit=7200))


def test_run_once_callbacks_of_a_guarded_app_are_not_flagged(tmp_path):
    app = app_with(task_acks_late=False,
                   task_annotations={"celery.chord_unlock": {"max_retries": 3}})

    @app.task(name="cb.plain", acks_late=True, shared=False)
    def plain(results):
        return results

    @chordguard.chord_callback(app=app, name="cb.guarded", acks_late=True, shared=False)
    def guarded(successes, failures):
        return successes

    unguarded = codes(app)
    assert "cb.guarded" in unguarded["acks_late_not_run_once"][0]  # run-once needs the guard
    assert "unlock_max_retries" in unguarded
    chordguard.install(app, store=f"sqlite:///{tmp_path / 'store.sqlite'}", deadline=600)
    found = codes(app)
    summary = found["acks_late_not_run_once"][0]
    assert "cb.plain" in summary and "cb.guarded" not in summary
    assert "celery.chord_unlock" not in summary  # acks_late is per task here, not global
    assert "unlock_max_retries" not in found  # the guard's unlock ignores max_retries


def test_django_namespace_settings_are_read(tmp_path, monkeypatch):
    (tmp_path / "djsettings_cg.py").write_text(
        "CELERY_BROKER_URL = 'redis://127.0.0.1:6379/0'\n"
        "CELERY_RESULT_BACKEND = 'rpc://'\n"
        "CELERY_CHORD_UNLOCK_RETRY_DELAY = 1.0\n"
        "CELERY_WORKER_SEND_TASK_EVENTS = True\n"
        "CELERY_TASK_TIME_LIMIT = 60\n"
        "INSTALLED_APPS = []\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    app = Celery("dj")
    app.config_from_object("djsettings_cg", namespace="CELERY")
    found = codes(app)
    assert set(found) == {"ignored_setting", "rpc_backend_chords"}, found
    assert found["ignored_setting"] == ["CELERY_CHORD_UNLOCK_RETRY_DELAY is not a Celery setting"]


def test_the_three_second_trap_it_reports_is_real(make_cluster):
    """The finding's claim, checked on a real worker: a 6 s chord fails under max_retries=3."""
    conf = {"task_annotations": {"celery.chord_unlock": {"max_retries": 3}},
            "worker_send_task_events": True, "task_time_limit": 600}
    cluster = make_cluster(REDIS_URL, PG_BACKEND, conf)
    run = chordguard_cli(cluster, "doctor", "--json")
    assert run.returncode == 1, run.stderr
    trap = [f for f in json.loads(run.stdout)["findings"] if f["code"] == "unlock_max_retries"]
    assert trap and "~3 s" in trap[0]["summary"]
    cluster.start_worker()
    app = cluster.app
    result = chord([app.signature("t.sleep", (6,)), app.signature("t.add", (1, 1))])(
        app.signature("t.collect"))
    with pytest.raises(ChordError):
        result.get(timeout=60)


def test_doctor_warns_when_guarded_workers_use_another_store(make_cluster, tmp_path):
    worker_store = f"sqlite:///{tmp_path}/workers.sqlite"
    cluster = make_cluster(REDIS_URL, REDIS_URL, {"guard": {"store": worker_store}})
    cluster.start_worker()

    def doctor_codes(cli_store: str) -> dict[str, dict]:
        env = cluster.env(CG_CONF=json.dumps({**cluster.conf, "guard": {"store": cli_store}}))
        run = subprocess.run([sys.executable, "-m", "chordguard", "-A", "tests.chordapp",
                              "doctor", "--json"], env=env, cwd=ROOT, capture_output=True,
                             text=True, timeout=60)
        return {f["code"]: f for f in json.loads(run.stdout)["findings"]}

    assert "store_not_shared" not in doctor_codes(worker_store)
    apart = doctor_codes(f"sqlite:///{tmp_path}/elsewhere.sqlite")["store_not_shared"]
    assert apart["severity"] == "warning" and apart["setting"] == "chordguard_store"
    assert f"uses sqlite:///{tmp_path}/workers.sqlite" in apart["summary"]
    assert "elsewhere.sqlite" in apart["summary"] and "CHORDGUARD_STORE" in apart["fix"]
