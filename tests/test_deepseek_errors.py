"""DeepSeek's failures reach callers and records in our own words; its words reach the logs only,
with anything that looks like a secret redacted."""

import json
import logging
import time

import httpx
import pytest
from pymongo.database import Database

from devtools.embedded_mongo import free_port
from devtools.fake_deepseek import FakeDeepSeek, Scenario
from shared.deepseek.errors import from_status
from tests.conftest import TEST_ADMIN_KEY, configure
from tests.test_datasets import create_dataset
from tests.test_evaluations import finished, started
from tests.test_executions import read_events

# What an upstream that echoes what it was sent, and names its own hosts, might answer.
ECHOED_KEY = "sk-live4f9a8b7c6d5e4f3a2b1c"
UPSTREAM_HOST = "gpu-7.internal.deepseek.example"
UPSTREAM_MESSAGE = (
    f"Server Overloaded at {UPSTREAM_HOST}:8393 for key {ECHOED_KEY} "
    f"(Authorization: Bearer test-key, admin {TEST_ADMIN_KEY}, api_key=plain-value-123)"
)
# No part of the upstream's words may reach a caller or a record.
LEAKS = ("Overloaded", UPSTREAM_HOST, "8393", ECHOED_KEY, "test-key", TEST_ADMIN_KEY, "plain-value")


def assert_no_leak(text: str) -> None:
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} leaked into: {text}"


def upstream_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "better_assistant.deepseek"]


@pytest.fixture
def failing_upstream(fake_deepseek: FakeDeepSeek) -> FakeDeepSeek:
    """Every call to DeepSeek answers 503 with a message echoing keys and naming its host."""
    fake_deepseek.default_scenario = Scenario(status=503, error_message=UPSTREAM_MESSAGE)
    return fake_deepseek


@pytest.fixture
def prompt(make_prompt) -> dict:
    return make_prompt(
        type="chat",
        template=None,
        messages=[{"role": "user", "content": "Question: {{input}}"}],
        labels=["production"],
    )


def test_an_upstream_message_reaches_neither_the_caller_nor_the_record(
    client: httpx.Client,
    prompt: dict,
    database: Database,
    failing_upstream: FakeDeepSeek,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "better_assistant.deepseek")
    response = client.post("/executions", json={"prompt_id": prompt["id"], "input": "hi"})
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["code"] == "upstream_unavailable"
    assert error["message"] == "DeepSeek is unavailable; try again shortly."
    assert_no_leak(response.text)
    stored = client.get(f"/executions/{error['details']['execution_id']}")
    assert stored.json()["error"]["code"] == "upstream_unavailable"
    assert_no_leak(stored.text)
    assert_no_leak(str(list(database.executions.find({}))))

    # Operators still read what DeepSeek said, its secrets redacted.
    lines = upstream_lines(caplog)
    assert lines, "the upstream's message was not logged"
    assert all(UPSTREAM_HOST in line and "[redacted]" in line for line in lines)
    for secret in (ECHOED_KEY, "test-key", TEST_ADMIN_KEY, "plain-value-123"):
        assert not any(secret in line for line in lines)


def test_a_streamed_run_ends_with_our_words(
    client: httpx.Client, prompt: dict, database: Database, failing_upstream: FakeDeepSeek
) -> None:
    body = {"prompt_id": prompt["id"], "input": "hi", "stream": True}
    with client.stream("POST", "/executions", json=body) as response:
        events = list(read_events(response))
    assert events[-1][0] == "error"
    assert events[-1][1]["code"] == "upstream_unavailable"
    assert_no_leak(json.dumps(events))
    assert_no_leak(str(list(database.executions.find({}))))


def test_a_chat_turn_ends_with_our_words_and_keeps_them(
    client: httpx.Client, project: dict, database: Database, failing_upstream: FakeDeepSeek
) -> None:
    body = {"project_id": project["id"], "input": "hello"}
    with client.stream("POST", "/chat", json=body) as response:
        events = list(read_events(response))
    assert events[-1] == (
        "error",
        {"code": "upstream_unavailable", "message": "DeepSeek is unavailable; try again shortly."},
    )
    assert_no_leak(json.dumps(events))
    turn = {"turn_id": events[0][1]["turn_id"]}
    deadline = time.monotonic() + 5
    while database.messages.count_documents(turn) < 2:
        assert time.monotonic() < deadline, "the turn was not written"
        time.sleep(0.02)
    assistant = database.messages.find_one({**turn, "role": "assistant"})
    assert assistant["run"]["error"]["code"] == "upstream_unavailable"
    assert_no_leak(str(list(database.messages.find(turn))))


def test_an_unreachable_upstream_names_no_host(
    client: httpx.Client,
    prompt: dict,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "better_assistant.deepseek")
    port = str(free_port())
    configure(monkeypatch, DEEPSEEK_BASE_URL=f"http://127.0.0.1:{port}")
    response = client.post("/executions", json={"prompt_id": prompt["id"], "input": "hi"})
    assert response.status_code == 503
    assert response.json()["error"] == {
        "code": "upstream_unreachable",
        "message": "DeepSeek could not be reached; try again shortly.",
        "details": response.json()["error"]["details"],
    }
    for internal in ("127.0.0.1", port, "Cannot connect"):
        assert internal not in response.text
        assert internal not in str(list(database.executions.find({})))
    # The transport's own words are for operators.
    assert any(f"127.0.0.1:{port}" in line for line in upstream_lines(caplog))


@pytest.mark.parametrize(
    ("status", "code"),
    [(400, "upstream_bad_request"), (404, "upstream_rejected"), (429, "upstream_rate_limited")],
)
def test_each_refusal_is_our_code_and_message(
    client: httpx.Client,
    prompt: dict,
    fake_deepseek: FakeDeepSeek,
    status: int,
    code: str,
) -> None:
    fake_deepseek.default_scenario = Scenario(status=status, error_message=UPSTREAM_MESSAGE)
    response = client.post("/executions", json={"prompt_id": prompt["id"], "input": "hi"})
    assert response.json()["error"]["code"] == code
    assert_no_leak(response.text)


def test_an_evaluation_cell_keeps_our_words(
    client: httpx.Client,
    project: dict,
    make_prompt,
    database: Database,
    failing_upstream: FakeDeepSeek,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    configure(monkeypatch, DEEPSEEK_MAX_RETRIES="0")
    prompt = make_prompt(template="Answer {{q}}.")
    dataset = create_dataset(client, project, cases=[{"variables": {"q": "x"}}])
    body = {"prompt_id": prompt["id"], "dataset_id": dataset["id"], "targets": [{}]}
    run = finished(client, started(client, **body)["id"])
    cell = run["results"][0]["targets"][0]["runs"][0]
    assert cell["error"]["code"] == "upstream_unavailable"
    assert_no_leak(json.dumps(run))
    for name in database.list_collection_names():
        assert_no_leak(str(list(database[name].find({}))))


def test_a_secret_where_the_logged_words_are_cut_short_leaves_no_part_of_itself(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    key = "k3y-0f-0urs-7d1e9c4b2a8f6e5d"
    configure(monkeypatch, DEEPSEEK_API_KEY=key)
    # The upstream's words are cut to their first 500 characters, the key straddling the cut.
    for padding in range(488, 500):
        from_status(503, "x" * padding + f" {key} and more", None)
    for line in upstream_lines(caplog):
        assert key[:6] not in line, line
