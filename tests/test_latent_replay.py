"""`latent-mas --decoder vllm` without vLLM: the input tape rebuilds the working memory, and the final decode sent
as `prompt_embeds` over HTTP (to a stand-in of vLLM's /v1/completions that decodes with the same local model)
gives the local decode's greedy text (up to a bf16 tie). The real vLLM server is checked in test_vllm_engine.py."""

import base64
import io
from dataclasses import dataclass

import pytest
import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from recursa.core.errors import ConfigError
from recursa.latent.replay import InputTape
from recursa.methods.base import Task
from recursa.methods.latent_mas import LatentMAS
from recursa.models.invariance import diverges_only_at_a_tie
from recursa.models.openai_compat import OpenAIChatModel, encode_prompt_embeds
from recursa.server import ServerThread

TASKS = [Task("a", "A farmer has 3 pens with 4 sheep each. How many sheep?", "12", {}),
         Task("b", "What is 9 + 10?", "19", {})]
OPTIONS = dict(latent_steps=3, max_tokens=20)


def load(payload: str) -> torch.Tensor:
    return torch.load(io.BytesIO(base64.b64decode(payload, validate=True)), weights_only=True)


def greedy_from_embeds(model, sequence: torch.Tensor, max_tokens: int, stop_ids: set[int]) -> list[int]:
    """Decode greedily from input embeddings [T, H] alone (what a prompt_embeds server does)."""
    state = model.new_state(1)
    hidden = model.prefill_embeds(state, [sequence])
    tokens: list[int] = []
    for _ in range(max_tokens):
        token = int(model.logits(hidden)[0].float().argmax())
        if token in stop_ids:
            break
        tokens.append(token)
        hidden = model.step_ids(state, torch.tensor([token]))
    return tokens


def embeds_server(model, seen: list[dict]) -> FastAPI:
    """/v1/completions that reads `prompt_embeds` as vLLM 0.32 does (vllm/renderers/embed_utils.py)."""
    app = FastAPI()

    @app.post("/v1/completions")
    async def complete(request: Request):
        body = await request.json()
        seen.append(body)
        if not body.get("prompt_embeds") or body.get("prompt") not in (None, []):
            return JSONResponse({"error": {"message": "send prompt_embeds and no prompt"}}, status_code=400)
        tensor = load(body["prompt_embeds"])
        assert tensor.dim() == 2 and tensor.shape[1] == model.hidden_size
        tokens = greedy_from_embeds(model, tensor.to(model.dtype), body["max_tokens"], set(body["stop_token_ids"]))
        return {"id": "c", "object": "text_completion", "created": 0, "model": body["model"],
                "choices": [{"index": 0, "text": model.detokenize(tokens), "logprobs": None,
                             "finish_reason": "length" if len(tokens) == body["max_tokens"] else "stop"}],
                "usage": {"prompt_tokens": tensor.shape[0], "completion_tokens": len(tokens),
                          "total_tokens": tensor.shape[0] + len(tokens)}}

    return app


@dataclass
class Memory:
    """The team's working memory for TASKS, built once: the local decode from it, and the tape of its inputs."""
    state_length: list[int]
    memory: list[torch.Tensor]          # [T_row, H] inputs of the memory alone, per row
    final_ids: list[list[int]]
    local: list                         # Completions decoded locally from the handed-over cache
    sequences: list[torch.Tensor]       # memory + final prompt, per row


@pytest.fixture(scope="module")
def built(qwen):
    method = LatentMAS(qwen, **OPTIONS)
    tape = InputTape(qwen, len(TASKS))
    state, agents = method.build_memory(TASKS, tape)
    positions = [sum(a.extra["agent_positions"] for a in row) for row in agents]
    assert positions == [int(p) for p in state.real_positions()]
    memory = [seq.clone() for seq in tape.sequences()]
    final_ids = method.final_prompt_ids(TASKS, state)
    local = qwen.decode(state, final_ids, method.sampling)
    tape.add_tokens(final_ids)
    return Memory(positions, memory, final_ids, local, tape.sequences())


