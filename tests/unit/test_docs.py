"""The documentation that users rely on matches the code."""

import ast
import importlib.util
import inspect
import textwrap
from pathlib import Path

from chordguard.monitor.diagnose import CATALOG, EVIDENCE, KINDS, RULES, diagnose

ROOT = Path(__file__).resolve().parents[2]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_diagnosis_codes_doc_is_current():
    assert (ROOT / "docs" / "diagnoses.md").read_text() == load_script("diagnoses_doc").render()


def emitted_codes(function) -> set[str]:
    """The codes a function passes to ``make(...)``, read from its source."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return {node.args[0].value for node in ast.walk(tree)
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "make"
            and node.args and isinstance(node.args[0], ast.Constant)}


def test_every_rule_emits_a_catalogued_code_and_every_code_has_a_rule():
    by_rule = {rule.__name__: emitted_codes(rule) for rule in RULES}
    assert all(by_rule.values()), {n: c for n, c in by_rule.items() if not c}  # no silent rule
    emitted = set().union(*by_rule.values()) | emitted_codes(diagnose)
    assert emitted - set(CATALOG) == set()  # nothing emitted without its doc entry
    assert set(CATALOG) - emitted == set()  # no documented code that nothing emits


def test_every_code_says_its_evidence_for_every_chord_kind():
    assert set(EVIDENCE) == set(CATALOG)
    assert {code: set(kinds) for code, kinds in EVIDENCE.items() if set(kinds) != set(KINDS)} \
        == {}
    assert all(text.strip() for kinds in EVIDENCE.values() for text in kinds.values())
