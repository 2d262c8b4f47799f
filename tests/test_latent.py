"""LatentMAS on real weights: realignment maths, latent rollout, working-memory transfer, batch invariance."""

import pytest
import torch
from conftest import diverges_only_at_a_tie

from recursa.core.errors import ConfigError
from recursa.latent.align import Aligner, compute_realignment, ridge_map
from recursa.latent.rollout import hand_over, latent_rollout
from recursa.methods.base import Task, create
from recursa.methods.prompts import load_team
from recursa.models.base import Sampling

PROBLEMS = [
    "A shop sells pens at 3 dollars each. Tom buys 4 pens and pays with a 20 dollar bill. How much change does he get?",
    "Sara has 5 boxes with 6 apples each. She eats 4 apples. How many apples are left?",
    "A train travels 60 km per hour for 3 hours. How far does it go?",
    "Ben had 50 dollars. He spent 12 dollars on a book and half of the rest on lunch. How much does he have now?",
]


def _lstsq_ridge(w_in: torch.Tensor, w_out: torch.Tensor, ridge: float) -> torch.Tensor:
    """Independent solve in fp64: min ‖[W_out; √λ I] W − [W_in; 0]‖ by QR (no normal equations)."""
    a, b = w_out.double(), w_in.double()
    lam = ridge * (a * a).sum() / a.shape[1]
    eye = torch.eye(a.shape[1], dtype=torch.float64)
    return torch.linalg.lstsq(torch.cat([a, lam.sqrt() * eye]), torch.cat([b, torch.zeros_like(eye)])).solution


def test_ridge_map_equals_least_squares_on_real_embeddings(qwen):
    rows = torch.randperm(qwen.output_embedding_matrix().shape[0], generator=torch.Generator().manual_seed(0))[:6000]
    w_in = qwen.input_embedding_matrix()[rows].detach()
    w_out = qwen.output_embedding_matrix()[rows].detach()
    for ridge in (1e-5, 1e-1):  # a negligible and a strong ridge both match the independent solve
        ours, reference = ridge_map(w_in, w_out, ridge), _lstsq_ridge(w_in, w_out, ridge).float()
        assert (ours - reference).norm() / reference.norm() < 2e-3, ridge
    strong, weak = ridge_map(w_in, w_out, 1e-1), ridge_map(w_in, w_out, 1e-5)
    assert strong.norm() < weak.norm()  # the ridge shrinks


def test_full_realignment_is_the_least_squares_optimum_and_cached(qwen):
    realignment = compute_realignment(qwen)
    w_in = qwen.input_embedding_matrix().detach().float()
    w_out = qwen.output_embedding_matrix().detach().float()
    # Normal equations of the ridge problem: W_outᵀ(W_out W_a − W_in) + λ W_a = 0.
    lam = realignment.ridge * (w_out * w_out).sum() / w_out.shape[1]
    gradient = w_out.T @ (w_out @ realignment.matrix - w_in) + lam * realignment.matrix
    assert gradient.norm() / (w_out.T @ w_in).norm() < 1e-3
    again = compute_realignment(qwen)  # served from the disk cache, keyed by the weights
    assert again.weights_digest == realignment.weights_digest and torch.equal(again.matrix, realignment.matrix)
    assert abs(realignment.target_norm - w_in.norm(dim=-1).mean().item()) < 1e-3


def test_tied_embeddings_give_identity(smollm2):
    assert smollm2.config.tie_word_embeddings
    realignment = compute_realignment(smollm2)
    assert realignment.distance_to_identity() < 1e-3


def test_aligner_modes(qwen):
    hidden = torch.randn(3, qwen.hidden_size) * 100
    realignment = compute_realignment(qwen)
    assert torch.equal(Aligner.for_model(qwen, "none")(hidden), hidden)
    for mode in ("norm", "ridge+norm"):
        norms = Aligner.for_model(qwen, mode)(hidden).norm(dim=-1)
        assert torch.allclose(norms, torch.full((3,), realignment.target_norm), rtol=1e-4), mode
    ridge_only = Aligner.for_model(qwen, "ridge")(hidden)
    assert torch.allclose(ridge_only, hidden @ realignment.matrix)


