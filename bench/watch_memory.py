"""`chordguard watch`'s state against Flower's: memory held and events per second.

    python bench/watch_memory.py [--tasks 200000] [--chords 2000]

One event stream, shaped like a real worker's (task-received with argsrepr, started,
succeeded; a chord_unlock task-received per poll, as captured from celery 5.7 with -E), is
fed side by side to:

* chordguard: ``chordguard.monitor.events.UnlockWatch().feed`` (default bounds);
* baseline: ``celery.events.state.State(max_tasks_in_memory=10000)``, the in-memory task
  list Flower keeps (its default size), ``State.event``.

Printed per stream: memory retained after the stream (tracemalloc, after gc) and events per
second, each side and the ratio chordguard / baseline. Streams: ``mixed`` (plain tasks with
an unlock poll every 50 events, spread over ``--chords`` chords) and ``polls`` (only unlock
polls: the worst case for chordguard, every event lands in its per-chord state).
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
import uuid
from collections.abc import Callable, Iterator

from celery.events.state import State

from chordguard.monitor.events import UnlockWatch

CALLBACK = ("{{'task': 'proj.collect_results', 'args': [], 'kwargs': {{}}, 'options': "
            "{{'task_id': '{cb}', 'reply_to': '{reply}', 'group_id': '{gid}'}}, "
            "'subtask_type': None, 'immutable': False}}")


def stream(tasks: int, chords: int, poll_every: int) -> Iterator[dict]:
    """Events of ``tasks`` plain tasks with an unlock poll every ``poll_every`` events."""
    groups = [(str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())) for _ in range(chords)]
    unlock_ids = [str(uuid.uuid4()) for _ in range(chords)]
    retries = [0] * chords
    now, n = 1_700_000_000.0, 0
    for i in range(tasks):
        task_id = str(uuid.uuid4())
        for kind in ("task-received", "task-started", "task-succeeded"):
            now += 0.001
            event = {"type": kind, "uuid": task_id, "timestamp": now, "hostname": "w1@h",
                     "clock": n, "local_received": now}
            if kind == "task-received":
                event.update(name="proj.execute_single_test", args=f"('{task_id}', {i})",
                             kwargs="{'config': 'c-1'}", retries=0, root_id=task_id,
                             parent_id=None, eta=None, expires=None)
            elif kind == "task-succeeded":
                event.update(result="{'status': 'ok'}", runtime=0.01)
            n += 1
            yield event
            if poll_every and n % poll_every == 0:
                c = (n // poll_every) % chords
                gid, cb, reply = groups[c]
                retries[c] += 1
                yield {"type": "task-received", "uuid": unlock_ids[c],
                       "name": "celery.chord_unlock", "timestamp": now, "hostname": "w1@h",
                       "clock": n, "local_received": now, "retries": retries[c],
                       "args": f"('{gid}', " + CALLBACK.format(cb=cb, reply=reply, gid=gid) + ")",
                       "kwargs": "{'interval': None, 'max_retries': None, 'result': "
                                 "[[[...], None], [[...], None]]}",
                       "root_id": unlock_ids[c], "parent_id": unlock_ids[c], "eta": None,
                       "expires": None}


def measure(make: Callable[[], Callable[[dict], object]], events: list[dict]
            ) -> tuple[float, float]:
    """(bytes retained after the stream, events per second) for one consumer.

    Memory is traced in one pass and speed timed in another, untraced."""
    gc.collect()
    tracemalloc.start()
    feed = make()
    for event in events:
        feed(event)
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del feed
    feed = make()
    started = time.perf_counter()
    for event in events:
        feed(event)
    return retained, len(events) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=200_000)
    parser.add_argument("--chords", type=int, default=2_000)
    args = parser.parse_args()
    streams = {"mixed": (args.tasks, 50), "polls": (args.tasks // 3, 1)}
    for name, (tasks, poll_every) in streams.items():
        events = list(stream(tasks, args.chords, poll_every))
        if name == "polls":
            events = [e for e in events if e.get("name") == "celery.chord_unlock"]
        mine = measure(lambda: UnlockWatch().feed, events)
        base = measure(lambda: State(max_tasks_in_memory=10_000).event, events)
        print(f"{name}: {len(events)} events, {args.chords} chords")
        print(f"  memory  chordguard {mine[0] / 1e6:8.2f} MB  baseline {base[0] / 1e6:8.2f} MB"
              f"  ratio {mine[0] / base[0]:.3f}")
        print(f"  speed   chordguard {mine[1]:10.0f}/s  baseline {base[1]:10.0f}/s"
              f"  ratio {mine[1] / base[1]:.2f}")


if __name__ == "__main__":
    main()
