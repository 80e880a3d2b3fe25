"""Running prompts against the fake DeepSeek: records, streams, failures, retries, stats."""

import asyncio
import json
import time
from collections.abc import Iterator

import httpx
import pytest
from pymongo.database import Database

from devtools.fake_deepseek import FakeDeepSeek, Scenario
from shared.clients import close_clients
from shared.deepseek.client import DeepSeekClient
from shared.deepseek.models import ChatCall, Delta, Finish
from shared.executions.models import ExecutionCreate
from shared.executions.service import RUNNING_RECORD_AFTER_S, ExecutionService
from shared.projects.service import ProjectService
from shared.prompts.service import PromptService
from shared.settings import get_settings
from tests.conftest import configure


def fake(**scenario: object) -> str:
    """A directive telling the fake DeepSeek how to answer this request."""
    return "#fake" + json.dumps(scenario)


def cancelled_upstream_and_record(fake_deepseek: FakeDeepSeek, database: Database) -> dict:
    """Once the caller went away: the upstream call was cut before its end, and the execution
    is recorded as cancelled (its record returned)."""
    upstream = fake_deepseek.wait_for(
        lambda: next((r for r in fake_deepseek.chat_requests() if r.disconnected), None), 5
    )
    assert not upstream.completed
    return fake_deepseek.wait_for(lambda: database.executions.find_one({"status": "cancelled"}), 5)


def read_events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """Parse an SSE body into (event, data) pairs; comments are skipped."""
    name = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name or "message", json.loads(line[6:])


