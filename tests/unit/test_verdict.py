"""The verdict never vouches for in-flight chords whose holdings it could not fully see."""

from __future__ import annotations

from datetime import UTC, datetime

from chordguard.model import Chord, ChordKind, ClusterFacts, Snapshot, SourceReport
from chordguard.monitor.api import verdict


def snapshot(complete: bool, *chords: Chord) -> Snapshot:
    now = datetime.now(UTC)
    return Snapshot(now, "5.x", ClusterFacts(now, holdings_complete=complete), list(chords),
                    [SourceReport("redis_chords", True, 0.1)])


def test_redis_chords_in_flight_need_a_complete_view():
    chord = Chord(id="g", kind=ChordKind.REDIS)
    assert verdict(snapshot(False, chord))[0] == "unknown"
    assert verdict(snapshot(True, chord))[0] == "healthy"
    assert verdict(snapshot(False))[0] == "healthy"  # nothing in flight: nothing unseen
