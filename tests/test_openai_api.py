"""The OpenAI-compatible API at `/v1`, driven by the official `openai` SDK as an app would drive
it: base URL and project key changed, a managed prompt named as the model.

Everything runs through the real function behind the dev gateway, against the fake DeepSeek.
"""

import asyncio
import json
import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from bson import ObjectId
from pymongo.database import Database

from devtools.fake_deepseek import FakeDeepSeek
from shared.access.models import Actor
from shared.clients import close_clients
from shared.workflows.openai_api.models import ChatCompletionRequest
from shared.workflows.openai_api.service import RECENT_TARGET_S, OpenAIService
from shared.workflows.openai_api.wire import ChunkPresenter
from tests.conftest import ADMIN_HEADERS, configure
from tests.test_executions import cancelled_upstream_and_record, fake
from tests.test_limits import PRICES, set_limits

PERSONA = {"persona": "a refunds clerk"}
OPENING = [
    {"role": "system", "content": "You are {{persona}}."},
    {"role": "user", "content": "Our policy: refunds within 30 days."},
    {"role": "system", "content": "Answer in one sentence."},
]
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather of a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


@pytest.fixture
def refund_prompt(client: httpx.Client, project: dict) -> dict:
    """`refund-answer`: version 1 in production; version 2 (temperature 0.2, max 300 tokens)
    is latest and staging."""
    body = {
        "project_id": project["id"],
        "name": "refund-answer",
        "type": "chat",
        "messages": OPENING,
        "labels": ["production"],
    }
    created = client.post("/prompts", json=body)
    assert created.status_code == 201, created.text
    prompt = created.json()
    changes = {"config": {"temperature": 0.2, "max_tokens": 300}}
    updated = client.put(f"/prompts/{prompt['id']}", json=changes)
    assert updated.status_code == 200, updated.text
    labelled = client.put(f"/prompts/{prompt['id']}/labels/staging", json={"version": 2})
    assert labelled.status_code == 200, labelled.text
    return prompt


@pytest.fixture
def sdk(gateway_url: str, project: dict, key_headers: Callable) -> Iterator[openai.OpenAI]:
    """The SDK as an app holds it: the gateway's `/v1` and a runner key of the project."""
    key = key_headers(project, "runner")["Authorization"].removeprefix("Bearer ")
    with openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0) as client:
        yield client


def sent(fake_deepseek: FakeDeepSeek) -> dict:
    """The last request DeepSeek received."""
    return fake_deepseek.chat_requests()[-1].body


def execution(client: httpx.Client, execution_id: str) -> dict:
    response = client.get(f"/executions/{execution_id}")
    assert response.status_code == 200, response.text
    return response.json()


def ask(text: str = "Can I get a refund?") -> list[dict]:
    return [{"role": "user", "content": text}]


# --- models ----------------------------------------------------------------------------------


def test_models_list_the_projects_prompts_by_label_and_the_deepseek_models(
    sdk: openai.OpenAI, refund_prompt: dict, client: httpx.Client
) -> None:
    other = client.post("/projects", json={"name": "Elsewhere"}).json()
    hidden = {"project_id": other["id"], "name": "secret-prompt", "type": "text", "template": "x"}
    assert client.post("/prompts", json=hidden).status_code == 201

    ids = [model.id for model in sdk.models.list()]

    labelled = ["latest", "production", "staging"]
    assert ids[:4] == ["refund-answer", *(f"refund-answer@{label}" for label in labelled)]
    assert "deepseek-v4-flash" in ids
    assert not any("secret-prompt" in model for model in ids)
    assert sdk.models.retrieve("refund-answer@staging").owned_by == "prompt"
    with pytest.raises(openai.NotFoundError):
        sdk.models.retrieve("secret-prompt")


# --- chat completions ------------------------------------------------------------------------


