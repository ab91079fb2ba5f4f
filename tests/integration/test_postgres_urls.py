"""``postgres://`` and ``postgresql://`` store URLs, as people write them, reach the real
PostgreSQL through psycopg 3 (SQLAlchemy's own default for them, psycopg2, is not installed)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.cluster import PG_URL, REDIS_URL, ROOT


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_the_dead_letter_list_reads_a_store_given_as_people_write_it(scheme):
    url = scheme + "://" + PG_URL.split("://", 1)[1]
    done = subprocess.run([sys.executable, "-m", "chordguard", "--broker", REDIS_URL, "dlq",
                           "list", "--store", url, "--json"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode in (0, 1) and done.stderr == "", done.stderr  # 1: letters listed
    document = json.loads(done.stdout)
    assert document["store"] == "postgresql+psycopg://" + PG_URL.split("://", 1)[1]
    assert isinstance(document["dead_letters"], list)
