"""Celery's own canvas suite as chordguard's acceptance test (issue 8).

Fetches the sdist of the installed Celery from the package index, runs its
``t/integration/test_canvas.py -k chord`` once plain and once guarded on each result backend
(Redis; PostgreSQL through ``db+``, the chord_unlock path; with ``--backend django``,
django-celery-results' ``django-db`` on PostgreSQL, its ``ChordCounter`` join), and prints the
tests that pass plain and fail guarded — the goal is none — with a table of outcomes. Exit
status: 0 when that diff is empty, 1 when it is not, 2 when the harness itself could not run.
``--mode store`` adds a third run: guarded with ``fan_in="store"``, its store on the backend's
own server (docs/fan-in.md); ``CG_ACCEPT_REDIS`` and ``CG_ACCEPT_TAG`` move the harness's Redis
and name its vhosts and databases (to run beside another checkout's runs).

Everything runs in a virtualenv of its own (``.cache/acceptance-venv-<digest>``, one per
invoking interpreter) that sees every package the invoking interpreter sees (a ``.pth`` adds
its site directories: a venv's own, not only its base's), so the Celery and kombu the user runs
are the ones tested, while what Celery's suite needs beyond them (pytest-subtests where the
suite imports it, pytest-rerunfailures for its ``@flaky`` reruns) is installed there only;
chordguard is this checkout's (installed editable into the venv when the one seen is another
checkout's, e.g. in a second worktree). Each run gets its own broker vhost (or Redis db),
result backend db and guard store; runs go one after the other. See
scripts/celery_acceptance_plugin.py for how the guard is installed into Celery's test app and
worker.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / ".cache"
WORK = CACHE / "celery-acceptance"
SUITE = "t/integration/test_canvas.py"
REDIS = os.environ.get("CG_ACCEPT_REDIS", "redis://127.0.0.1:6379")  # Celery's helpers: db 0
PG = "postgresql://postgres@127.0.0.1:5432"
# Redis dbs of this harness (the project's own tests use 0 and 1; Celery's suite reads and
# writes its helper keys in db 0, which cannot be changed from outside).
REDIS_DB = {"plain": 8, "guarded": 9, "store": 12}
BROKER_REDIS_DB = {"plain": 10, "guarded": 11, "store": 13}
MODES = ("plain", "guarded", "store")
TAG = os.environ.get("CG_ACCEPT_TAG", "cg_accept")  # names this run's vhosts and databases
# Keys Celery's t/integration helpers (redis_echo, redis_count, ...) write in Redis db 0; a
# leftover message from the run before would fail the next run's "no more messages" checks.
CELERY_HELPER_KEYS = ("redis-echo", "redis-count", "redis-group-ids", "echo_body",
                      "echo_errback", "echo_body_errback", "echo_chamber",
                      "echo_header_errback", "echo_link_b")
# What Celery's t/integration needs beyond celery itself: import name -> requirement. Those
# marked None are installed only when the suite imports them.
REQUIREMENTS = {"pytest": "pytest>=8", "pytest_timeout": "pytest-timeout", "pydantic": "pydantic",
                "redis": "redis", "psycopg": "psycopg[binary]", "sqlalchemy": "sqlalchemy",
                "pytest_rerunfailures": "pytest-rerunfailures"}  # @flaky reruns, as Celery's CI
SUITE_IMPORTS = {"pytest_subtests": "pytest-subtests"}
DJANGO_REQUIREMENTS = {"django": "django", "django_celery_results": "django-celery-results>=2.6.0"}
DJANGO_SETTINGS = "celery_acceptance_settings"  # scripts/celery_acceptance_settings.py

# The CI subset: every body shape of issue 8 at least once, on each Celery version. Per shape,
# the ids of this version's suite among the first list; when none exists there (an older
# Celery), those among the second.
SUBSET: dict[str, tuple[list[str], list[str]]] = {
    "single-task body": ([
        "test_chord::test_chord_order",
        "test_chord::test_single_task_header",
        "test_chord::test_parent_ids__plain_task_body",
        "test_chord::test_empty_header_chord",
    ], []),
    "chain body": ([
        "test_chain::test_chord_with_chain_body_with_task_id",
        "test_chord::test_chord_in_chain_with_args",
    ], []),
    "group body": ([
        "test_chord::test_group_body_does_not_take_the_header_id",
        "test_chord::test_link_option_on_group_body_runs_once",
    ], ["test_chord::test_error_propagates_to_chord_from_group"]),
    "chord body, nested chords": ([
        "test_chord::test_nested_chord",
        "test_chord::test_nested_chord_group",
        "test_group::test_nested_group_chord_counting_chord",
        "test_chord::test_chain_of_implicit_chords_as_body[True-True]",
    ], []),
    "chain ending in a group": ([
        "test_chain::test_chain_of_a_chord_and_a_group_with_two_tasks",
        "test_chord::test_nested_chord_group_chain_group_tail",
        "test_chain::test_header_failure_fails_the_chords_after_a_group_body",
    ], []),
    "link / link_error on the body and its members": ([
        "test_chord::test_link_option_runs_after_the_body",
        "test_chord::test_link_option_on_chain_ending_in_chord",
        "test_chord::test_link_error_option_runs_on_body_failure",
        "test_chord::test_link_error_option_runs_on_header_failure[group]",
        "test_chord::test_link_error_option_keeps_errbacks_of_group_body_tasks",
        "test_chord::test_errbacks_of_group_body_tasks_run_on_header_failure[option]",
        "test_chord::test_errbacks_of_chord_in_group_body_run_on_header_failure[method]",
    ], [
        "test_chord::test_mutable_errback_called_by_chord_from_group_fail_multiple_on_header_failure",
        "test_chord::test_disabling_flag_allow_error_cb_on_chord_header",
    ]),
    "errback of a chord in a chord's header (issue 20)": ([
        "test_chord::test_nested_chord_header_link_error",
    ], ["test_chord::test_flag_allow_error_cb_on_chord_header_on_upgraded_chord"]),
    "immutable / mutable errbacks": ([
        "test_chord::test_immutable_errback_called_by_chord_from_simple",
        "test_chord::test_immutable_errback_called_by_chord_from_group",
        "test_chord::test_mutable_errback_called_by_chord_from_chain_tail[errback_new_style]",
    ], []),
    "replace()": ([
        "test_chord::test_replaced_nested_chord",
        "test_chord::test_chord_body_task_replaced_with_chain",
        "test_chord::test_chord_header_child_replaced_with_chain_middle",
    ], []),
    "lazy (generator) header": ([
        "test_chord::test_generator[3]",  # [3..9]: header sizes; each one sleeps its size in s
        "test_chord::test_generator[5]",
    ], []),
    "error propagation per body type": ([
        "test_chord::test_chord_error_propagation_with_different_body_types",
    ], ["test_chord::test_error_propagates_to_chord_from_chain_tail",
        "test_chord::test_error_propagates_from_chord2"]),
    "unlock with a failed nested chain member (celery#9674)": ([
        "test_chord::test_chord_unlock_with_failed_task_in_nested_chain_member",
    ], ["test_chord::test_chain_chord_chain_chord"]),
}

PASSED = {"passed", "xfailed", "skipped"}


@dataclass
class Run:
    backend: str
    mode: str
    seconds: float = 0.0
    waited: float = 0.0  # of ``seconds``: the guarded run waiting for open chords to end
    exit_code: int | None = None
    outcomes: dict[str, str] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    flips: list[dict] = field(default_factory=list)
    reruns: list[dict] = field(default_factory=list)  # errback/body runs again after the test
    dead_letters: list[dict] = field(default_factory=list)
    guard_check: dict | None = None
    log: Path | None = None
    source: str = ""

    def count(self, *outcomes: str) -> int:
        return sum(1 for o in self.outcomes.values() if o in outcomes)

    def failing(self) -> set[str]:
        bad = {t for t, o in self.outcomes.items() if o in ("failed", "error", "xpassed")}
        return bad | {f["test"] for f in self.flips + self.reruns if f.get("test")}


def log(message: str) -> None:
    print(f"[celery-acceptance {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sh(*cmd: str, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=check, text=True, capture_output=True, **kwargs)


def celery_version() -> str:
    import celery

    return celery.__version__


def ensure_venv() -> Path:
    """The harness's venv for this interpreter: it sees what this interpreter sees, first its
    own packages (what the suite needs and this one lacks)."""
    import hashlib
    import site
    import sysconfig

    venv = CACHE / f"acceptance-venv-{hashlib.sha1(sys.prefix.encode()).hexdigest()[:8]}"
    python = venv / "bin" / "python"
    if not python.exists():
        log(f"creating {venv} for {sys.prefix}")
        sh(sys.executable, "-m", "venv", str(venv))
    own = sh(str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"
             ).stdout.strip()
    user = [site.getusersitepackages()] if site.ENABLE_USER_SITE else []
    seen = [p for p in [*site.getsitepackages(), sysconfig.get_path("purelib"), *user]
            if Path(p).is_dir()]
    # An ``import`` line, so that the .pth files there (editable installs) are read too.
    Path(own, "_celery_acceptance_invoker.pth").write_text(
        f"import site; list(map(site.addsitedir, {list(dict.fromkeys(seen))!r}))\n")
    install_missing(python, REQUIREMENTS)
    probe = _probe(python)
    if not _ours(probe[1]):  # another checkout's
        log(f"the venv sees chordguard from {probe[1]}; installing {ROOT} into the venv only")
        sh(str(python), "-m", "pip", "install", "-q", "--no-deps", "-e", str(ROOT))
        probe = _probe(python)
        if not _ours(probe[1]):
            raise SystemExit(f"the venv sees chordguard from {probe[1]}, not from {ROOT}")
    if probe[0] != celery_version():
        raise SystemExit(f"the venv sees celery {probe[0]}, not {celery_version()}")
    log(f"venv: celery {probe[0]}, chordguard from {probe[1]}")
    return python


def install_missing(python: Path, requirements: dict[str, str]) -> None:
    """Install into the venv only the ``requirements`` (import name -> requirement) that it
    cannot import."""
    missing = [req for mod, req in requirements.items()
               if sh(str(python), "-c", f"import {mod}", check=False).returncode]
    if missing:
        log(f"installing into the venv only: {' '.join(missing)}")
        sh(str(python), "-m", "pip", "install", "-q", *missing)


def suite_requirements(python: Path, suite: Path) -> None:
    """Install what this version's ``t/integration`` imports beyond ``REQUIREMENTS``
    (pytest-subtests up to 5.5)."""
    import re

    text = "\n".join(p.read_text() for p in (suite / "t" / "integration").glob("*.py"))
    imported = set(re.findall(r"^\s*(?:import|from)\s+(\w+)", text, re.M))
    install_missing(python, {m: r for m, r in SUITE_IMPORTS.items() if m in imported})


def subset(python: Path, suite: Path, per_shape: int = 0) -> list[str]:
    """The CI subset's ids that exist in this version's suite (``SUBSET``), at most
    ``per_shape`` of each shape (0: all); raises SystemExit when a body shape has none."""
    collected = sh(str(python), "-m", "pytest", "-c", str(suite / "pyproject.toml"),
                   "--rootdir", str(suite), "-p", "no:cacheprovider", "--collect-only", "-q",
                   SUITE, cwd=suite, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
                   check=False).stdout.split()
    exists = {line.removeprefix(f"{SUITE}::") for line in collected}
    exists |= {t.split("[")[0] for t in exists}  # a parametrized test: all its parameters
    chosen = []
    for shape, (first, then) in SUBSET.items():
        ids = [t for t in first if t in exists] or [t for t in then if t in exists]
        if not ids:
            raise SystemExit(f"no test of this Celery's suite covers the {shape} shape")
        chosen += ids[:per_shape] if per_shape else ids
    return chosen


def _probe(python: Path) -> list[str]:
    """The Celery version and the chordguard file the venv imports."""
    return sh(str(python), "-c", "import celery, chordguard; print(celery.__version__, "
              "chordguard.__file__)").stdout.split()


def _ours(module_file: str) -> bool:
    return Path(module_file).resolve().is_relative_to(ROOT / "src")


def ensure_suite(python: Path, version: str) -> Path:
    """Celery's test tree for ``version``, from its sdist on the package index (cached)."""
    target = WORK / f"celery-{version}"
    if (target / SUITE).exists():
        return target
    sdists = WORK / "sdist"
    sdists.mkdir(parents=True, exist_ok=True)
    archive = sdists / f"celery-{version}.tar.gz"
    if not archive.exists():
        log(f"downloading the celery {version} sdist from the package index")
        sh(str(python), "-m", "pip", "download", f"celery=={version}", "--no-binary", ":all:",
           "--no-deps", "-d", str(sdists))
    staging = WORK / f".unpack-{version}"
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(archive) as tar:
        prefix = f"celery-{version}/"
        # Only the tests and the pytest configuration: the sdist's own ``celery/`` package must
        # not shadow the installed one that chordguard is guarding.
        members = [m for m in tar.getmembers()
                   if m.name.startswith((prefix + "t/", prefix + "pyproject.toml"))]
        tar.extractall(staging, members=members, filter="data")
    shutil.rmtree(target, ignore_errors=True)
    (staging / f"celery-{version}").rename(target)
    shutil.rmtree(staging, ignore_errors=True)
    return target


