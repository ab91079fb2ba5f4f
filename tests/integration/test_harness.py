"""The test harness itself: a real worker runs a real chord in an isolated namespace."""

from celery import chord

from tests.cluster import REDIS_URL


def test_real_worker_runs_a_redis_chord(make_cluster):
    cluster = make_cluster(REDIS_URL, REDIS_URL)
    cluster.start_worker()
    app = cluster.app
    result = chord([app.signature("t.add", (i, i)) for i in range(5)])(app.signature("t.tsum"))
    assert result.get(timeout=30) == sum(2 * i for i in range(5))