def test_soft_realignment_is_the_expected_token_embedding(qwen):
    state = qwen.new_state(2)
    hidden = qwen.prefill(state, [qwen.chat_ids([{"role": "user", "content": q}]) for q in SHORT[:2]])
    table = qwen.input_embedding_matrix().float()
    logits = qwen.logits(hidden).float()
    cold = Aligner("soft", model=qwen, temperature=1e-4)(hidden)           # all weight on the top token(s)
    for row in range(2):  # bf16 logits often tie: the weight is shared equally among the tied top tokens
        tied = (logits[row] == logits[row].max()).nonzero().flatten()
        assert torch.allclose(cold[row], table[tied].mean(0), atol=1e-6)
    warm = Aligner.for_model(qwen, "soft")(hidden)                           # a convex mix of 16 token embeddings
    top = qwen.logits(hidden).float().topk(16, dim=-1)
    weights = torch.softmax(top.values, dim=-1)
    assert torch.allclose(warm, torch.einsum("bk,bkh->bh", weights, table[top.indices]), atol=1e-5)
    assert not torch.allclose(warm, cold)
    with pytest.raises(ConfigError, match="needs the model"):
        Aligner("soft")


def test_cache_grows_by_prompt_plus_steps_and_nothing_is_sampled(qwen, monkeypatch):
    sampled = []
    monkeypatch.setattr(qwen, "logits", lambda hidden: sampled.append(hidden) or torch.zeros(1))
    team, steps = load_team("sequential"), 5
    state, aligner = qwen.new_state(1), Aligner.for_model(qwen, "ridge+norm")
    for role in team.workers:
        ids = [qwen.chat_ids(role.messages(PROBLEMS[0]))]
        before = int(state.mask.sum())   # real positions (the backend may add masked padding columns)
        rollout = latent_rollout(qwen, state, ids, steps, aligner)
        assert int(state.mask.sum()) == before + len(ids[0]) + steps == int(state.next_pos[0])
        assert rollout.end - rollout.latent_start == steps and state.length == rollout.end
        state = hand_over(qwen, state, rollout, "full")
    assert sampled == []  # the LM head never ran before the final agent


def test_transfer_modes_keep_the_right_positions(qwen):
    aligner, steps = Aligner.for_model(qwen, "ridge+norm"), 3
    first, second = ([qwen.chat_ids(r.messages(PROBLEMS[1]))] for r in load_team("sequential").workers[:2])
    for transfer, expected in (("full", len(first[0]) + len(second[0]) + 2 * steps),
                               ("own-only", len(second[0]) + steps), ("latent-only", steps), ("none", 0)):
        state = qwen.new_state(1)
        state = hand_over(qwen, state, latent_rollout(qwen, state, first, steps, aligner), "full")
        state = hand_over(qwen, state, latent_rollout(qwen, state, second, steps, aligner), transfer)
        assert int(state.mask.sum()) == expected, transfer
        assert state.nbytes() == 0 if expected == 0 else state.nbytes() > 0
        if transfer != "none":  # positions are not reset: kept keys keep their RoPE phases
            assert int(state.next_pos[0]) == len(first[0]) + len(second[0]) + 2 * steps


def test_latent_gist_reads_each_thought_as_its_top_token(qwen):
    # The first thought is the hidden state after the prompt: its top token is the first token the agent would
    # have written as text. Soft records the gist by default (free); ridge+norm only when asked (a head matmul).
    planner = load_team("sequential").workers[0]
    first_word = qwen.generate([planner.messages(PROBLEMS[2], latent=True)], Sampling(max_tokens=1))[0].token_ids
    for realign, gist in (("soft", None), ("ridge+norm", True)):
        answer = create("latent-mas", qwen, latent_steps=3, realign=realign, gist=gist, max_tokens=1).solve(
            Task("t", PROBLEMS[2]))
        planner_gist = answer.agents[0].extra["latent_gist"]
        assert qwen.tokenizer.encode(planner_gist, add_special_tokens=False)[:1] == first_word, realign
        assert all(a.extra.get("latent_gist") for a in answer.agents[:-1])
        assert "latent_gist" not in answer.agents[-1].extra          # the final agent decodes real text
    plain = create("latent-mas", qwen, latent_steps=3, realign="ridge+norm", max_tokens=1).solve(Task("t", "Hi"))
    assert all("latent_gist" not in a.extra for a in plain.agents)


