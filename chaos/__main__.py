"""``python -m chaos [--rows a,b] [--cols x,y] [--chords N] [--json FILE]``: run the matrix
and print its table."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import asdict
from pathlib import Path

from tests.private_servers import private_postgres, private_redis

from .cell import Servers, Tally, run_cell
from .faults import FAULTS
from .kinds import KINDS
from .table import render


def pick(names: str | None, known: list, what: str) -> list:
    if not names:
        return known
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if n not in {k.name for k in known}]
    if unknown:
        raise SystemExit(f"chaos: unknown {what} {', '.join(unknown)}; known: "
                         + ", ".join(k.name for k in known))
    return [k for k in known if k.name in wanted]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--rows", help="faults to run (comma-separated; default all)")
    parser.add_argument("--cols", help="kinds to run (comma-separated; default all)")
    parser.add_argument("--chords", type=int, default=5, help="chords per cell (default 5)")
    parser.add_argument("--json", type=Path, help="also write the tallies to this file")
    args = parser.parse_args(argv)
    faults, kinds = pick(args.rows, FAULTS, "row"), pick(args.cols, KINDS, "column")
    if args.chords < 1:
        raise SystemExit("chaos: --chords must be at least 1")
    logging.basicConfig(level=logging.CRITICAL)
    began = time.monotonic()
    results: dict[tuple[str, str], Tally] = {}
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        servers = Servers(broker=stack.enter_context(private_redis(range(7440, 7450))),
                          redis=stack.enter_context(private_redis(range(7450, 7460))),
                          postgres=stack.enter_context(private_postgres(range(5470, 5480))),
                          tmp=Path(tmp))
        for fault in faults:
            for kind in kinds:
                t0 = time.monotonic()
                cell_tmp = Path(tempfile.mkdtemp(dir=tmp))
                results[fault.name, kind.name] = tally = run_cell(
                    kind, fault, servers, args.chords, cell_tmp)
                print(f"chaos: {fault.name} × {kind.name}: "
                      f"{tally.na and 'n/a' or asdict(tally)} ({time.monotonic() - t0:.0f} s)",
                      file=sys.stderr, flush=True)
    print(render(faults, kinds, results))
    print(f"\n{len(results)} cells in {time.monotonic() - began:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({f"{f} × {k}": asdict(t) for (f, k), t
                                         in results.items()}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
