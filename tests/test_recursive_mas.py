"""RecursiveMAS: links, checkpoints, the cached rollout, batch independence, link training, the ridge bridge.

Real models throughout: SmolLM2-135M for speed (a two-agent system of it for the method and training tests), and
the Qwen 0.5B fixture where two different tokenizers and hidden sizes are the point.
"""

import math
from pathlib import Path

import pytest
import torch

from recursa.core.errors import ConfigError
from recursa.latent.links import (
    InnerLink,
    OuterLink,
    load_link,
    read_link_record,
    regression_error,
    ridge_bridge,
    save_link,
    text_pairs,
)
from recursa.latent.train import TrainSettings, inner_pairs, train_inner
from recursa.methods.base import Task, create
from recursa.methods.recursive_mas import cached_rollout, embed_rows, reprefill_rollout
from recursa.methods.recursive_system import load_models, load_system, role_messages
from recursa.methods.recursive_train import LinkTrainer, examples_from, mean_loss

SYSTEM = """name: tiny
pattern: sequential
rounds: 2
latent_steps: 4
agents:
  - {name: planner, model: smollm2-135m, role: planner}
  - {name: solver, model: smollm2-135m, role: solver}
links: links
"""

# Generic prose (no benchmark domain) for the bridge: fit on the first texts, judge on the last two.
TEXTS = [
    "The river bends twice before it reaches the old mill, where the water slows and turns green.",
    "Every autumn the village holds a market with apples, honey, wool and wooden toys from the hills.",
    "A lighthouse keeper writes the names of passing ships in a blue notebook every single night.",
    "The library opens at nine, closes at noon for lunch, and stays open late on Thursday evenings.",
    "She planted tomatoes along the fence and beans near the gate, then watered both before sunset.",
    "Trains leave the northern station every hour, and the last one departs shortly before midnight.",
    "The museum keeps a collection of maps drawn by sailors who crossed the ocean centuries ago.",
    "Our neighbour repairs bicycles in his garage and lends tools to anyone who knows how to use them.",
    "In winter the lake freezes near the shore, and children skate there after school until it is dark.",
    "The bakery on the corner sells bread in the morning and small cakes with cream in the afternoon.",
]


