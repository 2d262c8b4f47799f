"""`recursa serve` streaming (server-sent events in the OpenAI chunk format) and cancellation of abandoned requests,
through the official openai client and raw HTTP, on SmolLM2-135M."""

import asyncio
import json
import time

import httpx
import pytest
from server_support import openai_client, record, running_server, stats

from recursa.models.sampling import StreamText

MODEL = "smollm2-135m"
COUNT = [{"role": "user", "content": "Count from 1 to 10, separated by commas. Only the numbers."}]
ENDLESS = {"ignore_eos": True}   # vLLM's extension: decode all max_tokens tokens


@pytest.fixture(scope="module")
def server(smollm2):
    with running_server(smollm2, max_batch=8) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai_client(server)


def wait_until(condition, timeout=120):
    """Poll a condition (a state the server must reach; the timeout only keeps a broken server from hanging)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "the server never reached the expected state"
        time.sleep(0.05)


def test_stream_chunks_follow_the_openai_format(client):
    plain = client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=24, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=24, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].id.startswith("chatcmpl-")
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    *body, last = chunks
    assert body[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content or "" for c in body]
    assert sum(1 for p in pieces if p) > 3                       # the text arrives token by token
    assert "".join(pieces) == plain.choices[0].message.content
    finishes = [c.choices[0].finish_reason for c in body]
    assert finishes[-1] == plain.choices[0].finish_reason and not any(finishes[:-1])
    assert last.choices == [] and all(c.usage is None for c in body)   # usage only in the last chunk
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == \
        (plain.usage.prompt_tokens, plain.usage.completion_tokens, plain.usage.total_tokens)


def test_raw_events_end_with_done_and_carry_no_usage_unless_asked(server):
    request = {"model": MODEL, "messages": COUNT, "max_tokens": 6, "temperature": 0, "stream": True}
    with httpx.stream("POST", server.url + "/chat/completions", json=request, timeout=120) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines) and lines[-1] == "data: [DONE]"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    assert all("usage" not in event and len(event["choices"]) == 1 for event in events)


def test_streamed_choices_with_a_stop_string_equal_the_plain_reply(client):
    settings = {"model": MODEL, "messages": COUNT, "max_tokens": 24, "temperature": 0, "stop": ["5"], "n": 2}
    plain = client.chat.completions.create(**settings)
    texts = {0: "", 1: ""}
    for chunk in client.chat.completions.create(**settings, stream=True):
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == {c.index: c.message.content for c in plain.choices}
    assert "5" not in texts[0] and plain.choices[0].finish_reason == "stop"


def test_disconnected_streams_stop_and_the_next_request_runs_alone(client, server):
    before = stats(server)
    streams = [client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": f"Story {i}."}],
                                              max_tokens=1000, temperature=0, stream=True, extra_body=ENDLESS)
               for i in range(3)]
    abandoned = []
    for stream in streams:
        chunks = iter(stream)
        abandoned.append([next(chunks) for _ in range(3)][-1].id)   # the role and two tokens: it is decoding
        stream.close()
    wait_until(lambda: stats(server)["cancelled_requests"] == before["cancelled_requests"] + 3)
    assert stats(server)["cancelled_rows"] == before["cancelled_rows"] + 3
    assert stats(server)["decoding_rows"] == 0

    after = client.chat.completions.create(model=MODEL, messages=COUNT, max_tokens=8, temperature=0)
    mine = record(server, after.id)
    assert mine["rows_at_join"] == 1 and not mine["joined_running"]   # nothing abandoned shares its steps
    for request_id in abandoned:
        gone = record(server, request_id)
        assert gone["cancelled"] and gone["completion_tokens"] < 1000 and gone["finished_step"] <= mine["joined_step"]


def test_a_plain_request_whose_client_leaves_is_cancelled(server):
    before = stats(server)
    request = {"model": MODEL, "messages": COUNT, "max_tokens": 1000, "temperature": 0, **ENDLESS}

    async def leave_while_decoding():
        async with httpx.AsyncClient(timeout=120) as http:
            pending = asyncio.create_task(http.post(server.url + "/chat/completions", json=request))
            while stats(server)["steps"] < before["steps"] + 3:
                await asyncio.sleep(0.05)
            pending.cancel()

    asyncio.run(leave_while_decoding())
    wait_until(lambda: stats(server)["cancelled_requests"] == before["cancelled_requests"] + 1)
    gone = stats(server)["recent"][-1]
    assert gone["cancelled"] and gone["completion_tokens"] < 1000
    assert stats(server)["decoding_rows"] == 0


def test_stream_text_holds_back_what_may_still_change():
    text = StreamText(stop=("END",))
    assert text.delta("Hello E", finished=False) == "Hello "      # "E" may begin the stop string
    assert text.delta("Hello EN", finished=False) == ""
    assert text.delta("Hello ENOUGH", finished=False) == "ENOUGH"  # it did not
    assert text.delta("Hello ENOUGH caf\ufffd", finished=False) == " caf"   # half a character
    assert text.delta("Hello ENOUGH café", finished=True) == "é"
    assert text.sent == "Hello ENOUGH café"