def test_a_completion_renders_the_labelled_version_before_the_callers_messages(
    sdk: openai.OpenAI, refund_prompt: dict, fake_deepseek: FakeDeepSeek, client: httpx.Client
) -> None:
    messages = [
        {"role": "system", "content": "The customer is a member."},
        {"role": "developer", "content": "Be brief."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Can I get"},
                {"type": "text", "text": "a refund?"},
            ],
        },
    ]
    raw = sdk.chat.completions.with_raw_response.create(
        model="refund-answer@staging", messages=messages, extra_body={"variables": PERSONA}
    )
    answer = raw.parse()

    assert answer.choices[0].message.content == "Hello from the fake DeepSeek."
    assert answer.choices[0].finish_reason == "stop"
    execution_id = raw.headers["x-execution-id"]
    assert answer.id == f"chatcmpl-{execution_id}"
    body = sent(fake_deepseek)
    # The prompt's system messages, then its others, then the caller's (developer -> system).
    assert body["messages"] == [
        {"role": "system", "content": "You are a refunds clerk."},
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "Our policy: refunds within 30 days."},
        {"role": "system", "content": "The customer is a member."},
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Can I get\na refund?"},
    ]
    assert (body["temperature"], body["max_tokens"]) == (0.2, 300)
    record = execution(client, execution_id)
    assert (record["prompt_id"], record["prompt_version"]) == (refund_prompt["id"], 2)
    assert (record["label"], record["source"], record["status"]) == ("staging", "openai", "ok")
    assert record["actor"]["kind"] == "key"
    assert record["input"] == "Can I get\na refund?"
    assert record["output"] == answer.choices[0].message.content


def test_the_name_alone_runs_production_and_a_number_runs_that_version(
    sdk: openai.OpenAI, refund_prompt: dict, fake_deepseek: FakeDeepSeek, client: httpx.Client
) -> None:
    by_name = sdk.chat.completions.with_raw_response.create(
        model="refund-answer", messages=ask(), extra_body={"variables": PERSONA}
    )
    record = execution(client, by_name.headers["x-execution-id"])
    assert (record["prompt_version"], record["label"]) == (1, "production")
    assert "temperature" not in sent(fake_deepseek)

    by_number = sdk.chat.completions.with_raw_response.create(
        model="refund-answer@2", messages=ask(), extra_body={"variables": PERSONA}
    )
    record = execution(client, by_number.headers["x-execution-id"])
    assert (record["prompt_version"], record["label"]) == (2, None)


def test_every_listed_model_can_be_called_even_a_prompt_named_with_an_at_sign(
    sdk: openai.OpenAI, client: httpx.Client, project: dict
) -> None:
    body = {"project_id": project["id"], "name": "support@acme", "type": "text", "template": "x"}
    assert client.post("/prompts", json=body).status_code == 201

    listed = [model.id for model in sdk.models.list() if model.owned_by == "prompt"]
    assert listed == ["support@acme", "support@acme@latest"]
    for model in listed:
        answer = sdk.chat.completions.create(model=model, messages=ask())
        assert answer.choices[0].message.content


def test_a_moved_label_reaches_the_next_calls_within_seconds(
    sdk: openai.OpenAI, refund_prompt: dict, client: httpx.Client
) -> None:
    def version_run() -> int:
        raw = sdk.chat.completions.with_raw_response.create(
            model="refund-answer@staging", messages=ask(), extra_body={"variables": PERSONA}
        )
        return execution(client, raw.headers["x-execution-id"])["prompt_version"]

    assert version_run() == 2
    moved = client.put(f"/prompts/{refund_prompt['id']}/labels/staging", json={"version": 1})
    assert moved.status_code == 200, moved.text
    time.sleep(RECENT_TARGET_S + 0.1)
    assert version_run() == 1


def test_parameters_the_caller_sets_win_over_the_versions_config(
    sdk: openai.OpenAI, refund_prompt: dict, fake_deepseek: FakeDeepSeek
) -> None:
    sdk.chat.completions.create(
        model="refund-answer@staging",
        messages=ask(),
        temperature=1.3,
        max_completion_tokens=40,
        top_p=0.5,
        seed=7,
        stop=["\n\n"],
        response_format={"type": "json_object"},
        extra_body={"variables": PERSONA, "thinking": {"type": "disabled"}},
    )
    body = sent(fake_deepseek)
    assert (body["temperature"], body["max_tokens"], body["top_p"]) == (1.3, 40, 0.5)
    assert (body["seed"], body["stop"]) == (7, ["\n\n"])
    assert body["response_format"] == {"type": "json_object"}
    assert body["thinking"] == {"type": "disabled"}