SHORT = ["What is 7 times 8, minus 5?", "Tom has 12 eggs and uses 5. How many are left?",
         "A pen costs 3 dollars. What do 6 pens cost?", "What is half of 90, plus 4?"]


def test_latent_mas_batch_equals_each_alone(qwen):
    # The default (soft) map. Short problems keep the cache under 512 columns. A row's final tokens alone and in the
    # batch may part only at a bf16 tie of its two best logits (the soft map's LM-head product rounds a row
    # differently with the row count on this CPU, so its latents are equal across batch sizes only up to
    # rounding); the margin is read on top of the row's own working memory.
    method = create("latent-mas", qwen, latent_steps=4, max_tokens=16, pattern="hierarchical")
    tasks = [Task(str(i), q) for i, q in enumerate(SHORT)]
    state, _ = method.build_memory(tasks)
    together = qwen.decode(state, method.final_prompt_ids(tasks, state), method.sampling)
    references = []
    for task, batched in zip(tasks, together, strict=True):
        alone, _ = method.build_memory([task])
        prompt = method.final_prompt_ids([task], alone)[0]
        reference = qwen.decode(alone.copy(), [prompt], method.sampling)[0].token_ids
        assert diverges_only_at_a_tie(qwen, prompt, reference, batched.token_ids, state=alone), task.question
        references.append((prompt, reference, alone))
    prompt, reference, alone = references[0]   # the check is sharp: a reply that differs where the model is sure
    assert not diverges_only_at_a_tie(qwen, prompt, reference, [reference[0] + 1] + reference[1:], state=alone)
    answers = method.solve_batch(tasks)        # solve_batch is this path: every worker thinks, only the last decodes
    assert [a.text for a in answers] == [c.text for c in together]
    assert [[a.completion_tokens for a in answer.agents] for answer in answers] == \
        [[0, 0, 0, c.completion_tokens] for c in together]
    assert all([a.latent_steps for a in answer.agents] == [4, 4, 4, 0] for answer in answers)


def test_final_agent_reads_the_latent_positions(qwen):
    # Same prompts, same number of positions, other latent thoughts: the final agent's next-token logits change.
    method, tasks = create("latent-mas", qwen, latent_steps=4), [Task("t", PROBLEMS[0])]

    def final_logits():
        state, _ = method.build_memory(tasks)
        positions = state.real_positions()
        return qwen.logits(qwen.prefill(state, method.final_prompt_ids(tasks, state)))[0].float(), positions

    base, positions = final_logits()
    again, _ = final_logits()
    assert torch.equal(base, again)                                   # deterministic: any change is the latents'
    space = qwen.input_embedding_matrix()[qwen.tokenizer.encode(" banana")[0]].float()
    method._aligner = lambda hidden: space.expand(hidden.shape[0], -1)
    changed, changed_positions = final_logits()
    assert changed_positions == positions
    assert (changed - base).abs().max() > 0.5