def same_or_tie(model, built, row, tokens) -> bool:
    """`tokens` equal the local decode of `row`, or part from it only at a bf16 tie (read on the replayed memory)."""
    state = model.new_state(1)
    model.prefill_embeds(state, [built.memory[row]])
    return diverges_only_at_a_tie(model, built.final_ids[row], built.local[row].token_ids, tokens, state=state)


def test_the_tape_holds_exactly_the_memorys_inputs(qwen, built):
    for row, sequence in enumerate(built.memory):       # prompts + latents of every agent, no padding
        assert sequence.shape == (built.state_length[row], qwen.hidden_size) and sequence.dtype == qwen.dtype
    assert [s.shape[0] for s in built.sequences] == [len(m) + len(f) for m, f in zip(built.memory,
                                                                                     built.final_ids, strict=True)]


def test_a_replayed_tape_decodes_like_the_handed_over_cache(qwen, built):
    for row, sequence in enumerate(built.sequences):
        tokens = greedy_from_embeds(qwen, sequence, OPTIONS["max_tokens"], set(qwen.eos_set))
        assert tokens == built.local[row].token_ids or same_or_tie(qwen, built, row, tokens)
    assert all(c.token_ids for c in built.local)


def test_decoder_vllm_sends_the_replay_as_prompt_embeds(qwen, built):
    seen: list[dict] = []
    with ServerThread(embeds_server(qwen, seen)) as server:
        remote = LatentMAS(qwen, decoder="vllm", decoder_url=server.url, **OPTIONS)
        answers = remote.solve_batch(TASKS)
        remote.remote_decoder().close()
    for row, answer in enumerate(answers):
        assert answer.text == built.local[row].text or same_or_tie(qwen, built, row, seen_tokens(qwen, answer.text))
    assert len(seen) == 2 and all(body["stop_token_ids"] == sorted(qwen.eos_set) for body in seen)
    # the server got every position the final agent reads, the memory and its own prompt, and said so in usage
    assert sorted(load(body["prompt_embeds"]).shape[0] for body in seen) == \
        sorted(a.agents[-1].prompt_tokens for a in answers) == sorted(s.shape[0] for s in built.sequences)
    assert all(body["temperature"] == 0 and body["max_tokens"] == OPTIONS["max_tokens"] for body in seen)


def seen_tokens(model, text: str) -> list[int]:
    return model.tokenizer.encode(text, add_special_tokens=False)


def test_decoder_vllm_needs_a_replayable_transfer_and_a_server(smollm2, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="transfer full or none, not latent-only"):
        LatentMAS(smollm2, decoder="vllm", transfer="latent-only")
    LatentMAS(smollm2, decoder="vllm", transfer="none")
    monkeypatch.setenv("RECURSA_HOME", str(tmp_path))              # no engine records here
    from recursa.core import config

    config.settings.cache_clear()
    with pytest.raises(ConfigError, match="no running vLLM engine serves smollm2-135m.*recursa engine start"):
        LatentMAS(smollm2, decoder="vllm", **OPTIONS).solve_batch(TASKS[:1])


def test_prompt_embeds_encoding_is_what_vllm_loads():
    table = torch.randn(1000, 64, dtype=torch.bfloat16)
    view = table[10:13]                                   # a view: only its rows may travel
    payload = encode_prompt_embeds(view)
    loaded = load(payload)
    assert torch.equal(loaded, view) and loaded.dtype == torch.bfloat16
    assert len(payload) < 4 * 3 * 64 * 2 + 2000         # not the whole 1000-row storage
    with pytest.raises(ValueError, match=r"\[T, H\] floating"):
        encode_prompt_embeds(torch.zeros(1, 2, 3))
    assert OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1").complete_embeds([], None) == []
