"""RLM orchestration with a scripted model (the loop logic only), reply parsing, and one real-model run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import ScriptedModel

from recursa.core.budget import Budget
from recursa.core.trace import Tracer
from recursa.methods import base
from recursa.methods.base import Task
from recursa.methods.rlm import parsing
from recursa.methods.rlm.loop import RecursiveLM
from recursa.methods.rlm.prompting import first_user, key_words, system_prompt

NEEDLE_CONTEXT = ("filler text. " * 200) + "The special magic number for Accra is 5138149. " + ("more filler. " * 200)
ROOT_MARK = "You answer a question about a large text"


def scripted(replies: list[str]) -> ScriptedModel:
    """Root replies come from the script (one per root call); sub-calls answer "sub:<first words of prompt>"."""
    return ScriptedModel(replies, script_when=ROOT_MARK)


def solve(replies, context=NEEDLE_CONTEXT, question="What is the special magic number for Accra?", **options):
    model = scripted(replies)
    options.setdefault("max_iterations", 6)
    with Tracer.start(runs_dir=Path(options.pop("runs", "runs"))) as tracer:
        answer = base.create("rlm", model, **options).solve(Task("t1", question, context=context))
    events = [json.loads(line) for line in tracer.path.read_text().splitlines()]
    return answer, model, events


def last_user(model: ScriptedModel, call: int = -1) -> str:
    return model.root_prompts[call][-1]["content"]


def test_final_in_code_after_grep_and_trace(tmp_path):
    answer, model, events = solve(["```repl\nhits = grep(r'Accra')\nprint(hits)\n```",
                                   "```repl\nFINAL('5138149')\n```"], runs=tmp_path)
    assert answer.text == "5138149" and answer.stopped is None
    assert answer.meta["iterations"] == 2 and answer.meta["final_source"] == "FINAL() in code"
    assert "5138149" in last_user(model)                      # the grep output was shown to the model
    assert "5138149" not in model.root_prompts[0][1]["content"]  # ... but the context itself never was
    kinds = [e["kind"] for e in events]
    assert kinds.count("rlm_iteration") == 2 and kinds.count("repl_block") == 2
    block = next(e for e in events if e["kind"] == "repl_block")
    iteration = next(e for e in events if e["kind"] == "rlm_iteration")
    assert block["parent_id"] == iteration["span_id"] and "Accra" in block["output"]


def test_final_var_as_text_and_as_function():
    answer, _, _ = solve(["```repl\nx = context.count('filler text')\nprint(x)\n```", "FINAL_VAR(x)"])
    assert answer.text == "200" and answer.meta["final_source"] == "FINAL_VAR text"
    answer, _, _ = solve(["```repl\nresult = len(context.split())\nFINAL_VAR('result')\n```"])
    assert answer.text == str(len(NEEDLE_CONTEXT.split()))


def test_guessed_literal_final_is_ignored_until_grounded():
    answer, model, _ = solve(["```repl\nprint(len(context))\nFINAL('12')\n```",
                              "```repl\nprint(grep('Accra'))\n```", "```repl\nFINAL('5138149')\n```"])
    assert "FINAL('12') was ignored" in last_user(model, 1)
    assert answer.text == "5138149" and answer.meta["iterations"] == 3


def test_a_number_seen_only_inside_a_longer_one_is_not_grounded():
    answer, model, _ = solve(["```repl\nprint('founded in 1983')\n```", "```repl\nFINAL('83')\n```",
                              "```repl\nprint(grep('Accra'))\n```", "```repl\nFINAL('5138149')\n```"])
    assert "FINAL('83') was ignored" in last_user(model, 2)
    assert answer.text == "5138149"


def test_grep_with_too_many_matches_says_how_to_narrow_it():
    grep_block = "```repl\nhits = grep(r'filler|Accra')\nprint(len(hits))\n```"
    _, model, _ = solve([grep_block, grep_block.replace("print(", "n = len(hits)\nprint("), "FINAL_VAR(n)"])
    assert "401 matches for 'filler|Accra'. To find one fact, search for the rarest" in last_user(model, 1)
    second = last_user(model, 2)
    assert "401" in second and "rarest" not in second          # said once per pattern


def test_syntax_error_is_reported_then_fixed():
    answer, model, _ = solve(["```repl\nprint(len(context)\n```", "```python\nn = len(context)\nprint(n)\n```",
                              "FINAL_VAR(n)"])
    assert "SyntaxError" in last_user(model, 1) and "fix the SyntaxError" in last_user(model, 1)
    assert answer.text == str(len(NEEDLE_CONTEXT))


def test_truncated_block_is_repaired_and_unfenced_code_runs():
    answer, model, _ = solve(["```repl\nn = len(context)\nprint('n is', n)\nfor x in", "m = n * 2\nprint(m)",
                              "FINAL_VAR(m)"])
    assert "n is" in last_user(model, 1) and "dropped 1 unfinished line" in last_user(model, 1)
    assert "not inside a ```repl block" in last_user(model, 2)
    assert answer.text == str(2 * len(NEEDLE_CONTEXT))


def test_a_repeated_greedy_reply_is_resampled_once():
    model = scripted(["```repl\nprint(1)\n```", "```repl\nprint(1)\n```", "```repl\nprint(2)\n```",
                           "FINAL(2)"])
    answer = RecursiveLM(model, max_iterations=4).solve(Task("t", "q?", context="abc"))
    assert answer.text == "2" and answer.usage["model_calls"] == 4 and answer.meta["iterations"] == 3


def test_answering_before_looking_is_refused_once():
    answer, model, _ = solve(["FINAL(42)", "```repl\nprint(grep('Accra'))\n```", "FINAL(5138149)"])
    assert "before running any code" in last_user(model, 1)
    assert answer.text == "5138149"


def test_iteration_cap_asks_for_a_last_answer():
    answer, model, _ = solve([f"```repl\nprint({i})\n```" for i in range(3)] + ["FINAL(7)"], max_iterations=3)
    assert answer.text == "7" and answer.meta["final_source"] == "final request"
    assert len(model.root_prompts) == 4 and "out of turns" in last_user(model)


def test_budget_trip_returns_the_marked_partial_answer():
    replies = ["```repl\nanswer = 'partial 5138149'\n```", "```repl\nprint(2)\n```", "```repl\nprint(3)\n```"]
    answer, model, _ = solve(replies, budget=Budget(max_calls=1))
    assert answer.stopped and "model_calls" in answer.stopped
    assert answer.text == "partial 5138149" and answer.meta["final_source"] == "marked variable"
    assert len(model.root_prompts) == 2


def test_batched_sub_calls_are_one_generate_call():
    code = "r = llm_query_batched(['chunk %d' % i for i in range(16)])\nprint(len(r), r[3])"
    answer, model, events = solve([f"```repl\n{code}\n```", "FINAL_VAR(r)"])
    assert len(model.sub_batches) == 1 and len(model.sub_batches[0]) == 16
    assert "16 sub:chunk 3" in last_user(model)
    sub = [e for e in events if e["kind"] == "sub_call"]
    assert len(sub) == 1 and sub[0]["prompts"] == 16
    assert sub[0]["exchanges"][3] == {"prompt": "chunk 3", "answer": "sub:chunk 3"}   # what a reader checks
    assert answer.usage["model_calls"] == 2 + 16
    assert answer.meta["sub_calls"] == 16


def test_depth_zero_has_no_sub_calls():
    answer, model, _ = solve(["```repl\nprint(llm_query('hi'))\n```", "FINAL(done)"], max_depth=0)
    assert "NameError" in last_user(model, 1) and not model.sub_batches
    assert "llm_query" not in model.root_prompts[0][0]["content"]
    assert "ask `llm_query_batched`" not in last_user(model, 1)                # no hint about sub-calls either
    _, model, _ = solve(["```repl\nprint(1)\n```", "FINAL(1)"])
    assert "ask `llm_query_batched` about each line" in last_user(model, 1)


def test_rlm_query_at_max_depth_is_a_plain_call_and_deeper_spawns_a_child():
    answer, model, events = solve(["```repl\nprint(rlm_query('summarise', context='abc'))\n```", "FINAL(ok)"],
                                  max_depth=1)
    assert model.sub_batches == [["summarise\n\nabc"]]
    replies = ["```repl\nprint(rlm_query('find it', context=context))\n```",
               "```repl\nprint(grep('Accra'))\n```", "```repl\nFINAL('5138149')\n```",   # the child's turns
               "```repl\nFINAL('5138149')\n```"]
    answer, model, events = solve(replies, max_depth=2)
    assert answer.text == "5138149"
    rlm_spans = [e for e in events if e["kind"] == "rlm"]
    assert sorted(e["depth"] for e in rlm_spans) == [0, 1]
    child = next(e for e in rlm_spans if e["depth"] == 1)
    parents = {e["span_id"]: e for e in events}
    assert parents[child["parent_id"]]["kind"] == "sub_call"   # nested under the call that made it
    assert any(a.role.startswith("child/") for a in answer.agents)


def test_parsing_variants():
    assert [b.code for b in parsing.extract_code("text\n```python\nx = 1\n```\n```text\nno\n```")] == ["x = 1"]
    assert parsing.extract_code("Let me think about this problem first.") == []
    fixed = parsing.extract_code("```repl\n>>> x = 1\n>>> print(x)\n```")[0]
    assert fixed.code == "x = 1\nprint(x)" and fixed.repaired
    assert parsing.find_final("I know it.\nFINAL(the (big) answer)\nbye").value == "the (big) answer"
    assert parsing.find_final("FINAL_VAR(total)").kind == "var"
    assert parsing.find_final("```repl\nFINAL(x)\n```") is None   # inside code it is a function call


def test_unknown_and_bad_options_are_refused():
    from recursa.core.errors import ConfigError

    assert isinstance(base.create("rlm", scripted([]), max_depth=2), RecursiveLM)
    with pytest.raises(ConfigError, match="unknown option 'latent_steps'"):
        base.create("rlm", scripted([]), latent_steps=3)
    with pytest.raises(ConfigError, match="max_iterations"):
        base.create("rlm", scripted([]), max_iterations=0)


def test_real_model_rlm_run_and_batched_sub_calls(qwen, tmp_path):
    """The machinery on the embedded model: iterations and blocks traced, real batched sub-calls answered.

    Accuracy of the 0.5B model is not asserted here; the benchmark reports it.
    """
    from recursa.eval.long_context import s_niah

    task = s_niah(n=1, context_chars=8000, seed=3)[0]
    solver = RecursiveLM(qwen, max_iterations=1, max_tokens=120)
    code = "r = llm_query_batched(['Reply with the word yes.', 'Reply with the word no.'])\nprint(len(r), r)"
    with Tracer.start(runs_dir=tmp_path) as tracer:
        answer = solver.solve(task)
        # The same path the model's code takes: REPL -> callback -> one batched generate on the real model.
        with solver.open_repl(task.context, chunk_chars=2000) as repl:
            result = repl.execute(code)
            assert repl.sub_calls == 2
    events = [json.loads(line) for line in tracer.path.read_text().splitlines()]
    assert answer.meta["iterations"] >= 1 and answer.usage["model_calls"] >= 1
    assert [e["kind"] for e in events].count("rlm_iteration") == answer.meta["iterations"]
    assert any(e["kind"] == "repl_block" for e in events)
    assert result.ok and result.stdout.startswith("2 ["), result.text()
    batched = [e for e in events if e["kind"] == "model_call" and e.get("batch_size") == 2]
    assert len(batched) == 1


def test_key_words_name_what_the_question_names():
    assert key_words("How many entries of the ship's log from 1852 report rough weather?") == ["1852"]
    assert key_words("Who signed the lease for the flat on 'Rue Cler' in Paris?")[:1] == ["Rue Cler"]
    assert "Paris" in key_words("Who signed the lease for the flat on 'Rue Cler' in Paris?")
    assert key_words("which letters discuss gardening and orchards?")[:2] == ["gardening", "orchards"]
    assert key_words("Which crates in bay b12 hold flour from mill-7?") == ["b12", "mill-7"]   # ids with digits


def test_key_words_skip_the_answer_format_example():
    question = ("List every pair of recipe numbers (a, b) with a < b such that both recipes use saffron. "
                "Answer with the pairs, like (101, 202), (101, 303).")
    words = key_words(question)
    assert "saffron" in words and not {"101", "202", "303"} & set(words)
    assert key_words("How many loans did card 0412 make in March? Reply with a number such as 12.") == [
        "0412", "March"]


def test_the_first_message_suggests_one_key_word_to_start_with():
    text = first_user("How many crates in bay b12 hold flour?", "crate 1 in bay b12: flour")
    assert "`rows = grep('b12')`" in text and "Key words to search for: 'b12'" in text
    assert "`rows = grep('mill-7')`" in first_user("What does mill-7 grind?", "x")
    assert "print(context[:1000])" in first_user("what is this about?", "abc")


def test_grep_returns_whole_lines_of_record_data_once_each():
    lines = [f"{day} Mar 1998: card 0412 took out book {day} (card 0412 again)" for day in range(1, 6)]
    context = "\n".join(lines) + "\n" + "prose " * 400 + "card 0412 in a long paragraph " + "prose " * 400
    code = "hits = grep('card 0412')\nprint(len(hits))\nprint(hits[0])\nprint(len(hits[-1]))"
    answer, model, _ = solve([f"```repl\n{code}\n```", "FINAL(done)"], context=context)
    out = last_user(model)
    assert "\n6\n" in out and f"\n{lines[0]}\n" in out      # five lines (one hit each) and one snippet
    assert "\n209\n" in out                                 # the long line: 100 characters each side


def test_a_paraphrased_final_is_accepted_but_a_guessed_number_is_not():
    context = "Terms. The tenant may leave with thirty (30) days of notice. Rent is due monthly."
    answer, _, _ = solve(["```repl\nprint(grep('notice'))\n```", "```repl\nFINAL('30 days')\n```"],
                         context=context, question="How much notice must the tenant give?")
    assert answer.text == "30 days" and answer.meta["final_source"] == "FINAL() in code"
    answer, model, _ = solve(["```repl\nprint(grep('notice'))\n```", "```repl\nFINAL('45')\n```"],
                             context=context, question="How much notice must the tenant give?")
    assert "FINAL('45') was ignored" in last_user(model, 2)


def test_counting_questions_get_the_counting_example_first():
    with_calls = system_prompt(context="x", chunk=1000, sub_calls=True, recursive=False,
                               question="How many entries mention a storm?")
    assert with_calls.index("count by meaning") < with_calls.index("find a fact")
    assert "llm_query_batched(prompts)" in with_calls
    without = system_prompt(context="x", chunk=1000, sub_calls=False, recursive=False, question="Where is it?")
    assert without.index("find a fact") < without.index("count lines") and "llm_query" not in without


def test_a_time_budget_stops_a_long_batched_call_between_batches():
    import time

    def slow(text: str) -> str:
        time.sleep(0.03)
        return "no"

    model = ScriptedModel(["```repl\nr = llm_query_batched(['line %d' % i for i in range(96)])\nprint(len(r))\n```"],
                          script_when=ROOT_MARK, respond=slow)
    answer = RecursiveLM(model, max_iterations=3, max_batch=32, max_seconds=0.5).solve(
        Task("t", "How many lines?", context="abc"))
    assert answer.stopped and "seconds" in answer.stopped
    assert len(model.sub_batches) == 1                       # the second batch of 32 never ran


def test_an_oversize_batch_is_refused_and_or_patterns_get_a_hint():
    context = "\n".join(f"day {i} crate {i % 7} holds {'flour' if i % 3 else 'salt'}" for i in range(120))
    code = ("rows = grep('crate 3|salt')\nprint(len(rows))\n"
            "r = llm_query_batched(['Is it dry goods? ' + row for row in rows])")
    _, model, _ = solve([f"```repl\n{code}\n```", "FINAL(1)"], context=context, max_prompts=30)
    out = last_user(model, 1)
    assert "keeps lines with ANY of these words" in out and "if 'salt' in line" in out
    assert "got 51 prompts; at most 30 per call" in out and not model.sub_batches


def test_a_batch_of_identical_prompts_is_refused_before_any_sub_call():
    code = "rows = grep('crate')\nr = llm_query_batched(['Is this line about salt? Answer yes or no.' for row in rows])"
    _, model, _ = solve([f"```repl\n{code}\n```", "FINAL(1)"], context="crate 1 salt\ncrate 2 flour\ncrate 3 salt")
    assert "got 3 identical prompts" in last_user(model, 1) and not model.sub_batches
