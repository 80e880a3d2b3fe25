"""Tests for the fake DeepSeek server, driven through the real openai SDK."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from devtools.fake_deepseek import (
    REASONING_IN_INPUT,
    FakeDeepSeek,
    RequestRecord,
    Scenario,
)
from shared.assertions.judge import judge_messages, parse_verdict
from shared.assertions.models import JudgeAssertion

DEFAULT = Scenario()


@pytest.fixture(scope="module")
def server() -> Iterator[FakeDeepSeek]:
    with FakeDeepSeek() as fake:
        yield fake


@pytest.fixture(autouse=True)
def _reset(server: FakeDeepSeek) -> None:
    server.default_scenario = Scenario()
    server.clear()


@pytest.fixture
def client(server: FakeDeepSeek) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="test-key", max_retries=0) as sdk:
        yield sdk


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def extra(obj: Any, name: str) -> Any:
    """A DeepSeek-only field of an SDK model: not declared, so it lives in model_extra."""
    return (obj.model_extra or {}).get(name, getattr(obj, name, None))


def last_chat(server: FakeDeepSeek) -> RequestRecord:
    return server.chat_requests()[-1]


def test_non_streamed_answer_carries_deepseek_usage(
    client: openai.OpenAI, server: FakeDeepSeek
) -> None:
    text = "x" * 95 + ' #fake{"cache_hit_tokens": 7}'
    resp = client.chat.completions.create(model="deepseek-chat", messages=[user(text)])

    assert resp.object == "chat.completion"
    assert resp.model == "deepseek-chat"
    assert resp.system_fingerprint and resp.id
    assert resp.choices[0].message.content == DEFAULT.reply
    assert resp.choices[0].finish_reason == "stop"
    prompt = len(text) // 4
    completion = len(DEFAULT.reply.split())
    usage = resp.usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (prompt, completion)
    assert usage.total_tokens == prompt + completion
    assert extra(usage, "prompt_cache_hit_tokens") == 7
    assert extra(usage, "prompt_cache_miss_tokens") == prompt - 7
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 0
    record = last_chat(server)
    assert record.completed and not record.disconnected
    assert record.headers["authorization"] == "Bearer test-key"
    assert record.body["messages"] == [user(text)]


def test_streamed_answer_with_usage_chunk_last(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="deepseek-chat",
        messages=[user("hi")],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)

    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert content == DEFAULT.reply
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[-1].choices == []
    assert [c.usage is not None for c in chunks].count(True) == 1
    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == len(DEFAULT.reply.split())
    assert extra(usage, "prompt_cache_miss_tokens") == usage.prompt_tokens


def test_stream_without_include_usage_has_no_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(model="deepseek-chat", messages=[user("hi")], stream=True)
    )
    assert all(c.choices and c.usage is None for c in chunks)


def _kinds(chunks: list[Any]) -> tuple[str, str, list[str]]:
    reasoning, content, order = "", "", []
    for chunk in chunks:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if extra(delta, "reasoning_content"):
            reasoning += extra(delta, "reasoning_content")
            order.append("r")
            assert delta.content is None
        elif delta.content:
            content += delta.content
            order.append("c")
            assert extra(delta, "reasoning_content") is None
    return reasoning, content, order


def test_reasoner_streams_reasoning_before_content(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model="deepseek-reasoner",
            messages=[user("why?")],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    reasoning, content, order = _kinds(chunks)
    assert reasoning == DEFAULT.reasoning
    assert content == DEFAULT.reply
    assert order == sorted(order, key=lambda k: k != "r") and "r" in order
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == order.count("r")
    assert usage.completion_tokens == len(order)


def test_thinking_enabled_via_extra_body(client: openai.OpenAI, server: FakeDeepSeek) -> None:
    plain = list(
        client.chat.completions.create(model="deepseek-chat", messages=[user("a")], stream=True)
    )
    assert _kinds(plain)[0] == ""

    thinking = list(
        client.chat.completions.create(
            model="deepseek-chat",
            messages=[user("a")],
            stream=True,
            extra_body={"thinking": {"type": "enabled"}},
        )
    )
    assert _kinds(thinking)[:2] == (DEFAULT.reasoning, DEFAULT.reply)
    assert last_chat(server).body["thinking"] == {"type": "enabled"}

    resp = client.chat.completions.create(
        model="deepseek-chat", messages=[user("a")], extra_body={"thinking": {"type": "enabled"}}
    )
    assert extra(resp.choices[0].message, "reasoning_content") == DEFAULT.reasoning
    assert resp.choices[0].message.content == DEFAULT.reply


def test_reasoning_content_sent_back_is_rejected(client: openai.OpenAI) -> None:
    history: list[Any] = [
        user("q1"),
        {"role": "assistant", "content": "a1", "reasoning_content": "thoughts"},
        user("q2"),
    ]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="deepseek-reasoner", messages=history)
    assert info.value.status_code == 400
    assert info.value.body["message"] == REASONING_IN_INPUT
    assert info.value.body["param"] is None
    assert info.value.type == "invalid_request_error"


@pytest.mark.parametrize(
    ("status", "exc_type"),
    [
        (400, openai.BadRequestError),
        (402, openai.APIStatusError),
        (422, openai.UnprocessableEntityError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_error_status_via_directive(
    client: openai.OpenAI, status: int, exc_type: type[openai.APIStatusError]
) -> None:
    directive = json.dumps({"status": status, "error_message": f"boom {status}"})
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="deepseek-chat", messages=[user(f"please #fake{directive}")]
        )
    assert type(info.value) is exc_type
    assert info.value.status_code == status
    assert info.value.body == {
        "message": f"boom {status}",
        "type": info.value.body["type"],
        "param": None,
        "code": info.value.body["code"],
    }
    assert ("retry-after" in info.value.response.headers) == (status == 429)


def test_rate_limit_sends_retry_after(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError) as info:
        client.chat.completions.create(
            model="deepseek-chat",
            messages=[user('#fake{"status": 429, "retry_after": 7}')],
            stream=True,
        )
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.message.endswith("Rate Limit Reached")


def test_invalid_key_is_unauthorized(server: FakeDeepSeek) -> None:
    bad = openai.OpenAI(base_url=server.base_url, api_key="invalid-key", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.chat.completions.create(model="deepseek-chat", messages=[user("hi")])
    assert info.value.status_code == 401
    assert info.value.type == "authentication_error"


def test_models_and_paths_with_or_without_v1(client: openai.OpenAI, server: FakeDeepSeek) -> None:
    assert [m.id for m in client.models.list()] == ["deepseek-chat", "deepseek-reasoner"]
    auth = {"authorization": "Bearer x"}
    body = {"model": "deepseek-chat", "messages": [user("hi")]}
    with httpx.Client(base_url=server.base_url, headers=auth) as http:
        for path in ("/chat/completions", "/v1/chat/completions"):
            resp = http.post(path, json=body)
            assert resp.status_code == 200
            assert resp.json()["choices"][0]["message"]["content"] == DEFAULT.reply
        assert http.get("/v1/models").status_code == 200
        assert http.get("/nope").status_code == 404
        assert http.post("/chat/completions", content=b"{not json").status_code == 400


def test_fail_times_then_success_counted_per_directive(client: openai.OpenAI) -> None:
    flaky = user('#fake{"status": 503, "fail_times": 2, "reply": "finally"}')
    other = user('#fake{"status": 500, "fail_times": 1}')
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model="deepseek-chat", messages=[flaky])
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="deepseek-chat", messages=[other])
    ok = client.chat.completions.create(model="deepseek-chat", messages=[flaky])
    assert ok.choices[0].message.content == "finally"
    again = client.chat.completions.create(model="deepseek-chat", messages=[other])
    assert again.choices[0].message.content == DEFAULT.reply


def test_default_scenario_applies_without_directive(
    client: openai.OpenAI, server: FakeDeepSeek
) -> None:
    server.default_scenario = Scenario(tokens=4, finish_reason="length")
    resp = client.chat.completions.create(model="deepseek-chat", messages=[user("hi")])
    assert resp.choices[0].message.content == "tok0 tok1 tok2 tok3"
    assert resp.choices[0].finish_reason == "length"


def test_last_directive_wins_and_malformed_is_400(client: openai.OpenAI) -> None:
    messages: list[Any] = [
        {"role": "system", "content": '#fake{"status": 500}'},
        user("first"),
        {"role": "assistant", "content": '#fake{"status": 422}'},  # assistant turns are ignored
        {"role": "user", "content": [{"type": "text", "text": 'then #fake{"reply": "second"}'}]},
    ]
    resp = client.chat.completions.create(model="deepseek-chat", messages=messages)
    assert resp.choices[0].message.content == "second"

    with pytest.raises(openai.BadRequestError, match="Malformed #fake directive"):
        client.chat.completions.create(model="deepseek-chat", messages=[user("#fake{oops}")])
    with pytest.raises(openai.BadRequestError, match="Unknown #fake directive fields"):
        client.chat.completions.create(model="deepseek-chat", messages=[user('#fake{"x": 1}')])
    with pytest.raises(openai.BadRequestError, match="'tokens' must be"):
        client.chat.completions.create(
            model="deepseek-chat", messages=[user('#fake{"tokens": "5"}')]
        )
    ok = client.chat.completions.create(
        model="deepseek-chat", messages=[user('#fake{"first_token_delay_s": 0}')]
    )
    assert ok.choices[0].message.content == DEFAULT.reply


def test_keepalive_comments_before_first_token(client: openai.OpenAI, server: FakeDeepSeek) -> None:
    directive = '#fake{"first_token_delay_s": 0.25, "keepalive_interval_s": 0.05}'
    body = {"model": "deepseek-chat", "stream": True, "messages": [user(directive)]}
    lines: list[str] = []
    with (
        httpx.Client(base_url=server.base_url) as http,
        http.stream(
            "POST", "/chat/completions", json=body, headers={"authorization": "Bearer x"}
        ) as resp,
    ):
        assert resp.headers["content-type"].startswith("text/event-stream")
        assert resp.headers["transfer-encoding"] == "chunked"
        lines = [line for line in resp.iter_lines() if line]
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert first_data >= 3
    assert set(lines[:first_data]) == {": keep-alive"}
    assert ": keep-alive" not in lines[first_data:]
    assert lines[-1] == "data: [DONE]"

    stream = client.chat.completions.create(
        model="deepseek-chat", messages=[user(directive)], stream=True
    )
    assert "".join(c.choices[0].delta.content or "" for c in stream) == DEFAULT.reply


def test_cut_mid_stream_raises_after_partial_content(
    client: openai.OpenAI, server: FakeDeepSeek
) -> None:
    stream = client.chat.completions.create(
        model="deepseek-chat",
        messages=[user('#fake{"tokens": 10, "cut_after_chunks": 3}')],
        stream=True,
    )
    received = ""
    with pytest.raises((openai.APIError, httpx.HTTPError)):
        for chunk in stream:
            received += chunk.choices[0].delta.content or ""
    assert received == "tok0 tok1 tok2 "
    assert not last_chat(server).completed


def test_client_disconnect_is_recorded(client: openai.OpenAI, server: FakeDeepSeek) -> None:
    stream = client.chat.completions.create(
        model="deepseek-chat",
        messages=[user('#fake{"tokens": 200, "token_interval_s": 0.05}')],
        stream=True,
    )
    it = iter(stream)
    next(it)
    next(it)
    record = last_chat(server)
    assert not record.disconnected
    stream.close()
    closed_at = time.monotonic()
    server.wait_for(lambda: record.disconnected, timeout=2)
    assert time.monotonic() - closed_at < 0.5
    assert not record.completed


def test_echo_returns_received_messages(client: openai.OpenAI) -> None:
    messages: list[Any] = [
        {"role": "system", "content": "be brief"},
        user('q1 #fake{"echo": true}'),
    ]
    first = client.chat.completions.create(model="deepseek-chat", messages=messages)
    echoed = first.choices[0].message.content
    assert echoed is not None and json.loads(echoed) == messages

    # The echo (which contains the directive) goes back as history without re-triggering it.
    history = [*messages, {"role": "assistant", "content": echoed}, user("q2 ünï")]
    stream = client.chat.completions.create(
        model="deepseek-chat", messages=[*history, user('#fake{"echo": true}')], stream=True
    )
    content = "".join(c.choices[0].delta.content or "" for c in stream)
    assert json.loads(content)[:-1] == history


def test_async_client_concurrent_streams(server: FakeDeepSeek) -> None:
    async def run() -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=server.base_url, api_key="test-key", max_retries=0
        ) as sdk:

            async def one(i: int) -> str:
                directive = json.dumps({"tokens": 5, "token_interval_s": 0.05})
                stream = await sdk.chat.completions.create(
                    model="deepseek-chat", messages=[user(f"{i} #fake{directive}")], stream=True
                )
                return "".join([c.choices[0].delta.content or "" async for c in stream])

            return await asyncio.gather(*(one(i) for i in range(20)))

    started = time.monotonic()
    results = asyncio.run(run())
    assert results == ["tok0 tok1 tok2 tok3 tok4"] * 20
    assert time.monotonic() - started < 1.5  # 20 x 0.2 s each: streams ran concurrently
    assert len(server.chat_requests()) == 20
    assert all(r.completed for r in server.chat_requests())


def test_an_answer_stops_at_max_tokens_like_a_model(client: openai.OpenAI) -> None:
    resp = client.chat.completions.create(
        model="deepseek-chat", messages=[user("hi")], max_tokens=2
    )
    assert resp.choices[0].message.content == "Hello from "
    assert resp.choices[0].finish_reason == "length"
    stream = client.chat.completions.create(
        model="deepseek-chat", messages=[user("hi")], max_tokens=3, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hello from the "
    )
    assert chunks[-1].choices[0].finish_reason == "length"
    whole = client.chat.completions.create(
        model="deepseek-chat", messages=[user("hi")], max_tokens=5
    )
    assert (whole.choices[0].message.content, whole.choices[0].finish_reason) == (
        DEFAULT.reply,
        "stop",
    )


@pytest.mark.parametrize(
    ("graded", "passed"),
    [("Your refund is on its way.", True), ("Your refund is", False), ("", False)],
)
def test_a_grading_request_gets_a_strict_verdict_on_whether_the_answer_is_complete(
    client: openai.OpenAI, graded: str, passed: bool
) -> None:
    spec = JudgeAssertion(type="judge", rubric="Polite")
    messages: Any = judge_messages(spec, graded, "Where is my refund?", None)
    resp = client.chat.completions.create(model="deepseek-chat", messages=messages)
    verdict = parse_verdict(resp.choices[0].message.content or "")
    assert verdict is not None and verdict[0] is passed
