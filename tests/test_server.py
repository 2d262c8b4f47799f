"""`recursa serve` driven by the official openai client, on a real model (SmolLM2-135M: the server's behaviour does
not depend on the model's size)."""

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import openai
import pytest
from conftest import diverges_only_at_a_tie
from server_support import openai_client, running_server, stats, user

from recursa.models.base import Sampling

MODEL = "smollm2-135m"
PROMPTS = ["What is 12*7? Answer with a number.", "Name a colour.",
           "Write one short sentence about rivers and the sea.", "hi"]



@pytest.fixture(scope="module")
def server(smollm2):
    with running_server(smollm2, max_batch=8) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai_client(server)


def test_models_lists_the_served_model(client, smollm2):
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    assert models[0].model_extra["max_model_len"] == smollm2.context_window


def test_n_choices_and_usage_match_the_local_backend(client, smollm2):
    reply = client.chat.completions.create(model=MODEL, messages=user(PROMPTS[0]), n=3, max_tokens=8,
                                           temperature=0)
    local = smollm2.generate([user(PROMPTS[0])], Sampling(max_tokens=8))[0]
    assert [c.index for c in reply.choices] == [0, 1, 2]
    assert all(c.message.content == local.text for c in reply.choices)
    assert reply.usage.prompt_tokens == len(smollm2.chat_ids(user(PROMPTS[0]))) == local.prompt_tokens
    assert reply.usage.completion_tokens == 3 * local.completion_tokens
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens

    sampled = client.chat.completions.create(model=MODEL, messages=user("Say a random word."), n=2, max_tokens=5,
                                             max_completion_tokens=4, temperature=1.0, top_p=0.9, seed=7)
    assert len(sampled.choices) == 2
    assert 2 <= sampled.usage.completion_tokens <= 8  # max_completion_tokens wins over max_tokens
    again = client.chat.completions.create(model=MODEL, messages=user("Say a random word."), n=2, max_tokens=5,
                                           max_completion_tokens=4, temperature=1.0, top_p=0.9, seed=7)
    assert [c.message.content for c in again.choices] == [c.message.content for c in sampled.choices]


def test_stop_strings_cut_the_text(client):
    messages = user("Count from 1 to 10, separated by commas. Only the numbers.")
    full = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24, temperature=0)
    assert "5" in full.choices[0].message.content
    cut = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24, temperature=0, stop=["5"])
    text = cut.choices[0].message.content
    assert "5" not in text and full.choices[0].message.content.startswith(text)
    assert cut.choices[0].finish_reason == "stop"
    assert cut.usage.completion_tokens < full.usage.completion_tokens


def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(client, server, smollm2):
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="no-such-model", messages=user("hi"), max_tokens=2)
    assert unknown.value.code == "model_not_found"

    with pytest.raises(openai.BadRequestError) as too_long:
        client.chat.completions.create(model=MODEL, messages=user("hi"), max_tokens=smollm2.context_window)
    assert too_long.value.code == "context_length_exceeded"
    assert "maximum context length" in too_long.value.message
    with pytest.raises(openai.BadRequestError) as too_long_stream:   # refused before the stream starts
        client.chat.completions.create(model=MODEL, messages=user("hi"), max_tokens=smollm2.context_window,
                                       stream=True)
    assert too_long_stream.value.code == "context_length_exceeded"

    with pytest.raises(openai.BadRequestError) as bad_param:
        client.chat.completions.create(model=MODEL, messages=user("hi"), temperature=5)
    assert bad_param.value.body["param"] == "temperature"

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model=MODEL, messages=user("hi"), n=9)  # above --max-batch 8

    raw = httpx.post(server.url + "/chat/completions", content=b'{"model": "x", "messages": [',
                     headers={"content-type": "application/json"})
    assert raw.status_code == 400
    error = raw.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_json"

    assert httpx.get(server.url + "/nowhere").json()["error"]["code"] == "404"
    still = client.chat.completions.create(model="smollm2", messages=user(PROMPTS[0]), max_tokens=4, temperature=0)
    assert still.choices[0].message.content and still.model == MODEL


def test_recursa_serve_command_starts_a_server(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [sys.executable, "-m", "recursa.cli", "serve", "--model", "smollm2", "--port", str(port),
               "--max-batch", "4", "--weights", "int8"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "RECURSA_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()
            try:
                models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=2).json()
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "recursa serve did not come up within 120 s"
                time.sleep(0.25)
        assert models["data"][0]["id"] == MODEL
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", timeout=60, json={
            "model": MODEL, "messages": user("hi"), "max_tokens": 3, "temperature": 0, "ignore_eos": True}).json()
        assert reply["usage"]["completion_tokens"] == 3
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_conversation_growing_over_requests_reuses_its_cached_prefix(client, smollm2):
    system = {"role": "system", "content": "You label records. " + "Each record has an id, a user and a label. " * 30}
    first = [system, {"role": "user", "content": "Name one label."}]
    reply = client.chat.completions.create(model=MODEL, messages=first, max_tokens=6, temperature=0)
    follow = first + [{"role": "assistant", "content": reply.choices[0].message.content},
                      {"role": "user", "content": "Another one?"}]
    again = client.chat.completions.create(model=MODEL, messages=follow, max_tokens=6, temperature=0)
    cached = again.usage.prompt_tokens_details.cached_tokens
    assert 256 <= cached < again.usage.prompt_tokens == len(smollm2.chat_ids(follow))
    fresh = smollm2.decode(smollm2.new_state(1), [smollm2.chat_ids(follow)], Sampling(max_tokens=6))[0]
    reused = smollm2.tokenizer.encode(again.choices[0].message.content, add_special_tokens=False)
    # the reused cache was prefilled at another padding than a fresh prompt: equal up to a bf16 tie
    assert diverges_only_at_a_tie(smollm2, smollm2.chat_ids(follow), fresh.token_ids, reused)