def test_a_plain_model_id_passes_through_and_is_recorded(
    sdk: openai.OpenAI, fake_deepseek: FakeDeepSeek, client: httpx.Client, project: dict
) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="deepseek-reasoner", messages=ask())
    answer = raw.parse()

    assert sent(fake_deepseek)["messages"] == ask()
    assert answer.model == "deepseek-reasoner"
    assert answer.choices[0].message.reasoning_content == "Thinking it over briefly."
    record = execution(client, raw.headers["x-execution-id"])
    assert (record["prompt_id"], record["prompt_version"], record["model"]) == (
        None,
        None,
        "deepseek-reasoner",
    )
    assert record["reasoning"] == "Thinking it over briefly."
    usage = client.get(f"/projects/{project['id']}/usage").json()
    assert usage["calls"] == 1


def test_missing_variables_are_a_bad_request_naming_them(
    sdk: openai.OpenAI, refund_prompt: dict, database: Database
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model="refund-answer", messages=ask())
    assert raised.value.param == "variables"
    assert "persona" in raised.value.message
    assert database.executions.count_documents({}) == 0


def test_a_stream_is_openais_chunks_ending_with_done(
    sdk: openai.OpenAI, refund_prompt: dict, gateway_url: str, client: httpx.Client
) -> None:
    stream = sdk.chat.completions.create(
        model="refund-answer",
        messages=ask(),
        stream=True,
        extra_body={"variables": PERSONA},
    )
    chunks = list(stream)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)

    assert text == "Hello from the fake DeepSeek."
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(chunk.usage is None and chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert len({chunk.id for chunk in chunks}) == 1
    record = execution(client, chunks[0].id.removeprefix("chatcmpl-"))
    assert (record["status"], record["output"]) == ("ok", text)

    key = sdk.api_key
    body = {"model": "refund-answer", "messages": ask(), "stream": True, "variables": PERSONA}
    with httpx.stream(
        "POST",
        f"{gateway_url}/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}"},
    ) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"


def test_a_slow_first_token_is_waited_for_with_keep_alive_comments(
    sdk: openai.OpenAI, gateway_url: str, monkeypatch: pytest.MonkeyPatch, database: Database
) -> None:
    """Up to one keep-alive interval the answer's status waits for DeepSeek's first token;
    after it, the stream starts and keep-alive comments hold the connection until it comes."""
    configure(monkeypatch, STREAM_KEEPALIVE_S="0.1")
    body = {
        "model": "deepseek-v4-flash",
        "messages": ask(fake(first_token_delay_s=0.55, tokens=3)),
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {sdk.api_key}"}
    with httpx.stream(
        "POST", f"{gateway_url}/v1/chat/completions", json=body, headers=headers
    ) as response:
        lines = [line for line in response.iter_lines() if line]
    first_data = next(index for index, line in enumerate(lines) if line.startswith("data:"))
    assert lines[:first_data].count(": keep-alive") >= 3
    assert ": keep-alive" not in lines[first_data:]
    assert lines[-1] == "data: [DONE]"

    stream = sdk.chat.completions.create(
        model="deepseek-v4-flash",
        messages=ask(fake(first_token_delay_s=0.35, tokens=3)),
        stream=True,
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices) == (
        "tok0 tok1 tok2"
    )
    assert database.executions.count_documents({"status": "ok"}) == 2


def test_include_usage_adds_a_final_chunk_with_cached_tokens(
    sdk: openai.OpenAI, refund_prompt: dict
) -> None:
    stream = sdk.chat.completions.create(
        model="refund-answer",
        messages=ask(fake(cache_hit_tokens=3)),
        stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False},
        extra_body={"variables": PERSONA},
    )
    chunks = list(stream)

    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.prompt_tokens_details.cached_tokens == 3
    assert last.usage.completion_tokens == 5
    assert all(chunk.usage is None for chunk in chunks[:-1])


