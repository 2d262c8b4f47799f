"""Step-level continuous batching in `recursa serve`: requests join a running batch at the next decode step, and
their tokens are those they get alone (up to a bf16 tie, the backend's batch guarantee). Order is read from the
engine's step counters (/stats), never from wall-clock time."""

import asyncio

import openai
import pytest
from conftest import diverges_only_at_a_tie
from server_support import openai_client, record, running_server, stats, user

from recursa.server import ServerThread, create_app

MODEL = "smollm2-135m"
STORY = [{"role": "user", "content": "Write a story about a lighthouse keeper."}]
PROMPTS = ["What is 12*7? Answer with a number.", "Name a colour.",
           "Write one short sentence about rivers and the sea.", "hi"]
ENDLESS = {"ignore_eos": True}



@pytest.fixture(scope="module")
def server(smollm2):
    with running_server(smollm2, max_batch=6) as running:
        yield running


@pytest.fixture(scope="module")
def client(server):
    return openai_client(server)


def same_up_to_a_tie(model, messages, alone, joined):
    def ids(text):
        return model.tokenizer.encode(text, add_special_tokens=False)
    return diverges_only_at_a_tie(model, model.chat_ids(messages), ids(alone), ids(joined))


def test_a_request_joins_the_running_batch_at_the_next_step(client, server, smollm2):
    short = user(PROMPTS[0])
    alone_story = client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=40, temperature=0,
                                                 extra_body=ENDLESS).choices[0].message.content
    alone_short = client.chat.completions.create(model=MODEL, messages=short, max_tokens=8,
                                                 temperature=0).choices[0].message.content

    stream = iter(client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=40, temperature=0,
                                                 stream=True, extra_body=ENDLESS))
    first = [next(stream) for _ in range(4)]               # the story is decoding
    joined = client.chat.completions.create(model=MODEL, messages=short, max_tokens=8, temperature=0)
    story = "".join(c.choices[0].delta.content or "" for c in first + list(stream) if c.choices)

    running, newcomer = record(server, first[0].id), record(server, joined.id)
    assert newcomer["joined_running"] and newcomer["rows_at_join"] == 2
    assert newcomer["joined_step"] == newcomer["admitted_step"]   # prefilled and joined before the next step
    assert running["joined_step"] < newcomer["joined_step"] < newcomer["finished_step"] < running["finished_step"]
    assert same_up_to_a_tie(smollm2, short, alone_short, joined.choices[0].message.content)
    assert same_up_to_a_tie(smollm2, STORY, alone_story, story)


def test_a_burst_joins_together_and_matches_each_request_alone(client, server, smollm2):
    alone = [client.chat.completions.create(model=MODEL, messages=user(p), max_tokens=12, temperature=0)
             .choices[0].message.content for p in PROMPTS]

    async def burst():
        aclient = openai.AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=120)
        blocker = asyncio.create_task(aclient.chat.completions.create(
            model=MODEL, messages=STORY, max_tokens=60, temperature=0, extra_body=ENDLESS))
        while stats(server)["decoding_rows"] == 0:
            await asyncio.sleep(0.01)
        replies = await asyncio.gather(*(aclient.chat.completions.create(
            model=MODEL, messages=user(p), max_tokens=12, temperature=0) for p in PROMPTS))
        await blocker
        await aclient.close()
        return replies

    replies = asyncio.run(burst())
    records = [record(server, reply.id) for reply in replies]
    assert all(r["joined_running"] and r["rows_at_join"] >= 2 for r in records)
    for prompt, text, reply in zip(PROMPTS, alone, replies, strict=True):
        assert same_up_to_a_tie(smollm2, user(prompt), text, reply.choices[0].message.content), prompt


def test_requests_beyond_the_batch_limit_wait_for_room_and_all_finish(server):
    # max_batch is 6: eight requests of one row each cannot all decode at once
    async def crowd():
        aclient = openai.AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300)
        replies = await asyncio.gather(*(aclient.chat.completions.create(
            model=MODEL, messages=user(f"Tell me fact number {i} about the moon."), max_tokens=6 + 2 * i,
            temperature=0, extra_body=ENDLESS) for i in range(8)))
        await aclient.close()
        return replies

    replies = asyncio.run(crowd())
    assert [r.usage.completion_tokens for r in replies] == [6 + 2 * i for i in range(8)]
    records = [record(server, reply.id) for reply in replies]
    assert max(r["rows_at_join"] for r in records) <= 6
    waited = [r for r in records if r["prefill_step"] > r["admitted_step"]]
    assert waited, "some request should have waited for a free row"
    assert stats(server)["decoding_rows"] == 0


def test_a_seeded_sampled_request_gives_the_same_text_alone_and_joined(client):
    settings = {"model": MODEL, "messages": user("Invent a name for a cat."), "max_tokens": 10, "temperature": 1.0,
                "seed": 11}
    alone = client.chat.completions.create(**settings).choices[0].message.content
    stream = iter(client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=30, temperature=0,
                                                 stream=True, extra_body=ENDLESS))
    next(stream), next(stream)
    joined = client.chat.completions.create(**settings).choices[0].message.content
    list(stream)
    assert joined == alone


def test_static_batching_makes_a_newcomer_wait_for_the_batch(smollm2):
    """The comparison mode of bench/speed.py (the server before continuous batching)."""
    with ServerThread(create_app(smollm2, max_batch=6, continuous=False)) as static:
        client = openai.OpenAI(base_url=static.url, api_key="unused", max_retries=0, timeout=120)
        stream = iter(client.chat.completions.create(model=MODEL, messages=STORY, max_tokens=20, temperature=0,
                                                     stream=True, extra_body=ENDLESS))
        first = [next(stream) for _ in range(3)]
        waiting = client.chat.completions.create(model=MODEL, messages=user(PROMPTS[1]), max_tokens=4, temperature=0)
        list(stream)
        running, newcomer = record(static, first[0].id), record(static, waiting.id)
    assert not newcomer["joined_running"] and newcomer["rows_at_join"] == 1
    assert newcomer["prefill_step"] >= running["finished_step"] > newcomer["admitted_step"]