def redis_flush(db: int) -> None:
    import redis

    redis.Redis.from_url(f"{REDIS}/{db}").flushdb()


def pg_recreate(name: str) -> None:
    for sql in (f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', f'CREATE DATABASE "{name}"'):
        sh("psql", "-U", "postgres", "-h", "127.0.0.1", "-d", "postgres", "-qc", sql)


def amqp_vhost(name: str, create: bool) -> None:
    sh("rabbitmqctl", "-q", "delete_vhost", name, check=False)
    if create:
        sh("rabbitmqctl", "-q", "add_vhost", name)
        sh("rabbitmqctl", "-q", "set_permissions", "-p", name, "guest", ".*", ".*", ".*")


def prepare(backend: str, mode: str, broker: str, rundir: Path,
            redis_db: int | None = None) -> dict[str, str]:
    """Fresh broker, result backend and guard store for one run; their URLs as env vars."""
    import redis

    redis.Redis.from_url(f"{REDIS}/0").delete(*CELERY_HELPER_KEYS)
    tag = f"{TAG}_{backend}_{mode}"
    if broker == "amqp":
        amqp_vhost(tag, create=True)
        broker_url = f"pyamqp://guest:guest@127.0.0.1:5672/{tag}"
    else:
        redis_flush(BROKER_REDIS_DB[mode])
        broker_url = f"{REDIS}/{BROKER_REDIS_DB[mode]}"
    env = {}
    if backend == "redis":
        if redis_db is None:  # else a shared db: never flushed
            redis_flush(REDIS_DB[mode])
        server = backend_url = f"{REDIS}/{REDIS_DB[mode] if redis_db is None else redis_db}"
    else:
        pg_recreate(tag)
        server = f"{PG.replace('postgresql:', 'postgresql+psycopg:')}/{tag}"
        backend_url = f"db+{server}"
    if backend == "django":  # django-db on the same database (its settings module reads it)
        backend_url = "django-db"
        env = {"DJANGO_SETTINGS_MODULE": DJANGO_SETTINGS, "CG_ACCEPT_DJANGO_DB": tag}
    store = rundir / "store.sqlite"
    store.unlink(missing_ok=True)
    # --mode store: the barrier in the backend's own server, Redis or PostgreSQL
    store_url = server if mode == "store" else f"sqlite:///{store}"
    return {"TEST_BROKER": broker_url, "TEST_BACKEND": backend_url, "CG_ACCEPT_STORE": store_url,
            **env}


def django_migrate(python: Path, env: dict[str, str]) -> None:
    """django-celery-results' tables in the run's database (``env``: the run's)."""
    done = sh(str(python), "-c", "import django; django.setup(); from django.core.management "
              "import call_command; call_command('migrate', verbosity=0)", env=env, check=False)
    if done.returncode:
        raise SystemExit(f"migrate failed in {env['CG_ACCEPT_DJANGO_DB']}:\n{done.stderr}")


def cleanup(backend: str, mode: str, broker: str) -> None:
    tag = f"{TAG}_{backend}_{mode}"
    if broker == "amqp":
        amqp_vhost(tag, create=False)


def read_report(run: Run, path: Path) -> None:
    if not path.exists():
        return
    rank = {"passed": 0, "skipped": 0, "xfailed": 0, "xpassed": 1, "failed": 2, "error": 3}
    for line in path.read_text().splitlines():
        item = json.loads(line)
        kind = item.get("kind")
        if kind == "test":
            test = item["test"].replace(f"{SUITE}::", "")
            outcome = "error" if item["when"] != "call" and item["outcome"] == "failed" \
                else item["outcome"]
            if rank.get(outcome, 0) >= rank.get(run.outcomes.get(test, "passed"), 0):
                run.outcomes[test] = outcome
                if item.get("message"):
                    run.messages[test] = item["message"]
        elif kind in ("flip", "rerun"):
            item["test"] = (item.get("test") or "").replace(f"{SUITE}::", "")
            (run.flips if kind == "flip" else run.reruns).append(item)
        elif kind == "dead_letter":
            item["test"] = (item.get("test") or "").replace(f"{SUITE}::", "")
            run.dead_letters.append(item)
        elif kind == "guard_check":
            run.guard_check = item
        elif kind == "reaper_wait":
            run.waited = float(item.get("seconds") or 0.0)


def source_state() -> str:
    """The commit and a digest of uncommitted changes under src/ (read-only git commands)."""
    import hashlib

    try:
        head = sh("git", "-C", str(ROOT), "log", "-1", "--format=%h").stdout.strip()
        diff = sh("git", "-C", str(ROOT), "diff", "HEAD", "--", "src").stdout
        untracked = sh("git", "-C", str(ROOT), "ls-files", "--others", "--exclude-standard",
                       "src").stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return "?"
    for path in untracked:
        diff += path + (ROOT / path).read_text(errors="replace")
    if not diff:
        return head
    return f"{head}+{hashlib.sha1(diff.encode()).hexdigest()[:8]} (uncommitted src changes)"


def run_suite(python: Path, suite: Path, backend: str, mode: str, args) -> Run:
    rundir = WORK / "runs" / f"{backend}-{mode}"
    shutil.rmtree(rundir, ignore_errors=True)
    rundir.mkdir(parents=True)
    env = dict(os.environ)
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the django backend's own, from prepare
    env.update(prepare(backend, mode, args.broker, rundir, args.redis_db))
    report = rundir / "report.jsonl"
    env.update({
        "CG_ACCEPT_MODE": mode, "CG_ACCEPT_REPORT": str(report),
        "CG_ACCEPT_DEADLINE": str(args.deadline),
        "CG_ACCEPT_REAPER_INTERVAL": str(args.reaper_interval),
        "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(REDIS.rsplit(":", 1)[1]),
        "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT / "scripts"),
                                                  env.get("PYTHONPATH")) if p),
        "PYTHONDONTWRITEBYTECODE": "1",
    })
    if backend == "django":
        django_migrate(python, env)
    targets = [f"{SUITE}::{t}" for t in args.tests] if args.tests else [SUITE]
    cmd = [str(python), "-m", "pytest", "-c", str(suite / "pyproject.toml"),
           "--rootdir", str(suite), "-p", "celery.contrib.pytest",
           "-p", "celery_acceptance_plugin", "-p", "no:cacheprovider",
           "-o", f"timeout={args.timeout}", "-rfE", "--tb=short", *targets]
    if args.k:
        cmd += ["-k", args.k]
    cmd += args.pytest_args
    run = Run(backend, mode, log=rundir / "pytest.log", source=source_state())
    log(f"{backend} {mode}: {env['TEST_BROKER']} -> {env['TEST_BACKEND']}; source {run.source}; "
        f"log {run.log}")
    started = time.monotonic()
    with open(run.log, "w") as out:
        out.write(" ".join(cmd) + "\n")
        out.flush()
        proc = subprocess.run(cmd, cwd=suite, env=env, stdout=out, stderr=subprocess.STDOUT)
    run.seconds = time.monotonic() - started
    run.exit_code = proc.returncode
    cleanup(backend, mode, args.broker)
    read_report(run, report)
    log(f"{backend} {mode}: {run.count('passed')} passed, {run.count('failed')} failed, "
        f"{run.count('error')} errors in {run.seconds:.0f} s, of which {run.waited:.0f} s "
        f"waiting for open chords to end (pytest exit {proc.returncode})")
    if mode != "plain" and not (run.guard_check and run.guard_check.get("ok")):
        raise SystemExit(f"the guard was not verified in the {backend} run: "
                         f"{run.guard_check or 'no check reported'}; see {run.log}")
    if not run.outcomes:
        raise SystemExit(f"no test outcome from the {backend} {mode} run; see {run.log}")
    return run


