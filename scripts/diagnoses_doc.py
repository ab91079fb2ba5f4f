"""Write docs/diagnoses.md from the diagnosis catalogue (tests check it is current)."""

from __future__ import annotations

import sys
from pathlib import Path

from chordguard.monitor.diagnose import CATALOG, EVIDENCE, KINDS

DOC = Path(__file__).resolve().parent.parent / "docs" / "diagnoses.md"
INTRO = """# Diagnosis codes

Stable codes that `status`, `check`, `inspect`, `--json`, `/metrics` and the dashboard use.
`blocking`: the chord will not finish by itself (`check` exits 1). `warning`: it may not.
Each code says which evidence it needs for each chord kind ("guarded": the app runs
`chordguard.install`, whatever its kind). Generated from `chordguard.monitor.diagnose`
(`CATALOG`, `EVIDENCE`) by `python scripts/diagnoses_doc.py`.
"""


def render() -> str:
    parts = [INTRO]
    for code in CATALOG.values():
        parts.append(f"\n## `{code.code}` ({code.severity.value})\n\n{code.explanation}\n\n"
                     f"**Next step:** {code.next_step}\n\n| chord kind | evidence needed |\n"
                     "|---|---|\n")
        parts += [f"| {label} | {EVIDENCE[code.code][kind]} |\n" for kind, label in KINDS.items()]
    return "".join(parts)


if __name__ == "__main__":
    DOC.write_text(render())
    sys.stdout.write(f"wrote {DOC}\n")