def test_non_streamed_usage_names_deepseeks_cache_hits(sdk: openai.OpenAI) -> None:
    answer = sdk.chat.completions.create(
        model="deepseek-v4-flash", messages=ask(fake(cache_hit_tokens=4) + " " * 40)
    )
    assert answer.usage is not None
    assert answer.usage.prompt_tokens_details.cached_tokens == 4
    assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens


def test_tool_calls_stream_and_are_recorded_and_their_results_go_back(
    sdk: openai.OpenAI, refund_prompt: dict, fake_deepseek: FakeDeepSeek, client: httpx.Client
) -> None:
    call = {"name": "get_weather", "arguments": json.dumps({"city": "Seoul"})}
    stream = sdk.chat.completions.create(
        model="refund-answer",
        messages=ask(fake(tool_calls=[call])),
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        stream=True,
        extra_body={"variables": PERSONA},
    )
    chunks = list(stream)
    deltas = [c for chunk in chunks for c in chunk.choices[0].delta.tool_calls or ()]
    arguments = "".join(delta.function.arguments or "" for delta in deltas)

    assert deltas[0].id == "call_0" and deltas[0].function.name == "get_weather"
    assert json.loads(arguments) == {"city": "Seoul"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert sent(fake_deepseek)["tools"] == [WEATHER_TOOL]
    assert sent(fake_deepseek)["tool_choice"] == "auto"
    record = execution(client, chunks[0].id.removeprefix("chatcmpl-"))
    assert record["tool_calls"] == [
        {
            "id": "call_0",
            "type": "function",
            "function": {"name": "get_weather", "arguments": arguments},
        }
    ]

    answered = sdk.chat.completions.create(
        model="refund-answer",
        messages=[
            *ask(),
            {
                "role": "assistant",
                "content": None,
                "tool_calls": record["tool_calls"],
                "refusal": None,
            },
            {"role": "tool", "tool_call_id": "call_0", "content": "Sunny"},
        ],
        tools=[WEATHER_TOOL],
        extra_body={"variables": PERSONA},
    )
    assert answered.choices[0].message.content == "Hello from the fake DeepSeek."
    assert sent(fake_deepseek)["messages"][-2:] == [
        {"role": "assistant", "content": None, "tool_calls": record["tool_calls"]},
        {"role": "tool", "content": "Sunny", "tool_call_id": "call_0"},
    ]


def test_a_non_streamed_tool_call_comes_back_as_the_message(sdk: openai.OpenAI) -> None:
    call = {"name": "get_weather", "arguments": '{"city": "Busan"}'}
    answer = sdk.chat.completions.create(
        model="deepseek-v4-flash", messages=ask(fake(tool_calls=[call])), tools=[WEATHER_TOOL]
    )
    message = answer.choices[0].message
    assert answer.choices[0].finish_reason == "tool_calls"
    assert message.content is None
    assert message.tool_calls is not None
    assert message.tool_calls[0].function.arguments == '{"city": "Busan"}'


# --- errors ----------------------------------------------------------------------------------


def test_bad_credentials_are_authentication_errors(gateway_url: str) -> None:
    app = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key="ba_nope", max_retries=0)
    with app, pytest.raises(openai.AuthenticationError) as raised:
        app.models.list()
    assert raised.value.code == "invalid_api_key"
    assert raised.value.body["type"] == "invalid_request_error"


@pytest.mark.parametrize("credential", ["admin key", "viewer key"])
def test_the_admin_key_and_a_viewer_key_are_refused(
    gateway_url: str, project: dict, key_headers: Callable, credential: str
) -> None:
    if credential == "admin key":
        key = ADMIN_HEADERS["Authorization"].removeprefix("Bearer ")
    else:
        key = key_headers(project, "viewer")["Authorization"].removeprefix("Bearer ")
    app = openai.OpenAI(base_url=f"{gateway_url}/v1", api_key=key, max_retries=0)
    with app, pytest.raises(openai.PermissionDeniedError):
        app.chat.completions.create(model="deepseek-v4-flash", messages=ask())


