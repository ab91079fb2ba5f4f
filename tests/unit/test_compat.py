"""What differs between Celery versions, as pure facts: each version's hazards, doctor's
version findings, database rows as each version writes them, result tuples (no services)."""

from __future__ import annotations

import json
import pickle

import celery
import pytest

from chordguard import _compat
from chordguard._compat import CeleryFacts
from chordguard.monitor.celery_hazards import hazards
from chordguard.monitor.doctor import AppConfig, lint
from chordguard.monitor.sources.result_tuples import header_ids, upstream_ids

pytestmark = pytest.mark.compat


def test_installed_version_is_supported_and_known():
    assert _compat.INSTALLED.version == tuple(int(p) for p in celery.__version__.split(".")[:2])
    assert _compat.INSTALLED.supported, f"celery {celery.__version__} outside 5.3 to 5.7"


@pytest.mark.parametrize(("version", "codes"), [
    ((5, 3), {"nested_chain_failure", "unlock_gives_up_silently", "redis_parts_counted_twice",
              "errback_taken_for_old_style", "no_result_chord_expires", "keyprefix_separator"}),
    ((5, 6), {"nested_chain_failure", "unlock_gives_up_silently", "redis_parts_counted_twice",
              "errback_taken_for_old_style", "no_result_chord_expires"}),
    ((5, 7), set()),
    ((5, 8), {"untested_celery_version"}),
])
def test_each_version_has_its_hazards(version, codes):
    assert {h.code for h in hazards(CeleryFacts(version))} == codes


def test_doctor_flags_9674_only_where_it_hangs_an_unguarded_unlock_chord():
    def found(version, backend, guarded=False):
        config = AppConfig(settings={"result_backend": backend, "task_time_limit": 60,
                                     "worker_send_task_events": True}, guarded=guarded,
                           celery=CeleryFacts(version))
        return {f.code for f in lint(config)}

    assert "nested_chain_failure" in found((5, 6), "db+postgresql://h/db")
    assert "nested_chain_failure" not in found((5, 7), "db+postgresql://h/db")
    assert "nested_chain_failure" not in found((5, 6), "redis://h")
    assert "nested_chain_failure" not in found((5, 6), "db+postgresql://h/db", guarded=True)
    assert "untested_celery_version" in found((5, 8), "redis://h")


def test_stored_results_of_every_version_decode_and_code_never_unpickles():
    assert _compat.stored_result(b'{"a": 1}', json.loads) == {"a": 1}  # 5.7: serializer bytes
    assert _compat.stored_result(pickle.dumps({"a": [1]}), json.loads) == {"a": [1]}  # 5.3-5.6
    with pytest.raises(ValueError, match="refusing"):
        _compat.stored_result(pickle.dumps(ValueError("x")), json.loads)
    assert _compat.stored_result(None, json.loads) is None


def test_result_tuples_of_a_nested_chain_header():
    fail, two, three, last, plain = "f", "2", "3", "4", "1"
    group_23 = [["g23", [[fail, None], None]], [[[two, None], None], [[three, None], None]]]
    result = [[[plain, None], None], [[last, group_23], None]]
    assert header_ids(result) == [plain, last]
    assert upstream_ids(result) == {last: [two, three, fail]}