def test_interleaved_conversations_each_reuse_their_own_prefix(client):
    def opening(topic):
        return [{"role": "system", "content": f"You answer questions about {topic}. " + "Be brief and exact. " * 60},
                {"role": "user", "content": f"Name one fact about {topic}."}]

    turns = {topic: opening(topic) for topic in ("rivers", "glaciers", "deserts")}
    for messages in turns.values():       # every conversation's first turn, one after the other
        reply = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5, temperature=0)
        messages += [{"role": "assistant", "content": reply.choices[0].message.content},
                     {"role": "user", "content": "And another?"}]
    for messages in turns.values():       # their second turns: each finds its own conversation, not the last one
        again = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=5, temperature=0)
        assert 256 <= again.usage.prompt_tokens_details.cached_tokens < again.usage.prompt_tokens


def test_a_failing_step_fails_its_requests_and_the_server_keeps_serving(client, server, smollm2, monkeypatch):
    real_step = smollm2.step_ids
    calls = []

    def failing_once(state, ids):
        calls.append(len(calls))
        if len(calls) == 2:
            raise RuntimeError("simulated kernel failure")
        return real_step(state, ids)

    monkeypatch.setattr(smollm2, "step_ids", failing_once)
    with pytest.raises(openai.InternalServerError, match="simulated kernel failure"):
        client.chat.completions.create(model=MODEL, messages=user(PROMPTS[1]), max_tokens=8, temperature=0,
                                       extra_body={"ignore_eos": True})
    assert stats(server)["decoding_rows"] == 0

    real_logits = smollm2.logits            # a failure while choosing a request's first token (it joins the batch)

    def failing_first_token(hidden):
        raise RuntimeError("simulated failure at the first token")

    monkeypatch.setattr(smollm2, "logits", failing_first_token)
    with pytest.raises(openai.InternalServerError, match="first token"):
        client.with_options(timeout=60).chat.completions.create(model=MODEL, messages=user(PROMPTS[3]),
                                                                max_tokens=4, temperature=0)
    monkeypatch.setattr(smollm2, "logits", real_logits)
    after = client.chat.completions.create(model=MODEL, messages=user(PROMPTS[1]), max_tokens=4, temperature=0,
                                           extra_body={"ignore_eos": True})
    assert after.usage.completion_tokens == 4


def test_response_format_json_schema_constrains_the_reply(client, smollm2):
    schema = {"type": "object", "additionalProperties": False, "required": ["city", "rivers"],
              "properties": {"city": {"type": "string", "maxLength": 12}, "rivers": {"type": "integer"}}}
    question = user("Tell me about a city you like.")        # asks for prose: the grammar alone makes it JSON
    plain = client.chat.completions.create(model=MODEL, messages=question, max_tokens=40, temperature=0)
    with pytest.raises(ValueError):
        json.loads(plain.choices[0].message.content)
    fmt = {"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}}
    for stream in (False, True):
        if stream:
            chunks = client.chat.completions.create(model=MODEL, messages=question, max_tokens=60, temperature=0,
                                                    response_format=fmt, stream=True)
            text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        else:
            reply = client.chat.completions.create(model=MODEL, messages=question, max_tokens=60, temperature=0,
                                                   response_format=fmt, n=2)
            assert reply.choices[0].message.content == reply.choices[1].message.content
            text = reply.choices[0].message.content
        value = json.loads(text)
        assert set(value) == {"city", "rivers"} and isinstance(value["rivers"], int) and len(value["city"]) <= 12
    any_object = client.chat.completions.create(model=MODEL, messages=question, max_tokens=60, temperature=0,
                                                response_format={"type": "json_object"})
    assert isinstance(json.loads(any_object.choices[0].message.content), dict)

    for bad in ({"type": "json_schema"}, {"type": "json_schema", "json_schema": {"schema": {"type": "nonsense"}}},
                {"type": "yaml"}):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model=MODEL, messages=question, max_tokens=4, response_format=bad)
        assert refused.value.body["param"] == "response_format" or "response_format" in refused.value.message


def test_the_openai_backend_without_a_model_name_takes_the_one_the_server_serves(server):
    from recursa.cli import load_chat_model

    assert load_chat_model(None, "openai", server.url).name == MODEL
