"""Against a real vLLM server (the CPU build here), started once for these tests with `recursa engine`'s own code
(`--enforce-eager`: ~45 s instead of ~2 min; 1 GiB of KV cache) on the embedded 0.5B, and stopped at the end. An
engine already started with `recursa engine start vllm` for that model is used instead of a new one.

They skip, with the reason, only where vLLM cannot be installed or the machine has too little memory for it; a
server that fails to start fails them.
"""

import socket
import time
from pathlib import Path

import openai
import pytest
import torch

from recursa.core.trace import Tracer
from recursa.engine import vllm
from recursa.engine.install import EngineError, ensure_installed, vllm_build
from recursa.methods.base import Task
from recursa.methods.latent_mas import LatentMAS
from recursa.methods.text_mas import TextMAS
from recursa.models import engines, registry
from recursa.models.base import Sampling
from recursa.models.invariance import diverges_only_at_a_tie
from recursa.models.openai_compat import OpenAIChatModel

pytestmark = pytest.mark.vllm
MODEL = "qwen2.5-coder-0.5b"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def engine():
    """(base URL, seconds the start took); the server is stopped after the module if these tests started it."""
    running = engines.find_running(MODEL)
    if running is not None and vllm.answers(f"http://{running.host}:{running.port}/health"):
        yield running.base_url, 0.0
        return
    build = vllm_build()
    folder = registry.resolve_path(MODEL)
    options = vllm.VllmOptions(port=_free_port(), kv_cache_gib=1.0, max_model_len=4096, enforce_eager=True,
                               start_timeout=900)
    try:
        vllm.check_memory(folder, build.device, options.kv_cache_gib, vllm.available_memory())
        ensure_installed(build, print)
    except EngineError as exc:       # the machine cannot run it: say why, once, for every test here
        pytest.skip(f"vLLM cannot run here: {exc}")
    started = time.perf_counter()
    record = vllm.start(build, folder, MODEL, options, say=print)
    try:
        yield record.base_url, time.perf_counter() - started
    finally:
        vllm.stop(record)
        assert not engines.is_alive(record.pid)
    Path(record.log).unlink()                 # stopped cleanly: its log is not needed (a failed start keeps it)


@pytest.fixture(scope="module")
def remote(engine):
    with OpenAIChatModel(MODEL, base_url=engine[0], max_retries=1) as model:
        yield model


def chat(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def test_chat_with_n_choices(engine):
    client = openai.OpenAI(base_url=engine[0], api_key="unused")
    sampled = client.chat.completions.create(model=MODEL, messages=chat("Name a colour. One word."), n=4,
                                             temperature=1.0, seed=1, max_tokens=6)
    assert [c.index for c in sampled.choices] == [0, 1, 2, 3] and all(c.message.content for c in sampled.choices)
    assert sampled.usage.completion_tokens >= 4
    with pytest.raises(openai.BadRequestError, match="n must be 1 when using greedy sampling"):
        client.chat.completions.create(model=MODEL, messages=chat("Hi"), n=2, temperature=0, max_tokens=2)
    greedy = client.chat.completions.create(model=MODEL, messages=chat("What is 12*7? Answer with a number."),
                                            temperature=0, max_tokens=8)
    assert "84" in greedy.choices[0].message.content
    client.close()


def test_usage_accounting_in_the_openai_backend(remote, qwen, tmp_path):
    batch = [chat("What is 12*7? Answer with a number."), chat("Count from 1 to 30, comma separated.")]
    with Tracer.start(runs_dir=tmp_path) as tracer:
        completions = remote.generate(batch, Sampling(max_tokens=12))
    # exact: the server's tokenizer and chat template are the model folder's, as the local backend's
    assert [c.prompt_tokens for c in completions] == [len(qwen.chat_ids(conv)) for conv in batch]
    assert completions[1].finish_reason == "length" and completions[1].completion_tokens == 12
    assert completions[0].finish_reason == "stop" and "84" in completions[0].text
    assert completions[0].completion_tokens == len(qwen.tokenizer.encode(completions[0].text)) + 1   # + end of turn
    assert tracer.totals.model_calls == 2
    assert tracer.totals.prompt_tokens == sum(c.prompt_tokens for c in completions)
    assert tracer.totals.completion_tokens == sum(c.completion_tokens for c in completions)
    assert '"usage_estimated": false' in tracer.path.read_text()
    served = openai.OpenAI(base_url=remote.base_url, api_key="unused").models.list().data[0]
    assert remote.context_window == served.model_extra["max_model_len"] in (4096, 8192)   # read from /v1/models


def test_text_mas_runs_on_vllm(remote):
    answer = TextMAS(remote, max_tokens=48).run("What is 17*23? Give the number.")
    assert [a.role for a in answer.agents] == ["planner", "critic", "refiner", "judger"]
    assert all(a.text and a.prompt_tokens > 0 and 0 < a.completion_tokens <= 48 for a in answer.agents)
    assert answer.usage["model_calls"] == 4 and answer.text == answer.agents[-1].text


def test_prompt_embeds_decode_equals_the_local_decode(engine, qwen):
    tasks = [Task("a", "A farmer has 3 pens with 4 sheep each. How many sheep?", "12", {}),
             Task("b", "What is 9 + 10?", "19", {})]
    options = dict(latent_steps=3, max_tokens=24)
    method = LatentMAS(qwen, **options)
    state, _ = method.build_memory(tasks)
    final_ids = method.final_prompt_ids(tasks, state)
    alone = [state.copy() for _ in tasks]      # one-row memories for the tie check, taken before decode consumes it
    local = qwen.decode(state, final_ids, method.sampling)
    remote = LatentMAS(qwen, decoder="vllm", decoder_url=engine[0], **options)
    answers = remote.solve_batch(tasks)
    remote.remote_decoder().close()
    for row, (answer, completion) in enumerate(zip(answers, local, strict=True)):
        if answer.text != completion.text:     # vLLM's kernels round differently: allowed only at a bf16 tie
            other = qwen.tokenizer.encode(answer.text, add_special_tokens=False)
            memory = alone[row]
            memory.select_rows(torch.tensor([row]))
            assert diverges_only_at_a_tie(qwen, final_ids[row], completion.token_ids, other, state=memory), \
                (answer.text, completion.text)
    assert sum(a.text == c.text for a, c in zip(answers, local, strict=True)) >= 1
    assert all(a.agents[-1].prompt_tokens > a.agents[-1].extra["memory_positions"] for a in answers)
