"""The Aime goal suite's report arithmetic (bench/aime_goals.py; its figures come from running it)."""

import importlib.util
import json
import sys
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location("aime_goals", Path(__file__).parents[1] / "bench" / "aime_goals.py")
aime_goals = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(aime_goals)


def test_sign_test_is_the_exact_two_sided_binomial_on_discordant_goals():
    assert aime_goals.sign_test(0, 0) == 1.0
    assert aime_goals.sign_test(2, 0) == 0.5            # 2 × (1/4)
    assert abs(aime_goals.sign_test(7, 1) - 0.0703125) < 1e-12   # 2 × (1 + 8) / 256
    assert aime_goals.sign_test(3, 3) == 1.0


def test_report_pairs_systems_on_the_goals_both_finished(tmp_path, capsys, monkeypatch):
    rows = [("aime", "g0", True), ("aime", "g1", True), ("aime", "g2", False),
            ("solo", "g0", True), ("solo", "g1", False)]          # solo never finished g2
    (tmp_path / "results.jsonl").write_text("".join(
        json.dumps({"model": "m", "system": s, "id": g, "kind": "csv", "success": ok}) + "\n" for s, g, ok in rows))
    monkeypatch.setattr(sys, "argv", ["aime_goals.py", "report", str(tmp_path)])
    aime_goals.main()
    pairs = capsys.readouterr().out.split("Pairs, on the goals both finished:")[1]
    assert "| m | aime | solo | 2 | 2 | 1 | 1 | 0 | 1.00 |" in pairs


_PEER_SPEC = importlib.util.spec_from_file_location(
    "aime_peer_errors", Path(__file__).parents[1] / "bench" / "aime_peer_errors.py")
aime_peer_errors = importlib.util.module_from_spec(_PEER_SPEC)
_PEER_SPEC.loader.exec_module(aime_peer_errors)


def test_peer_step_errors_are_sorted_into_kinds_with_the_refused_name():
    kind = aime_peer_errors.error_kind
    assert kind("Code execution failed at line 'x = web_search(q)' due to: InterpreterError: Forbidden function "
                "evaluation: 'web_search' is not among the explicitly allowed tools") == \
        ("unknown function or tool", "web_search")
    assert kind("InterpreterError: Import from tools is not allowed. Authorized imports are: ['math']") == \
        ("import refused", "tools")
    assert kind("Code parsing failed on line 7 due to: SyntaxError: invalid syntax") == ("syntax error", None)
    assert kind("Reached max steps.") == ("step cap", None)
    assert kind("something else went wrong") == ("other", None)
