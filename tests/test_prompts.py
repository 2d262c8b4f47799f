"""Role prompts are data: every pattern loads, placeholders are filled literally, context blocks are optional."""

import pytest

from recursa.core.errors import ConfigError
from recursa.methods.prompts import answer_format_text, load_roles, load_team, patterns


def test_patterns_and_role_order():
    assert {"single", "sequential", "hierarchical"} <= set(patterns())
    assert [r.name for r in load_roles("sequential")] == ["planner", "critic", "refiner", "judger"]
    team = load_team("hierarchical")
    assert [r.name for r in team.workers] == ["math", "science", "code"]
    assert team.final.name == "summarizer" and not any(r.receives_context for r in team.workers)
    assert load_team("single").final.name == "solver"


def test_placeholders_are_filled_once_and_braces_survive():
    team = load_team("sequential")
    planner, critic, _, judger = team.roles
    context = team.text_context([(planner, "step 1 {question}"), (critic, "looks fine")])
    prompt = judger.user_prompt("What is {context} 2+2?", "math", context)
    assert "[Planner]:\nstep 1 {question}" in prompt and "[Critic]:\nlooks fine" in prompt
    assert "What is {context} 2+2?" in prompt          # a question's own braces are not placeholders
    assert "\\boxed{ANSWER}" in prompt and "{answer_format}" not in prompt
    assert prompt.index("[Critic]") < prompt.index("Target question")


def test_latent_note_and_no_context():
    team = load_team("sequential")
    critic = team.roles[1]
    with_note = critic.user_prompt("Q?", "math", team.latent_note)
    bare = critic.user_prompt("Q?", "math")
    assert "latent" in with_note and "latent" not in bare
    assert bare.endswith("Question: Q?")
    messages = critic.messages("Q?", "code")
    assert [m["role"] for m in messages] == ["system", "user"]


def test_bad_names_fail_clearly():
    with pytest.raises(ConfigError, match="unknown prompt pattern 'tree'"):
        load_team("tree")
    with pytest.raises(ConfigError, match="unknown answer format"):
        answer_format_text("poem")
    assert "```python" in answer_format_text("code")