def test_stacked_layout_is_a_fresh_chat_per_agent(qwen):
    # With m = 0 the memory holds only prompts: each agent's complete chat (system, user, open assistant turn)
    # after the previous one's; the final agent must answer as if given their concatenation as one prompt.
    task, team = Task("t", PROBLEMS[1]), load_team("sequential")
    answer = create("latent-mas", qwen, latent_steps=0, max_tokens=20, layout="stacked").solve(task)
    chats = [qwen.chat_ids(role.messages(task.question, "math", team.latent_note if i > 0 else "", latent=True))
             for i, role in enumerate(team.roles)]
    single = qwen.decode(qwen.new_state(1), [sum(chats, [])], Sampling(max_tokens=20))[0]
    assert answer.text == single.text and answer.agents[-1].completion_tokens == single.completion_tokens
    assert answer.agents[-1].extra["memory_positions"] == sum(len(ids) for ids in chats[:-1])
    conversation = create("latent-mas", qwen, latent_steps=0, max_tokens=1).solve(task)
    assert conversation.agents[-1].extra["memory_positions"] != answer.agents[-1].extra["memory_positions"]


def test_paper_preset_is_the_official_configuration_and_explicit_options_win():
    from recursa.methods.latent_mas import LatentMAS

    def build(**options):
        return LatentMAS.Config.build("latent-mas", options)

    paper = build(preset="paper")
    assert (paper.realign, paper.layout, paper.transfer, paper.latent_steps, paper.prompts) == \
        ("ridge+norm", "stacked", "full", 10, "shared")
    ablation = build(preset="paper", latent_steps="0")                # an explicit option wins over the preset
    assert (ablation.latent_steps, ablation.realign, ablation.layout) == (0, "ridge+norm", "stacked")
    assert build(preset="ours").model_dump(exclude={"preset"}) == build().model_dump(exclude={"preset"})
    with pytest.raises(ConfigError, match="preset must be one of ours, paper"):
        build(preset="papers")


def test_latent_prompts_replace_the_format_instructions(qwen):
    tasks, team = [Task("t", PROBLEMS[0])], load_team("sequential")
    shared, latent = (create("latent-mas", qwen, prompts=p) for p in ("shared", "latent"))
    state = qwen.new_state(1)
    for role in team.workers:   # what each worker prefills: no output format to restate in the latent prompts
        text = qwen.detokenize(latent._prompt_ids(role, tasks, "", state)[0])
        assert role.latent_instruction.split("\n")[0] in text and "Original Plan:" not in text
    assert "Original Plan:" in qwen.detokenize(shared._prompt_ids(team.workers[1], tasks, "", state)[0])
    final = qwen.detokenize(latent.final_prompt_ids(tasks, state)[0])
    assert "not to you: do not answer them" in final and "\\boxed{ANSWER}" in final


def test_m0_without_transfer_equals_single_with_the_judger_prompt(qwen):
    task = Task("t", PROBLEMS[3])
    answer = create("latent-mas", qwen, latent_steps=0, transfer="none", max_tokens=24).solve(task)
    judger = load_team("sequential").final
    single = qwen.generate([judger.messages(task.question, "math", "", latent=True)], Sampling(max_tokens=24))[0]
    assert answer.text == single.text and answer.agents[-1].completion_tokens == single.completion_tokens


def test_m0_keeps_the_working_memory(qwen):
    answer = create("latent-mas", qwen, latent_steps=0, max_tokens=1).solve(Task("t", PROBLEMS[0]))
    workers = answer.agents[:-1]
    assert answer.agents[-1].extra["memory_positions"] == sum(a.prompt_tokens for a in workers) > 0


def test_followup_ids_continue_the_chat_template(qwen):
    conversation = [{"role": "system", "content": "S"}, {"role": "user", "content": "first"},
                    {"role": "assistant", "content": "reply"}, {"role": "user", "content": "second"}]
    prefix = qwen.tokenizer.apply_chat_template(conversation[:2], tokenize=False, add_generation_prompt=True)
    whole = qwen.tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    assert qwen.tokenizer.decode(qwen.followup_ids("second")) == whole[len(prefix) + len("reply"):]