@pytest.fixture()
def tiny_system(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(SYSTEM, encoding="utf-8")
    return path


def test_link_shapes_and_parameter_counts():
    inner, outer = InnerLink(576), OuterLink(576, 896)
    assert sum(p.numel() for p in inner.parameters()) == InnerLink.parameter_count(576) == 2 * 576**2 + 6 * 576
    assert sum(p.numel() for p in outer.parameters()) == OuterLink.parameter_count(576, 896) \
        == 3 * 576 * 896 + 2 * 896**2 + 2 * 576 + 6 * 896
    assert outer.proj1.out_features == 2 * 896 and outer.residual_proj.in_features == 576
    assert inner(torch.randn(2, 5, 576)).shape == (2, 5, 576)
    assert outer(torch.randn(2, 5, 576)).shape == (2, 5, 896)


def test_checkpoint_round_trip_is_exact_and_refuses_other_models(smollm2, qwen, tmp_path):
    torch.manual_seed(1)
    inner, outer = InnerLink(576), OuterLink(576, 896)
    save_link(inner, tmp_path / "inner.safetensors", smollm2, smollm2, note="test")
    save_link(outer, tmp_path / "outer.safetensors", smollm2, qwen)
    loaded = load_link(tmp_path / "inner.safetensors", smollm2, smollm2)
    assert all(torch.equal(a, b) for a, b in zip(inner.state_dict().values(), loaded.state_dict().values(),
                                                 strict=True))
    assert isinstance(load_link(tmp_path / "outer.safetensors", smollm2, qwen), OuterLink)
    record = read_link_record(tmp_path / "outer.safetensors")
    assert record["source"]["model"] == "smollm2-135m" and record["target"]["hidden_size"] == 896
    with pytest.raises(ConfigError, match="trained with target model smollm2-135m"):
        load_link(tmp_path / "inner.safetensors", smollm2, qwen)
    with pytest.raises(ConfigError, match="does not fit"):
        save_link(outer, tmp_path / "bad.safetensors", qwen, smollm2)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not a safetensors link checkpoint"):
        load_link(tmp_path / "junk.safetensors", smollm2, smollm2)


def test_kv_cached_rollout_matches_reprefill(smollm2):
    torch.manual_seed(0)
    link = InnerLink(smollm2.hidden_size).eval()
    convs = [role_messages("planner", q, "math", []) for q in ("Why is the sky blue?", "Name two rivers.")]
    rows, last, _ = embed_rows(smollm2, convs, [])
    cached = cached_rollout(smollm2, rows, last, 6, link).float()
    full = reprefill_rollout(smollm2, rows, last, 6, link).float()
    relative = (cached - full).norm(dim=-1) / full.norm(dim=-1)
    assert relative.max() < 0.05, relative          # bf16: the two paths round differently, nothing more
    assert torch.nn.functional.cosine_similarity(cached, full, dim=-1).min() > 0.995


def _tie_at_divergence(model, rows, last, reference, other) -> bool:
    """Like conftest.diverges_only_at_a_tie, on a prompt given as embeddings."""
    step = next((i for i, (a, b) in enumerate(zip(reference, other, strict=False)) if a != b), None)
    if step is None:
        return len(reference) == len(other)
    tail = model.embed(torch.tensor(last + reference[:step]))
    hidden = model.prefill_embeds(model.new_state(1), [torch.cat([rows, tail])])
    best, second = model.logits(hidden)[0].float().topk(2).values.tolist()
    return best - second <= 2 * 2.0 ** (math.floor(math.log2(abs(best))) - 7)


def test_batch_rows_answer_as_alone(smollm2, tiny_system):
    method = create("recursive-mas", smollm2, system=str(tiny_system), links="random", max_tokens=8)
    tasks = [Task(question=q) for q in ("What is 6 times 7?", "A box holds 5 pens. How many pens in 3 boxes?")]
    together = method.solve_batch(tasks)
    rows, last = method.final_inputs
    assert [a.extra["round"] for a in together[0].agents] == [1, 1, 2, 2]
    assert together[0].agents[0].extra["latent_gist"]["solver"]          # the channel read back as tokens
    for b, task in enumerate(tasks):
        alone = method.solve_batch([task])[0]
        reference = smollm2.tokenizer.encode(alone.text, add_special_tokens=False)
        other = smollm2.tokenizer.encode(together[b].text, add_special_tokens=False)
        assert alone.text == together[b].text or _tie_at_divergence(smollm2, rows[b], last[b], reference, other)


def test_bad_input_is_one_clear_error(smollm2, tiny_system, tmp_path):
    with pytest.raises(ConfigError, match="rounds"):
        create("recursive-mas", smollm2, system=str(tiny_system), rounds=0)
    bad = tmp_path / "bad.yaml"
    bad.write_text(SYSTEM.replace("model: smollm2-135m, role: solver", "model: gpt-9, role: solver"))
    with pytest.raises(ConfigError, match="unknown model 'gpt-9'"):
        load_system(bad)
    with pytest.raises(ConfigError, match="recursa train-links"):       # no trained links in its folder
        create("recursive-mas", smollm2, system=str(tiny_system))


def test_training_lowers_loss_and_resumes(smollm2, tiny_system, tmp_path):
    spec = load_system(tiny_system)
    models = load_models(spec, smollm2)
    examples = examples_from([
        {"question": "Tom has 3 bags with 4 marbles each and loses 2. How many are left?",
         "plan": "- Multiply bags by marbles.\n- Subtract the lost ones.",
         "answer": "3 * 4 = 12, 12 - 2 = 10. \\boxed{10}"},
        {"question": "A car drives 50 km per hour for 2 hours. How far?", "plan": "- Multiply speed by time.",
         "answer": "50 * 2 = 100 km. \\boxed{100}"}], spec)
    settings = TrainSettings(rounds=2, latent_tokens=4, outer_steps=4, outer_lr=2e-3, warmup=1, checkpoint_every=2,
                             inner_epochs=2)
    first = LinkTrainer(spec, models, examples, tmp_path, TrainSettings(**{**settings.__dict__, "outer_steps": 2}))
    first.stage1()
    before = mean_loss(first.unroll, examples)
    first.stage2()                                      # stops after 2 steps, as a killed run would have
    resumed = LinkTrainer(spec, models, examples, tmp_path, settings)
    assert resumed.step == 2 and resumed.history["outer"] == first.history["outer"]
    for key, link in first.outer.items():
        assert all(torch.equal(a, b) for a, b in zip(link.state_dict().values(),
                                                     resumed.outer[key].state_dict().values(), strict=True))
    resumed.stage1()                                    # nothing left to do: inner links and the start are restored
    resumed.stage2()
    assert resumed.step == 4 and len(resumed.history["outer"]) == 4
    assert mean_loss(resumed.unroll, examples) < before
    resumed.finish()
    assert (tmp_path / "losses.png").is_file() and (tmp_path / "outer-solver-planner.safetensors").is_file()


def test_inner_link_starts_at_the_scale_of_the_input_embeddings(smollm2):
    ids = smollm2.chat_ids([{"role": "user", "content": "Plan: multiply the bags by the marbles, then subtract."}])
    x, y = inner_pairs(smollm2, [ids[:8]], [ids[8:]])
    x, y, link = x.clone(), y.clone(), InnerLink(smollm2.hidden_size)
    with torch.no_grad():
        default_ratio = link(x).norm(dim=-1).mean() / y.norm(dim=-1).mean()
        train_inner(link, x, y, epochs=0, lr=1e-3)          # no step: only the start
        ratio = link(x).norm(dim=-1).mean() / y.norm(dim=-1).mean()
    assert default_ratio > 5 and 0.5 < ratio < 2, (default_ratio, ratio)


def test_ridge_bridge_beats_random_start_on_held_out_text(smollm2, qwen):
    x, y = text_pairs(smollm2, qwen, TEXTS[:8])
    hx, hy = text_pairs(smollm2, qwen, TEXTS[8:])
    torch.manual_seed(0)
    random_start = regression_error(OuterLink(576, 896), hx, hy)
    bridge = regression_error(ridge_bridge(OuterLink(576, 896), x, y), hx, hy)
    assert bridge["relative_mse"] < random_start["relative_mse"]
    assert bridge["cosine"] > random_start["cosine"] + 0.1


def test_patterns_wire_the_loop(tmp_path):
    three = tmp_path / "three.yaml"
    three.write_text(SYSTEM.replace("  - {name: solver", "  - {name: critic, model: smollm2-135m, role: critic}\n"
                                    "  - {name: solver"), encoding="utf-8")
    spec = load_system(three)
    assert spec.edges() == [("planner", "critic", "same"), ("critic", "solver", "same"), ("solver", "planner", "next")]
    mixture = tmp_path / "mixture.yaml"
    mixture.write_text(SYSTEM.replace("sequential", "mixture").replace("role: planner", "role: expert")
                       .replace("role: solver", "role: summarizer")
                       .replace("  - {name: solver", "  - {name: other, model: smollm2-135m, role: expert}\n"
                                "  - {name: solver"), encoding="utf-8")
    spec = load_system(mixture)
    assert spec.stages() == [["planner", "other"], ["solver"]]
    assert ("solver", "other", "next") in spec.edges() and spec.label("other") == "Expert (other)"


def test_text_baseline_feeds_the_solver_text_back(smollm2, tiny_system):
    answer = create("recursive-text-mas", smollm2, system=str(tiny_system), max_tokens=6).solve(Task(question="2+3?"))
    planner = [a for a in answer.agents if a.role == "planner"]
    assert [a.extra["round"] for a in answer.agents] == [1, 1, 2, 2]
    assert planner[1].prompt_tokens > planner[0].prompt_tokens          # round 2 reads the solver's round-1 text
    assert answer.usage["completion_tokens"] == sum(a.completion_tokens for a in answer.agents) > 0


def test_training_and_evaluation_share_no_template():
    from recursa.link_data import gsm_symbolic_split

    train, held_out = gsm_symbolic_split("train", 30), gsm_symbolic_split("eval", 10)
    assert len(train) == 30 and len(held_out) == 10
    assert not {t.meta["template"] for t in train} & {t.meta["template"] for t in held_out}
    assert not {t.question for t in train} & {t.question for t in held_out}
