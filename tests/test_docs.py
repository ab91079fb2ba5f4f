"""The documentation that users rely on matches the code."""

import importlib.util
from pathlib import Path

from chordguard.monitor.diagnose import CATALOG, RULES

ROOT = Path(__file__).resolve().parent.parent


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_diagnosis_codes_doc_is_current():
    assert (ROOT / "docs" / "diagnoses.md").read_text() == load_script("diagnoses_doc").render()


def test_every_rule_emits_a_catalogued_code():
    names = {rule.__name__ for rule in RULES}
    assert {"lost_header", "unlock_storm", "no_consumer", "counter_lost"} <= names
    assert {"stuck", "orphaned_body", "header_failed", "callback_failed"} <= set(CATALOG)