def test_conversation_layout_is_one_transcript(qwen):
    # With m = 0 the working memory holds only prompts: the final agent must answer exactly as if it were given
    # the whole multi-turn chat (each worker's assistant turn empty) in one prompt.
    task, team = Task("t", PROBLEMS[1]), load_team("sequential")
    answer = create("latent-mas", qwen, latent_steps=0, max_tokens=20, layout="conversation").solve(task)
    conversation = [{"role": "system", "content": team.roles[0].system}]
    for i, role in enumerate(team.roles):
        context = team.latent_note if role.receives_context and i > 0 else ""
        conversation.append({"role": "user", "content": role.user_prompt(task.question, "math", context, latent=True)})
        if not role.final:
            conversation.append({"role": "assistant", "content": ""})
    single = qwen.generate([conversation], Sampling(max_tokens=20))[0]
    assert answer.text == single.text and answer.agents[-1].completion_tokens == single.completion_tokens
    with pytest.raises(ConfigError, match="layout"):
        create("latent-mas", qwen, layout="sideways")


# ---- a synthetic model whose input and output embeddings are far from tied ----------------------------------------

@pytest.fixture(scope="module")
def untied(qwen):
    """A 2-layer random Qwen2 (vocab 512, H 64) with W_in = W_out · A + noise, A a random rotation scaled by 0.3.

    Our Qwen's W_a is within 0.6% of the identity, so only a model like this can tell a transposed or dropped map.
    """
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from recursa.models.hf import HFModel, make_batch_invariant

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                         max_position_embeddings=512)
    module = Qwen2ForCausalLM(config).eval()
    rotation, _ = torch.linalg.qr(torch.randn(64, 64))
    w_out = torch.randn(512, 64)
    with torch.no_grad():
        module.lm_head.weight.copy_(w_out)
        module.get_input_embeddings().weight.copy_(0.3 * w_out @ rotation + 1e-3 * torch.randn(512, 64))
    make_batch_invariant(module)
    model = HFModel(module, qwen.tokenizer, "untied-tiny")   # the tokenizer is only read for special ids
    model.pad_id, model.rotation = 0, rotation               # pads inside the small vocabulary
    return model


@pytest.fixture
def private_home(tmp_path, monkeypatch):
    from recursa.core import config

    monkeypatch.setenv("RECURSA_HOME", str(tmp_path / "home"))   # W_a's disk cache
    config.settings.cache_clear()


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1)


def test_ridge_maps_point_output_rows_at_their_input_rows(untied, private_home):
    w_in, w_out = untied.input_embedding_matrix().detach(), untied.output_embedding_matrix().detach()
    assert _cosines(w_out, w_in).abs().mean() < 0.2                         # far from tied
    realignment = compute_realignment(untied)
    assert realignment.distance_to_identity() > 0.5
    rows = w_out[:64]                                                         # "h ≈ the output row of a token"
    for mode in ("ridge", "ridge+norm"):
        mapped = Aligner.for_model(untied, mode)(rows)
        assert _cosines(mapped, w_in[:64]).min() > 0.99, mode                 # lands on that token's input row
    normed = Aligner.for_model(untied, "ridge+norm")(rows).norm(dim=-1)
    assert torch.allclose(normed, torch.full_like(normed, realignment.target_norm), rtol=1e-4)
    # the check is sharp: a transposed map or none at all points elsewhere
    for wrong in (rows @ (0.3 * untied.rotation.T), rows):
        assert _cosines(wrong, w_in[:64]).mean() < 0.3


def test_rollout_feeds_the_mapped_hidden_state(untied, private_home):
    # Each latent step's input must be W_a applied to the previous step's hidden state (not h, not h · W_aᵀ).
    aligner = Aligner.for_model(untied, "ridge+norm")
    matrix, norm = aligner.matrix, aligner.target_norm
    state = untied.new_state(2)
    rollout = latent_rollout(untied, state, [[5, 17, 99, 3], [42, 7]], 3, aligner, keep_latents=True)
    expected = rollout.hidden_states.float() @ matrix
    expected = expected * (norm / expected.norm(dim=-1, keepdim=True))
    assert torch.allclose(rollout.input_embeds, expected, atol=1e-4)
    assert _cosines(rollout.input_embeds, rollout.hidden_states).abs().max() < 0.6   # the map really turned them
