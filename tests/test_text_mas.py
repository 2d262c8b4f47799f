"""text-mas on the real embedded model: both patterns run end to end on a batch of two problems, every agent's
output and token counts are recorded, later agents read earlier agents' text, and each stage is one batched call."""

import pytest

from recursa.core.trace import Tracer
from recursa.methods.base import Task, create

PROBLEMS = [Task("p1", "Tom has 3 apples and buys 4 more. How many apples does he have?", "7",
                 {"scorer": "math", "answer_format": "math"}),
            Task("p2", "A box holds 6 eggs. How many eggs are in 2 boxes?", "12",
                 {"scorer": "math", "answer_format": "math"})]


def _model_calls(tracer):
    import json

    events = [json.loads(line) for line in tracer.path.read_text().splitlines()]
    return [e["batch_size"] for e in events if e["kind"] == "model_call"]


@pytest.mark.slow
@pytest.mark.parametrize("pattern, roles, calls", [
    ("sequential", ["planner", "critic", "refiner", "judger"], [2, 2, 2, 2]),
    ("hierarchical", ["math", "science", "code", "summarizer"], [6, 2]),
])
def test_text_mas_end_to_end(qwen, tmp_path, pattern, roles, calls):
    method = create("text-mas", qwen, pattern=pattern, max_tokens=16)
    with Tracer.start(runs_dir=tmp_path) as tracer:
        answers = method.solve_batch(PROBLEMS)
    assert _model_calls(tracer) == calls                      # one batched generate per stage
    assert tracer.totals.completion_tokens == sum(a.usage["completion_tokens"] for a in answers)
    for answer in answers:
        assert [a.role for a in answer.agents] == roles
        assert all(a.text.strip() and 0 < a.completion_tokens <= 16 and a.prompt_tokens > 20 for a in answer.agents)
        assert answer.text == answer.agents[-1].text and answer.usage["model_calls"] == 4
        final_prompt = answer.agents[-1].extra["prompt"]
        for earlier in answer.agents[:-1]:                    # the final agent read every earlier agent's text
            assert earlier.text.strip()[:40] in final_prompt
    if pattern == "hierarchical":                             # experts answer independently
        assert "[Math Agent]" not in answers[0].agents[1].extra["prompt"]
    else:
        assert "[Planner]:" in answers[0].agents[1].extra["prompt"]
    assert "Tom" in answers[0].agents[0].extra["prompt"] and "eggs" in answers[1].agents[0].extra["prompt"]