def stream(client: httpx.Client, body: dict) -> list[tuple[str, dict]]:
    with client.stream("POST", "/executions", json={**body, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        return list(read_events(response))


@pytest.fixture
def prompt(make_prompt) -> dict:
    return make_prompt(
        type="chat",
        template=None,
        messages=[
            {"role": "system", "content": "You help {{customer}}."},
            {"role": "user", "content": "Question: {{input}}"},
        ],
        config={"model": "deepseek-v4-flash", "temperature": 0.2, "max_tokens": 300},
        labels=["production"],
    )


def run(client: httpx.Client, prompt: dict, **body: object) -> httpx.Response:
    payload = {"prompt_id": prompt["id"], "variables": {"customer": "Ada"}, **body}
    return client.post("/executions", json=payload)


def test_run_stores_a_complete_record(
    client: httpx.Client, prompt: dict, fake_deepseek: FakeDeepSeek
) -> None:
    fake_deepseek.default_scenario = Scenario(reply="Refunds take 5 days.", cache_hit_tokens=2)
    response = run(client, prompt, input="How long?", config={"temperature": 0.7})
    assert response.status_code == 201
    record = response.json()
    assert record["status"] == "ok"
    assert record["error"] is None
    assert record["output"] == "Refunds take 5 days."
    assert record["reasoning"] is None
    assert record["finish_reason"] == "stop"
    assert record["project_id"] == prompt["project_id"]
    assert (record["prompt_id"], record["prompt_version"], record["label"]) == (
        prompt["id"],
        1,
        "production",
    )
    assert record["model"] == "deepseek-v4-flash"
    assert record["params"] == {"temperature": 0.7, "max_tokens": 300}
    assert record["messages"] == [
        {"role": "system", "content": "You help Ada."},
        {"role": "user", "content": "Question: How long?"},
    ]
    assert (record["variables"], record["input"]) == ({"customer": "Ada"}, "How long?")
    usage = record["usage"]
    assert usage["prompt_cache_hit_tokens"] == 2
    assert usage["prompt_cache_miss_tokens"] == usage["prompt_tokens"] - 2
    assert usage["completion_tokens"] > 0
    assert record["latency_ms"] >= record["ttft_ms"] > 0
    assert record["created_at"] <= record["finished_at"]
    assert record["source"] == "api"

    sent = fake_deepseek.chat_requests()[-1].body
    assert sent["model"] == "deepseek-v4-flash"
    assert sent["temperature"] == 0.7 and sent["max_tokens"] == 300
    assert sent["messages"] == record["messages"]
    assert sent["stream_options"] == {"include_usage": True}
    assert client.get(f"/executions/{record['id']}").json() == record


def test_cost_follows_the_configured_price_table(
    client: httpx.Client, prompt: dict, fake_deepseek: FakeDeepSeek, monkeypatch
) -> None:
    prices = {"priced-model": {"input_cache_hit": 1, "input_cache_miss": 10, "output": 100}}
    configure(monkeypatch, DEEPSEEK_PRICES=json.dumps(prices))
    fake_deepseek.default_scenario = Scenario(cache_hit_tokens=3)
    record = run(client, prompt, input="x", config={"model": "priced-model"}).json()
    usage = record["usage"]
    expected = (
        usage["prompt_cache_hit_tokens"] * 1
        + usage["prompt_cache_miss_tokens"] * 10
        + usage["completion_tokens"] * 100
    ) / 1_000_000
    assert record["cost"] == pytest.approx(expected)
    unpriced = run(client, prompt, input="x", config={"model": "unknown-model"}).json()
    assert unpriced["cost"] is None


def test_missing_variables_are_named_and_nothing_is_stored(
    client: httpx.Client, prompt: dict, database: Database
) -> None:
    response = client.post("/executions", json={"prompt_id": prompt["id"], "input": "hi"})
    assert response.status_code == 422
    assert response.json()["error"]["details"] == {"missing": ["customer"]}
    assert database.executions.count_documents({}) == 0


def test_invalid_requests_are_refused(client: httpx.Client, prompt: dict) -> None:
    for body in (
        {"prompt_id": prompt["id"], "version": 1, "label": "production"},
        {"prompt_id": prompt["id"], "variables": {"bad-name": 1}},
        {"prompt_id": prompt["id"], "variables": {"x": {"$gt": 1}}},
        {"prompt_id": prompt["id"], "config": {"temperature": 9}},
    ):
        assert client.post("/executions", json=body).status_code == 422, body
    assert client.post("/executions", json={"prompt_id": "nope"}).status_code == 404


def test_version_resolution_defaults_to_production_then_latest(
    client: httpx.Client, prompt: dict, make_prompt
) -> None:
    client.put(f"/prompts/{prompt['id']}", json={"config": {"temperature": 0.9}})
    assert run(client, prompt, input="x").json()["prompt_version"] == 1
    latest = run(client, prompt, input="x", label="latest").json()
    assert (latest["prompt_version"], latest["label"]) == (2, "latest")
    pinned = run(client, prompt, input="x", version=2).json()
    assert (pinned["prompt_version"], pinned["label"]) == (2, None)
    assert run(client, prompt, input="x", label="staging").status_code == 404
    unlabelled = make_prompt(template="Say {{word}}")
    client.put(f"/prompts/{unlabelled['id']}", json={"template": "Shout {{word}}"})
    record = client.post(
        "/executions", json={"prompt_id": unlabelled["id"], "variables": {"word": "hi"}}
    ).json()
    assert (record["prompt_version"], record["label"]) == (2, "latest")
    assert record["messages"] == [{"role": "user", "content": "Shout hi"}]


def test_text_prompt_with_separate_input_becomes_the_system_message(
    client: httpx.Client, make_prompt
) -> None:
    prompt = make_prompt(template="You are terse about {{topic}}.")
    record = client.post(
        "/executions",
        json={"prompt_id": prompt["id"], "variables": {"topic": "tax"}, "input": "Deadline?"},
    ).json()
    assert record["messages"] == [
        {"role": "system", "content": "You are terse about tax."},
        {"role": "user", "content": "Deadline?"},
    ]


def test_earlier_turns_follow_the_system_message(
    client: httpx.Client, prompt: dict, fake_deepseek: FakeDeepSeek
) -> None:
    history = [
        {"role": "user", "content": "My order is 42."},
        {"role": "assistant", "content": "Noted."},
    ]
    record = run(client, prompt, input="Status?", history=history).json()
    expected = [
        {"role": "system", "content": "You help Ada."},
        *history,
        {"role": "user", "content": "Question: Status?"},
    ]
    assert record["messages"] == expected
    assert fake_deepseek.chat_requests()[-1].body["messages"] == expected
    refused = run(client, prompt, input="x", history=[{"role": "system", "content": "Obey."}])
    assert refused.status_code == 422


def test_streamed_run_sends_events_in_order_and_stores_the_record(
    client: httpx.Client, prompt: dict, fake_deepseek: FakeDeepSeek
) -> None:
    fake_deepseek.default_scenario = Scenario(tokens=6)
    events = stream(
        client, {"prompt_id": prompt["id"], "variables": {"customer": "A"}, "input": "q"}
    )
    names = [name for name, _ in events]
    assert names == ["meta"] + ["content"] * 6 + ["done"]
    meta, done = events[0][1], events[-1][1]
    assert meta["prompt_version"] == 1
    text = "".join(data["delta"] for name, data in events if name == "content")
    assert set(done) == {"finish_reason", "usage", "cost", "ttft_ms", "latency_ms"}
    assert done["finish_reason"] == "stop"
    record = client.get(f"/executions/{meta['execution_id']}").json()
    assert record["output"] == text
    assert record["status"] == "ok"
    assert record["usage"] == done["usage"]


def test_reasoning_streams_and_is_stored_separately(
    client: httpx.Client, prompt: dict, fake_deepseek: FakeDeepSeek
) -> None:
    fake_deepseek.default_scenario = Scenario(reasoning="Let me think.", reply="Answer.")
    events = stream(
        client,
        {
            "prompt_id": prompt["id"],
            "variables": {"customer": "A"},
            "input": "q",
            "config": {"thinking": {"type": "enabled"}},
        },
    )
    names = [name for name, _ in events]
    assert names.index("reasoning") < names.index("content")
    record = client.get(f"/executions/{events[0][1]['execution_id']}").json()
    assert record["reasoning"] == "Let me think."
    assert record["output"] == "Answer."
    assert record["usage"]["reasoning_tokens"] > 0
    assert fake_deepseek.chat_requests()[-1].body["thinking"] == {"type": "enabled"}

    reasoner = run(client, prompt, input="x", config={"model": "deepseek-reasoner"}).json()
    assert reasoner["reasoning"] == "Let me think."


def test_keepalive_comments_before_the_first_token_are_tolerated(
    client: httpx.Client, prompt: dict
) -> None:
    directive = fake(first_token_delay_s=0.3, keepalive_interval_s=0.05, reply="Late but fine.")
    record = run(client, prompt, input=directive).json()
    assert record["status"] == "ok"
    assert record["output"] == "Late but fine."
    assert record["ttft_ms"] >= 300


@pytest.mark.parametrize(
    ("scenario", "status", "code"),
    [
        ({"status": 400}, 422, "upstream_bad_request"),
        ({"status": 422}, 422, "upstream_bad_request"),
        ({"status": 402}, 503, "upstream_insufficient_balance"),
        ({"status": 429, "retry_after": 60}, 429, "upstream_rate_limited"),
        ({"status": 500}, 503, "upstream_unavailable"),
        ({"status": 503}, 503, "upstream_unavailable"),
        ({"cut_after_chunks": 2, "tokens": 5}, 502, "upstream_stream_broken"),
    ],
)
def test_upstream_failures_are_mapped_and_recorded(
    client: httpx.Client, prompt: dict, scenario: dict, status: int, code: str
) -> None:
    response = run(client, prompt, input=fake(**scenario))
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code
    if status == 429:
        assert response.headers["Retry-After"] == "60"
    record = client.get(f"/executions/{error['details']['execution_id']}").json()
    assert record["status"] == "error"
    assert record["error"]["code"] == code


def test_bad_api_key_is_a_gateway_error(client: httpx.Client, prompt: dict, monkeypatch) -> None:
    configure(monkeypatch, DEEPSEEK_API_KEY="invalid-key")
    response = run(client, prompt, input="x")
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_auth_failed"


def test_missing_api_key_is_a_clear_503(client: httpx.Client, prompt: dict, monkeypatch) -> None:
    configure(monkeypatch, DEEPSEEK_API_KEY=" ")
    response = run(client, prompt, input="x")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "upstream_not_configured"


def test_unreachable_upstream_is_503(client: httpx.Client, prompt: dict, monkeypatch) -> None:
    from devtools.embedded_mongo import free_port

    configure(monkeypatch, DEEPSEEK_BASE_URL=f"http://127.0.0.1:{free_port()}")
    response = run(client, prompt, input="x")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "upstream_unreachable"


def test_first_token_and_idle_timeouts_are_separate(
    client: httpx.Client, prompt: dict, monkeypatch
) -> None:
    configure(monkeypatch, DEEPSEEK_FIRST_TOKEN_TIMEOUT_S="0.5", DEEPSEEK_IDLE_TIMEOUT_S="0.2")
    slow_start = run(client, prompt, input=fake(first_token_delay_s=2, keepalive_interval_s=0.05))
    assert slow_start.status_code == 504
    assert "first token" in slow_start.json()["error"]["message"]

    patient = run(
        client, prompt, input=fake(first_token_delay_s=0.3, token_interval_s=0.1, tokens=3)
    )
    assert patient.status_code == 201

    stalled = run(client, prompt, input=fake(tokens=3, token_interval_s=1))
    assert stalled.status_code == 504
    record = client.get(f"/executions/{stalled.json()['error']['details']['execution_id']}")
    assert record.json()["output"] == "tok0 "


def test_the_idle_timeout_applies_however_long_the_first_token_may_take(
    client: httpx.Client, prompt: dict, monkeypatch
) -> None:
    configure(monkeypatch, DEEPSEEK_FIRST_TOKEN_TIMEOUT_S="60", DEEPSEEK_IDLE_TIMEOUT_S="0.2")
    stalled = run(client, prompt, input=fake(tokens=3, token_interval_s=3))
    assert stalled.status_code == 504
    assert "in the middle of the answer" in stalled.json()["error"]["message"]


def read_slowly(call: ChatCall, pause_s: float) -> list[Delta | Finish]:
    """Every item of a streamed call, the caller pausing after each one."""

    async def consume() -> list[Delta | Finish]:
        client = DeepSeekClient(get_settings())
        items: list[Delta | Finish] = []
        try:
            async for item in client.stream(call):
                items.append(item)
                await asyncio.sleep(pause_s)
        finally:
            await client.close()
        return items

    return asyncio.run(consume())


def test_a_slow_caller_is_not_taken_for_a_silent_deepseek(monkeypatch) -> None:
    configure(monkeypatch, DEEPSEEK_FIRST_TOKEN_TIMEOUT_S="0.3", DEEPSEEK_IDLE_TIMEOUT_S="0.2")
    call = ChatCall("deepseek-v4-flash", [{"role": "user", "content": fake(tokens=3)}], {})
    items = read_slowly(call, pause_s=0.5)
    assert "".join(item.text for item in items if isinstance(item, Delta)) == "tok0 tok1 tok2"
    assert isinstance(items[-1], Finish)
    assert items[-1].finish_reason == "stop"


def test_retries_happen_only_before_the_first_token(
    client: httpx.Client, prompt: dict, fake_deepseek: FakeDeepSeek
) -> None:
    recovered = run(client, prompt, input=fake(status=503, fail_times=2))
    assert recovered.status_code == 201
    assert len(fake_deepseek.chat_requests()) == 3

    fake_deepseek.clear()
    gave_up = run(client, prompt, input=fake(status=500, fail_times=5))
    assert gave_up.status_code == 503
    assert len(fake_deepseek.chat_requests()) == 3  # the first try and DEEPSEEK_MAX_RETRIES=2

    fake_deepseek.clear()
    not_retried = run(client, prompt, input=fake(status=400, fail_times=1))
    assert not_retried.status_code == 422
    assert len(fake_deepseek.chat_requests()) == 1

    fake_deepseek.clear()
    cut = run(client, prompt, input=fake(cut_after_chunks=1, tokens=4))
    assert cut.status_code == 502
    assert len(fake_deepseek.chat_requests()) == 1


def test_rate_limit_retry_waits_for_retry_after(
    client: httpx.Client, prompt: dict, fake_deepseek: FakeDeepSeek
) -> None:
    started = time.monotonic()
    response = run(client, prompt, input=fake(status=429, retry_after=1, fail_times=1))
    assert response.status_code == 201
    assert time.monotonic() - started >= 1
    assert len(fake_deepseek.chat_requests()) == 2


def test_stream_cut_mid_answer_ends_with_an_error_event(client: httpx.Client, prompt: dict) -> None:
    events = stream(
        client,
        {
            "prompt_id": prompt["id"],
            "variables": {"customer": "A"},
            "input": fake(tokens=6, cut_after_chunks=3),
        },
    )
    names = [name for name, _ in events]
    assert names == ["meta", "content", "content", "content", "error"]
    assert events[-1][1]["code"] == "upstream_stream_broken"
    record = client.get(f"/executions/{events[0][1]['execution_id']}").json()
    assert (record["status"], record["output"]) == ("error", "tok0 tok1 tok2 ")


@pytest.mark.parametrize(
    ("scenario", "error"),
    [
        ({"status": 429, "retry_after": 60}, {"code": "upstream_rate_limited", "retry_after": 60}),
        ({"status": 503, "retry_after": 30}, {"code": "upstream_unavailable", "retry_after": 30}),
        ({"status": 500}, {"code": "upstream_unavailable"}),
        ({"tokens": 6, "cut_after_chunks": 2}, {"code": "upstream_stream_broken"}),
    ],
)
def test_a_stream_error_carries_retry_after_when_deepseek_gave_one(
    client: httpx.Client, prompt: dict, database: Database, scenario: dict, error: dict
) -> None:
    body = {"prompt_id": prompt["id"], "variables": {"customer": "A"}, "input": fake(**scenario)}
    events = stream(client, body)
    name, data = events[-1]
    assert name == "error"
    assert data == {**error, "message": data["message"]}
    record = database.executions.find_one({})
    assert record["error"] == {"code": error["code"], "message": data["message"]}


def test_a_stream_rate_limited_after_its_retries_reports_the_last_retry_after(
    client: httpx.Client, prompt: dict, fake_deepseek: FakeDeepSeek
) -> None:
    body = {"prompt_id": prompt["id"], "variables": {"customer": "A"}}
    events = stream(client, {**body, "input": fake(status=429, retry_after=1, fail_times=3)})
    assert [name for name, _ in events] == ["meta", "error"]
    assert events[-1][1]["code"] == "upstream_rate_limited"
    assert events[-1][1]["retry_after"] == 1
    assert len(fake_deepseek.chat_requests()) == 3  # the first try and DEEPSEEK_MAX_RETRIES=2


def test_client_disconnect_cancels_the_upstream_request(
    client: httpx.Client, prompt: dict, fake_deepseek: FakeDeepSeek, database: Database
) -> None:
    body = {
        "prompt_id": prompt["id"],
        "variables": {"customer": "A"},
        "input": fake(tokens=200, token_interval_s=0.05),
        "stream": True,
    }
    with client.stream("POST", "/executions", json=body) as response:
        received = 0
        for line in response.iter_lines():
            received += line.startswith("event: content")
            if received == 3:
                break
    record = cancelled_upstream_and_record(fake_deepseek, database)
    assert record["output"].startswith("tok0 tok1 tok2 ")
    assert record["error"]["code"] == "cancelled"


def test_a_stream_closed_between_two_events_cuts_the_upstream_call_and_is_recorded_cancelled(
    prompt: dict, fake_deepseek: FakeDeepSeek, database: Database
) -> None:
    """A client that goes away while an event is being written leaves the stream between two
    events, closed by the server (or the garbage collector) rather than cancelled."""
    service = ExecutionService(PromptService(ProjectService()), ProjectService())
    data = ExecutionCreate(
        prompt_id=prompt["id"],
        variables={"customer": "A"},
        input=fake(tokens=200, token_interval_s=0.05),
        stream=True,
    )

    async def take_an_event_then_close() -> None:
        run = await service.start(data, None)
        events = service.stream_events(run)
        try:
            while (await anext(events))[0] != "content":
                pass
            await events.aclose()
        finally:
            await close_clients()

    asyncio.run(take_an_event_then_close())
    record = cancelled_upstream_and_record(fake_deepseek, database)
    assert record["output"].startswith("tok0")


def test_list_filters_and_paginates(client: httpx.Client, prompt: dict, make_prompt) -> None:
    run(client, prompt, input="a")
    run(client, prompt, input=fake(status=400))
    client.put(f"/prompts/{prompt['id']}", json={"config": {"temperature": 0}})
    run(client, prompt, input="b", version=2)
    other = make_prompt(template="x")
    client.post("/executions", json={"prompt_id": other["id"]})

    def listed(**params: object) -> dict:
        response = client.get("/executions", params={"prompt_id": prompt["id"], **params})
        assert response.status_code == 200
        return response.json()

    assert listed()["total"] == 3
    assert [item["input"] for item in listed()["items"]] == ["b", fake(status=400), "a"]
    assert listed(version=2)["total"] == 1
    assert listed(status="error")["total"] == 1
    assert listed(status="ok", version=1)["items"][0]["input"] == "a"
    page = listed(limit=2)
    assert len(page["items"]) == 2
    rest = listed(limit=2, cursor=page["next_cursor"])
    assert [item["input"] for item in rest["items"]] == ["a"]
    future = listed(since="2999-01-01T00:00:00Z")
    assert future["total"] == 0
    assert client.get("/executions", params={"status": "weird"}).status_code == 422
    assert client.get("/executions").json()["total"] == 4


def test_stats_per_version(client: httpx.Client, prompt: dict) -> None:
    for _ in range(3):
        run(client, prompt, input="ok")
    run(client, prompt, input=fake(status=400))
    client.put(f"/prompts/{prompt['id']}", json={"config": {"temperature": 0}})
    run(client, prompt, input="v2", version=2)
    stats = client.get("/executions/stats", params={"prompt_id": prompt["id"]}).json()
    first, second = stats["versions"]
    assert (first["version"], first["count"], first["ok"], first["errors"]) == (1, 4, 3, 1)
    assert first["error_rate"] == 0.25
    records = client.get(
        "/executions", params={"prompt_id": prompt["id"], "version": 1, "status": "ok"}
    ).json()["items"]
    latencies = sorted(item["latency_ms"] for item in records)
    assert first["latency_p50_ms"] == latencies[1]
    assert first["latency_p95_ms"] == latencies[2]
    assert first["total_tokens"] == sum(item["usage"]["total_tokens"] for item in records)
    assert first["cost"] == pytest.approx(sum(item["cost"] for item in records))
    assert (second["version"], second["count"], second["error_rate"]) == (2, 1, 0)
    assert client.get("/executions/stats", params={"prompt_id": "nope"}).status_code == 404
    assert client.get("/executions/stats").status_code == 422


def test_stream_sends_keepalive_comments_until_the_first_token(
    client: httpx.Client, prompt: dict, monkeypatch
) -> None:
    configure(monkeypatch, STREAM_KEEPALIVE_S="0.1")
    body = {
        "prompt_id": prompt["id"],
        "variables": {"customer": "A"},
        "input": fake(first_token_delay_s=0.55, tokens=3, token_interval_s=0.15),
        "stream": True,
    }
    with client.stream("POST", "/executions", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    first_content = lines.index("event: content")
    assert lines[0] == "event: meta"
    assert lines[2:first_content].count(": keep-alive") >= 3
    assert ": keep-alive" not in lines[first_content:]
    assert lines[-2] == "event: done"


def test_a_run_shows_as_running_once_it_has_lasted_a_second(
    client: httpx.Client, prompt: dict, database: Database
) -> None:
    body = {
        "prompt_id": prompt["id"],
        "variables": {"customer": "A"},
        "input": fake(tokens=4, token_interval_s=0.6),
        "stream": True,
    }
    with client.stream("POST", "/executions", json=body) as response:
        lines = response.iter_lines()
        meta = json.loads(next(line for line in lines if line.startswith("data:"))[5:])
        assert database.executions.count_documents({}) == 0
        time.sleep(RUNNING_RECORD_AFTER_S + 0.4)
        running = client.get(f"/executions/{meta['execution_id']}").json()
        assert (running["status"], running["finished_at"]) == ("running", None)
        assert running["messages"] and running["output"] == ""
        list(lines)
    record = client.get(f"/executions/{meta['execution_id']}").json()
    assert (record["status"], record["output"]) == ("ok", "tok0 tok1 tok2 tok3")
    assert record["created_at"] == running["created_at"]


def test_a_finished_runs_answer_is_its_stored_record(
    client: httpx.Client, prompt: dict, database: Database
) -> None:
    response = client.post(
        "/executions",
        json={"prompt_id": prompt["id"], "variables": {"customer": "A"}, "input": "Hi"},
    )
    assert response.status_code == 201, response.text
    stored = database.executions.find_one({})
    assert stored is not None and stored["status"] == "ok"
    assert client.get(f"/executions/{stored['_id']}").json() == response.json()


def test_disconnect_before_the_first_token_is_recorded_as_cancelled(
    client: httpx.Client, prompt: dict, fake_deepseek: FakeDeepSeek, database: Database, monkeypatch
) -> None:
    configure(monkeypatch, STREAM_KEEPALIVE_S="0.05")
    body = {
        "prompt_id": prompt["id"],
        "variables": {"customer": "A"},
        "input": fake(first_token_delay_s=5),
        "stream": True,
    }
    with client.stream("POST", "/executions", json=body) as response:
        for line in response.iter_lines():
            if line == ": keep-alive" and fake_deepseek.chat_requests():
                break
    record = cancelled_upstream_and_record(fake_deepseek, database)
    assert record["output"] == ""


def test_earlier_turns_follow_the_prompts_opening_and_precede_its_input_message(
    client: httpx.Client, make_prompt, fake_deepseek: FakeDeepSeek
) -> None:
    few_shot = make_prompt(
        type="chat",
        template=None,
        messages=[
            {"role": "system", "content": "Classify."},
            {"role": "user", "content": "Example: refund late"},
            {"role": "assistant", "content": "billing"},
            {"role": "user", "content": "Ticket: {{input}}"},
            {"role": "assistant", "content": "Label:"},
        ],
    )
    history = [
        {"role": "user", "content": "Ticket: app crash"},
        {"role": "assistant", "content": "bug"},
    ]
    record = run(client, few_shot, input="card declined", history=history).json()
    assert record["messages"] == [
        {"role": "system", "content": "Classify."},
        {"role": "user", "content": "Example: refund late"},
        {"role": "assistant", "content": "billing"},
        *history,
        {"role": "user", "content": "Ticket: card declined"},
        {"role": "assistant", "content": "Label:"},
    ]
