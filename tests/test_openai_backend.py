"""`OpenAIChatModel`: against `recursa serve` on the real model, and against scripted servers for transport logic
(retries, backoff, timeouts, the concurrency limit), where only the HTTP behaviour matters."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from recursa.core.errors import BackendError, BackendUnreachable, ContextTooLongError
from recursa.core.trace import Tracer
from recursa.models.base import Sampling
from recursa.models.openai_compat import OpenAIChatModel
from recursa.server import ServerThread, create_app

MODEL = "qwen2.5-coder-0.5b"


def user(text):
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def served(qwen):
    with ServerThread(create_app(qwen, max_batch=8)) as server, \
            OpenAIChatModel(MODEL, base_url=server.url, max_retries=0) as model:
        yield model


def test_generate_matches_the_local_backend(served, qwen):
    batch = [user("What is 12*7? Answer with a number."), user("Name a fruit.")]
    sampling = Sampling(max_tokens=10)
    remote, local = served.generate(batch, sampling), qwen.generate(batch, sampling)
    assert [c.text for c in remote] == [c.text for c in local]
    assert [c.prompt_tokens for c in remote] == [c.prompt_tokens for c in local]
    assert [c.completion_tokens for c in remote] == [c.completion_tokens for c in local]
    assert [c.finish_reason for c in remote] == [c.finish_reason for c in local]
    assert served.context_window == qwen.context_window  # read from /v1/models


def test_usage_is_recorded_in_the_trace(served, tmp_path):
    with Tracer.start(runs_dir=tmp_path) as tracer:
        completions = served.generate([user("hi"), user("Say yes.")], Sampling(max_tokens=4))
    assert tracer.totals.model_calls == 2
    assert tracer.totals.prompt_tokens == sum(c.prompt_tokens for c in completions) > 0
    assert tracer.totals.completion_tokens == sum(c.completion_tokens for c in completions) > 0
    assert '"backend": "openai"' in tracer.path.read_text()


def test_generate_from_threads_and_inside_an_event_loop(served):
    sampling = Sampling(max_tokens=3)
    expected = served.generate([user("Name a colour.")], sampling)[0].text
    with ThreadPoolExecutor(3) as pool:
        texts = list(pool.map(lambda _: served.generate([user("Name a colour.")], sampling)[0].text, range(3)))

    async def inside_loop():
        blocking = served.generate([user("Name a colour.")], sampling)[0].text  # e.g. a sync tool in async code
        awaited = (await served.agenerate([user("Name a colour.")], sampling))[0].text
        return blocking, awaited

    assert texts == [expected] * 3
    assert asyncio.run(inside_loop()) == (expected, expected)
    assert asyncio.run(served.agenerate([user("Name a colour.")], sampling))[0].text == expected  # a second loop


def test_server_errors_become_clear_backend_errors(served):
    with pytest.raises(ContextTooLongError, match="maximum context length"):
        served.generate([user("hi")], Sampling(max_tokens=served.context_window))
    unknown = OpenAIChatModel("nope", base_url=served.base_url, max_retries=0)
    with pytest.raises(BackendError, match="HTTP 404.*check the model name"):
        unknown.generate([user("hi")], Sampling(max_tokens=2))
    unknown.close()


# ---- transport logic against scripted servers ---------------------------------------------------------------
def completion_body(text="ok"):
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}


def scripted_app(responses):
    """Answers the n-th request with responses[n] (a status code, or 'ok'); the last entry repeats."""
    app = FastAPI()
    app.state.hits = 0

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        reply = responses[min(app.state.hits, len(responses) - 1)]
        app.state.hits += 1
        if reply == "ok":
            return completion_body()
        if reply == "slow":
            await asyncio.sleep(4.0)   # far beyond the client timeout, so a loaded machine cannot blur them
            return completion_body()
        headers = {"retry-after": "0"} if reply == 429 else {}
        return JSONResponse({"error": {"message": f"scripted {reply}", "type": "x", "param": None, "code": None}},
                            status_code=reply, headers=headers)

    return app


@pytest.mark.parametrize("failure", [503, 429, 500])
def test_retries_transient_errors_then_succeeds(failure):
    app = scripted_app([failure, failure, "ok"])
    with ServerThread(app) as server, OpenAIChatModel("m", base_url=server.url, max_retries=3,
                                                      backoff_seconds=0.01) as model:
        completion = model.generate([user("hi")], Sampling(max_tokens=2))[0]
    assert completion.text == "ok" and completion.prompt_tokens == 3 and completion.completion_tokens == 1
    assert app.state.hits == 3


def test_gives_up_after_max_retries_and_does_not_retry_client_errors():
    always_failing = scripted_app([503])
    with ServerThread(always_failing) as server, \
            OpenAIChatModel("m", base_url=server.url, max_retries=2, backoff_seconds=0.01) as model, \
            pytest.raises(BackendError, match="HTTP 503.*after 3 attempt"):
        model.generate([user("hi")], Sampling(max_tokens=2))
    assert always_failing.state.hits == 3

    bad_request = scripted_app([400])
    with ServerThread(bad_request) as server, OpenAIChatModel("m", base_url=server.url, max_retries=3) as model, \
            pytest.raises(BackendError, match="HTTP 400"):
        model.generate([user("hi")], Sampling(max_tokens=2))
    assert bad_request.state.hits == 1


def test_backoff_grows_exponentially():
    model = OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1", backoff_seconds=1.0)
    delays = [model._backoff(attempt, RuntimeError()) for attempt in range(4)]
    for attempt, delay in enumerate(delays):
        assert 0.5 * 2**attempt <= delay <= 1.5 * 2**attempt


def test_timeout_and_unreachable_server_fail_fast():
    with ServerThread(scripted_app(["slow"])) as server, OpenAIChatModel("m", base_url=server.url, timeout=0.3,
                                                                         max_retries=0) as model:
        started = time.perf_counter()
        with pytest.raises(BackendUnreachable, match="cannot reach"):
            model.generate([user("hi")], Sampling(max_tokens=2))
        assert time.perf_counter() - started < 3.0
    with OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1", max_retries=1, backoff_seconds=0.01) as model, \
            pytest.raises(BackendUnreachable, match="cannot reach .* after 2 attempt"):
        model.generate([user("hi")], Sampling(max_tokens=2))


def test_concurrency_limit_holds():
    app = FastAPI()
    app.state.in_flight = app.state.peak = 0

    @app.post("/v1/chat/completions")
    async def chat():
        app.state.in_flight += 1
        app.state.peak = max(app.state.peak, app.state.in_flight)
        await asyncio.sleep(0.1)
        app.state.in_flight -= 1
        return completion_body()

    with ServerThread(app) as server, OpenAIChatModel("m", base_url=server.url, max_concurrency=2) as model:
        completions = model.generate([user(str(i)) for i in range(6)], Sampling(max_tokens=2))
    assert len(completions) == 6 and app.state.peak == 2