def summarize(runs: list[Run], version: str, args) -> tuple[str, int]:
    lines = [f"Celery {version} {SUITE} -k {args.k!r}"
             + (f" (subset of {len(args.tests)} ids)" if args.tests else ""), "",
             "| backend | mode | passed | failed | errors | skipped/xfail | time | of which "
             "waiting for open chords | source |",
             "|---|---|---|---|---|---|---|---|---|"]
    for run in runs:
        lines.append(f"| {run.backend} | {run.mode} | {run.count('passed')} | "
                     f"{run.count('failed', 'xpassed')} | {run.count('error')} | "
                     f"{run.count('skipped', 'xfailed')} | {run.seconds:.0f} s | "
                     f"{run.waited:.0f} s | {run.source} |")
    regressions = 0
    by_backend: dict[str, dict[str, Run]] = {}
    for run in runs:
        by_backend.setdefault(run.backend, {})[run.mode] = run
    lines += ["", "Pass plain, fail guarded or store (the goal: none):"]
    for (backend, pair), mode in ((b, m) for b in by_backend.items() for m in MODES[1:]):
        plain, guarded = pair.get("plain"), pair.get(mode)
        if not (plain and guarded):
            continue
        ok_plain = {t for t, o in plain.outcomes.items() if o in PASSED}
        diff = sorted(ok_plain & guarded.failing())
        regressions += len(diff)
        for test in diff:
            why = guarded.messages.get(test, "")
            flips = [f for f in guarded.flips if f.get("test") == test]
            if flips:
                why = (f"passed, then {len(flips)} chord(s) changed by the guard after the "
                       f"deadline: {flips[0]['flipped']} journal {flips[0]['journal']}; " + why)
            reruns = [r for r in guarded.reruns if r.get("test") == test]
            if reruns:
                why = (f"passed, then ran again after the test ([during, after]): "
                       f"{reruns[0]['runs']} journal {reruns[0]['journal']}; " + why)
            lines.append(f"- {backend} {mode}: {test} [{guarded.outcomes.get(test, 'passed')}] "
                         f"{why}")
        only_guarded = sorted((plain.failing() - guarded.failing()) & set(guarded.outcomes))
        for test in only_guarded:
            lines.append(f"  ({backend}: {test} fails plain only, not {mode}: "
                         f"{plain.messages.get(test)})")
    if not regressions:
        lines.append("- none")
    lines += ["", "Failing in every mode that ran (Celery's own or the environment's):"]
    for backend, pair in by_backend.items():
        both = sorted(set.intersection(*(r.failing() for r in pair.values())))
        first = next(iter(pair.values()))  # a one-mode run has no plain run to quote
        lines += [f"- {backend}: {t}: {first.messages.get(t, '')}" for t in both]
    for run in runs:
        if not run.dead_letters:
            continue
        codes: dict[str, int] = {}
        for letter in run.dead_letters:
            code = letter["reason"].split(":")[0]
            codes[code] = codes.get(code, 0) + 1
        lines.append(f"\nDead letters in the {run.backend} {run.mode} run: "
                     + ", ".join(f"{n} {c}" for c, n in sorted(codes.items())))
        later = [d for d in run.dead_letters if d.get("after_test")]
        if later:
            lines.append("Ended by the reaper after their test had finished (the test could "
                         "not see it; plain Celery leaves these chords as they were):")
            lines += [f"- {d['test'] or '?'}: {d['callback']}: {d['reason']}" for d in later]
    return "\n".join(lines), regressions


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="celery-acceptance", description=__doc__.split("\n")[0])
    parser.add_argument("--backend", action="append", choices=["redis", "postgres", "django"],
                        help="result backend(s); default redis and postgres; django: "
                             "django-celery-results' django-db on PostgreSQL")
    parser.add_argument("--mode", action="append", choices=["plain", "guarded", "store"],
                        help="default plain and guarded; store: guarded with fan_in='store' "
                             "(the store on the result backend's server)")
    parser.add_argument("--broker", choices=["amqp", "redis"], default="amqp",
                        help="RabbitMQ (a fresh vhost per run, the default) or Redis")
    parser.add_argument("--redis-db", type=int,
                        help="Redis result backend db for both modes, not flushed (default: "
                             "8 plain, 9 guarded, flushed; test_chord_on_error reads the chord's "
                             "keys from db 0 and passes only with --redis-db 0)")
    parser.add_argument("--subset", action="store_true", help="the CI subset (every body shape)")
    parser.add_argument("--per-shape", type=int, default=0, metavar="N",
                        help="with --subset: at most N tests of each body shape (default all)")
    parser.add_argument("--test", dest="tests", action="append", default=[],
                        help="a test id inside test_canvas.py (repeatable), e.g. "
                             "'test_chord::test_generator'")
    parser.add_argument("-k", default="chord", help="pytest -k expression (default: chord)")
    parser.add_argument("--deadline", type=float,
                        help="guard deadline in seconds, short so that the reaper acts during "
                             "the run (default 60; 30 with --subset)")
    parser.add_argument("--reaper-interval", type=float, default=5.0)
    parser.add_argument("--timeout", type=int, default=300, help="pytest-timeout per test")
    parser.add_argument("--json", type=Path, help="also write the outcomes here")
    parser.add_argument("pytest_args", nargs="*", help="after --: extra pytest arguments")
    args = parser.parse_args(argv)
    if args.deadline is None:
        args.deadline = 30.0 if args.subset else 60.0
    backends = args.backend or ["redis", "postgres"]
    modes = args.mode or ["plain", "guarded"]
    version = celery_version()
    try:
        python = ensure_venv()
        suite = ensure_suite(python, version)
        suite_requirements(python, suite)
        if "django" in backends:
            install_missing(python, DJANGO_REQUIREMENTS)
        if args.subset:
            args.tests = args.tests + subset(python, suite, args.per_shape)
    except subprocess.CalledProcessError as exc:
        print(f"celery-acceptance: {' '.join(exc.cmd)} failed:\n{exc.stderr}", file=sys.stderr)
        return 2
    except SystemExit as exc:
        print(f"celery-acceptance: {exc}", file=sys.stderr)
        return 2
    runs = []
    started = time.monotonic()
    try:
        for backend in backends:
            for mode in modes:
                runs.append(run_suite(python, suite, backend, mode, args))
    except SystemExit as exc:
        print(f"celery-acceptance: {exc}", file=sys.stderr)
        return 2
    text, regressions = summarize(runs, version, args)
    print("\n" + text + f"\n\ntotal {time.monotonic() - started:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([{
            "backend": r.backend, "mode": r.mode, "seconds": round(r.seconds, 1),
            "waited": round(r.waited, 1),
            "source": r.source,
            "outcomes": r.outcomes, "messages": r.messages, "flips": r.flips,
            "reruns": r.reruns,
            "dead_letters": r.dead_letters} for r in runs], indent=1))
    return 1 if regressions else 0


if __name__ == "__main__":
    sys.exit(main())