def test_another_projects_prompt_is_not_found_as_any_unknown_model(
    sdk: openai.OpenAI, client: httpx.Client
) -> None:
    other = client.post("/projects", json={"name": "Elsewhere"}).json()
    hidden = {"project_id": other["id"], "name": "secret-prompt", "type": "text", "template": "x"}
    assert client.post("/prompts", json=hidden).status_code == 201

    errors = []
    for model in ("secret-prompt", "no-such-prompt", "secret-prompt@production"):
        with pytest.raises(openai.NotFoundError) as raised:
            sdk.chat.completions.create(model=model, messages=ask())
        errors.append((raised.value.code, raised.value.body["message"].replace(model, "<m>")))
    assert errors == [errors[0]] * 3
    assert errors[0][0] == "model_not_found"


@pytest.mark.parametrize(
    "model", ["refund-answer@0", "refund-answer@", "refund-answer@\u0663", "refund-answer@a.b"]
)
def test_a_selector_no_version_or_label_can_have_is_not_found(
    sdk: openai.OpenAI, refund_prompt: dict, database: Database, model: str
) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        sdk.chat.completions.create(model=model, messages=ask(), extra_body={"variables": PERSONA})
    assert raised.value.code == "model_not_found"
    name, _, version = model.partition("@")
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(prompt={"id": name, "version": version, "variables": PERSONA})
    assert database.executions.count_documents({}) == 0


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"modalities": ["text", "audio"]}, "modalities"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"frobnicate": True}, "frobnicate"),
        ({"frobnicate-level": 2}, "frobnicate-level"),
        ({"list": []}, "list"),
        ({"temperature": 7}, "temperature"),
        ({"stop": 5}, "stop"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_unsupported_or_invalid_options_are_bad_requests(
    sdk: openai.OpenAI, database: Database, extra: dict, param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model="deepseek-v4-flash", messages=ask(), extra_body=extra)
    assert raised.value.param == param
    assert raised.value.body["type"] == "invalid_request_error"
    assert database.executions.count_documents({}) == 0


def test_max_tokens_above_the_projects_cap_is_said_once(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(model="deepseek-v4-flash", messages=ask(), max_tokens=10**6)
    assert raised.value.param == "max_tokens"
    assert raised.value.body["message"] == (
        "max_tokens 1000000 is above the project's max_output_tokens (8192)."
    )


def test_non_text_content_is_a_bad_request(sdk: openai.OpenAI) -> None:
    image = {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.chat.completions.create(
            model="deepseek-v4-flash", messages=[{"role": "user", "content": [image]}]
        )
    assert raised.value.param == "messages[0].content[0]"


def test_the_rate_limit_is_a_rate_limit_error_with_retry_after(
    sdk: openai.OpenAI, client: httpx.Client, project: dict
) -> None:
    set_limits(client, project, requests_per_minute=1)
    sdk.chat.completions.create(model="deepseek-v4-flash", messages=ask())
    with pytest.raises(openai.RateLimitError) as raised:
        sdk.chat.completions.create(model="deepseek-v4-flash", messages=ask())
    assert raised.value.code == "rate_limited"
    assert 1 <= int(raised.value.response.headers["retry-after"]) <= 60


def test_a_spent_budget_is_a_quota_error_the_sdk_does_not_retry(
    sdk: openai.OpenAI,
    client: httpx.Client,
    project: dict,
    monkeypatch: pytest.MonkeyPatch,
    fake_deepseek: FakeDeepSeek,
) -> None:
    configure(monkeypatch, DEEPSEEK_PRICES=json.dumps(PRICES))
    set_limits(client, project, monthly_budget_usd=1.0)
    sdk.chat.completions.create(model="deepseek-v4-flash", messages=ask(fake(tokens=5)))
    calls = len(fake_deepseek.chat_requests())

    with pytest.raises(openai.RateLimitError) as raised:
        sdk.with_options(max_retries=2).chat.completions.create(
            model="deepseek-v4-flash", messages=ask()
        )
    assert raised.value.body["type"] == "insufficient_quota"
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert len(fake_deepseek.chat_requests()) == calls


def test_deepseek_failures_are_server_errors_and_recorded(
    sdk: openai.OpenAI, client: httpx.Client
) -> None:
    with pytest.raises(openai.InternalServerError) as raised:
        sdk.chat.completions.create(model="deepseek-v4-flash", messages=ask(fake(status=500)))
    assert raised.value.status_code == 503
    record = execution(client, raised.value.response.headers["x-execution-id"])
    assert (record["status"], record["error"]["code"]) == ("error", "upstream_unavailable")

    with pytest.raises(openai.InternalServerError):
        list(
            sdk.chat.completions.create(
                model="deepseek-v4-flash", messages=ask(fake(status=500)), stream=True
            )
        )


def test_a_stream_cut_mid_answer_raises_in_the_sdk(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        model="deepseek-v4-flash", messages=ask(fake(tokens=20, cut_after_chunks=3)), stream=True
    )
    with pytest.raises(openai.APIError, match="broke off"):
        list(stream)


def test_a_client_that_disconnects_stops_the_upstream_call_and_is_recorded_cancelled(
    sdk: openai.OpenAI, fake_deepseek: FakeDeepSeek, database: Database
) -> None:
    stream = sdk.chat.completions.create(
        model="deepseek-v4-flash",
        messages=ask(fake(tokens=200, token_interval_s=0.05)),
        stream=True,
    )
    for index, _ in enumerate(stream):
        if index == 3:
            break
    stream.close()

    record = cancelled_upstream_and_record(fake_deepseek, database)
    assert record["output"].startswith("tok0 tok1 ")
    assert record["error"]["code"] == "cancelled"


def test_a_stream_closed_between_two_frames_cuts_the_upstream_call_and_is_recorded_cancelled(
    project: dict, fake_deepseek: FakeDeepSeek, database: Database
) -> None:
    """A client that goes away while a frame is being written leaves its stream between two
    frames, closed by the server (or by the garbage collector) rather than cancelled."""
    body = ChatCompletionRequest.model_validate(
        {"model": "deepseek-v4-flash", "messages": ask(fake(tokens=200, token_interval_s=0.05))}
    )
    actor = Actor(kind="key", id="app-key", name="app")

    async def take_a_frame_then_close() -> None:
        service, run = await OpenAIService.begin(
            lambda service: service.open_chat(body, project["id"], actor)
        )
        frames = service.frames(run, ChunkPresenter(run, include_usage=False))
        try:
            await anext(frames)
            await frames.aclose()
        finally:
            await close_clients()

    asyncio.run(take_a_frame_then_close())
    record = cancelled_upstream_and_record(fake_deepseek, database)
    assert record["error"]["code"] == "cancelled"


class _BrokenPresenter(ChunkPresenter):
    """Words the first chunk, then fails as a bug would."""

    def chunk(self, data: dict) -> bytes | None:
        if getattr(self, "worded", False):
            raise KeyError("choices")
        self.worded = True
        return super().chunk(data)


def test_an_unexpected_failure_mid_stream_is_logged_recorded_and_ends_the_stream_with_an_error(
    project: dict, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    body = ChatCompletionRequest.model_validate(
        {"model": "deepseek-v4-flash", "messages": ask(fake(tokens=5))}
    )
    actor = Actor(kind="key", id="app-key", name="app")

    async def read_all() -> list[bytes]:
        service, run = await OpenAIService.begin(
            lambda service: service.open_chat(body, project["id"], actor)
        )
        try:
            return [frame async for frame in service.frames(run, _BrokenPresenter(run, False))]
        finally:
            await close_clients()

    frames = asyncio.run(read_all())
    error = json.loads(frames[-1].removeprefix(b"data: "))["error"]
    assert error["type"] == "server_error"
    assert any(record.exc_info and record.levelname == "ERROR" for record in caplog.records)
    first = json.loads(frames[0].removeprefix(b"data: "))
    stored = database.executions.find_one({"_id": ObjectId(first["id"].removeprefix("chatcmpl-"))})
    assert (stored["status"], stored["error"]["code"]) == ("error", "internal_error")


# --- responses -------------------------------------------------------------------------------


def test_responses_with_the_retired_prompt_parameter(
    sdk: openai.OpenAI, refund_prompt: dict, fake_deepseek: FakeDeepSeek, client: httpx.Client
) -> None:
    response = sdk.responses.create(
        prompt={"id": refund_prompt["id"], "version": "2", "variables": PERSONA},
        input="Can I get a refund?",
        instructions="Mention the policy.",
    )

    assert response.output_text == "Hello from the fake DeepSeek."
    assert response.status == "completed"
    assert response.instructions == "Mention the policy."
    assert response.prompt is not None and response.prompt.version == "2"
    assert response.usage is not None and response.usage.output_tokens == 5
    assert sent(fake_deepseek)["messages"][-2:] == [
        {"role": "system", "content": "Mention the policy."},
        {"role": "user", "content": "Can I get a refund?"},
    ]
    assert sent(fake_deepseek)["temperature"] == 0.2
    record = execution(client, response.id.removeprefix("resp_"))
    assert (record["prompt_version"], record["source"]) == (2, "openai")

    by_name = sdk.responses.create(
        model="ignored-when-a-prompt-is-given",
        prompt={"id": "refund-answer", "version": "staging", "variables": PERSONA},
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
        max_output_tokens=2,
    )
    assert by_name.status == "incomplete"
    assert by_name.incomplete_details is not None
    assert sent(fake_deepseek)["max_tokens"] == 2


def test_responses_text_format_is_sent_as_chat_completions_response_format(
    sdk: openai.OpenAI, fake_deepseek: FakeDeepSeek
) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    text_format = {"type": "json_schema", "name": "reply", "schema": schema, "strict": True}
    response = sdk.responses.create(
        model="deepseek-v4-flash", input="Can I get a refund?", text={"format": text_format}
    )

    assert sent(fake_deepseek)["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "reply", "schema": schema, "strict": True},
    }
    assert response.text is not None
    assert response.text.format.model_dump(exclude_none=True, by_alias=True) == text_format


def test_responses_stream_events_the_sdk_assembles(sdk: openai.OpenAI, refund_prompt: dict) -> None:
    with sdk.responses.stream(
        model="refund-answer",
        input="Can I get a refund?",
        extra_body={"variables": PERSONA},
    ) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()

    assert kinds[:4] == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ]
    assert kinds.count("response.output_text.delta") == 5
    assert kinds[-1] == "response.completed"
    assert final.output_text == "Hello from the fake DeepSeek."


def test_responses_stream_a_failure_as_a_failed_response(sdk: openai.OpenAI) -> None:
    events = list(
        sdk.responses.create(
            model="deepseek-v4-flash",
            input=fake(tokens=20, cut_after_chunks=3),
            stream=True,
        )
    )
    assert events[-2].type == "error"
    assert events[-1].type == "response.failed"
    assert events[-1].response.error is not None


def test_responses_refuse_what_they_cannot_do(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as raised:
        sdk.responses.create(model="deepseek-v4-flash", input="hi", previous_response_id="resp_1")
    assert raised.value.param == "previous_response_id"
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(prompt={"id": "no-such-prompt"}, input="hi", model="x")


# --- records and stats -----------------------------------------------------------------------


def test_calls_through_this_api_count_in_the_prompts_stats(
    sdk: openai.OpenAI, refund_prompt: dict, client: httpx.Client
) -> None:
    for model in ("refund-answer", "refund-answer@staging", "refund-answer@staging"):
        sdk.chat.completions.create(model=model, messages=ask(), extra_body={"variables": PERSONA})
    sdk.responses.create(model="refund-answer", input="hi", extra_body={"variables": PERSONA})

    stats = client.get("/executions/stats", params={"prompt_id": refund_prompt["id"]}).json()
    counts = {version["version"]: version["count"] for version in stats["versions"]}
    assert counts == {1: 2, 2: 2}
    assert all(version["total_tokens"] > 0 for version in stats["versions"])
