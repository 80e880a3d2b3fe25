"""Streaming chat end to end: events, history through the queue, windows, failures, disconnects."""

import json
import time
from collections.abc import Callable

import httpx
import pytest
from pymongo.database import Database

from devtools.fake_deepseek import FakeDeepSeek, Scenario
from tests.conftest import configure


def fake(**scenario: object) -> str:
    return "#fake" + json.dumps(scenario)


def chat(client: httpx.Client, **body: object) -> list[tuple[str, dict]]:
    with client.stream(
        "POST", "/chat", json=body, headers={"Accept": "text/event-stream"}
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        events, name = [], None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name, json.loads(line[6:])))
        return events


def wait_for(predicate: Callable[[], object], timeout: float = 5) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if result := predicate():
            return result
        time.sleep(0.02)
    raise TimeoutError("condition not met")


def wait_for_turn(database: Database, turn_id: str) -> list[dict]:
    """The turn's messages once the history queue has written both."""
    return wait_for(
        lambda: (
            (found := list(database.messages.find({"turn_id": turn_id})))
            and len(found) == 2
            and found
        )
    )


@pytest.fixture
def bound_prompt(make_prompt) -> dict:
    return make_prompt(
        type="chat",
        template=None,
        messages=[{"role": "system", "content": "You are {{persona}}."}],
        config={"model": "deepseek-v4-flash", "temperature": 0.4},
        labels=["production"],
    )


def test_first_turn_starts_a_dialog_and_streams_in_order(
    client: httpx.Client,
    project: dict,
    bound_prompt: dict,
    database: Database,
    fake_deepseek: FakeDeepSeek,
) -> None:
    fake_deepseek.default_scenario = Scenario(tokens=5)
    events = chat(
        client,
        project_id=project["id"],
        prompt_id=bound_prompt["id"],
        input="Where is my parcel?",
        variables={"persona": "a courier"},
    )
    names = [name for name, _ in events]
    assert names == ["meta"] + ["content"] * 5 + ["done"]
    meta, done = events[0][1], events[-1][1]
    assert set(meta) >= {"dialog_id", "turn_id"}
    assert meta["prompt_version"] == 1
    assert set(done) == {"finish_reason", "usage", "cost", "ttft_ms", "latency_ms"}
    answer = "".join(data["delta"] for name, data in events if name == "content")

    sent = fake_deepseek.chat_requests()[-1].body
    assert sent["messages"] == [
        {"role": "system", "content": "You are a courier."},
        {"role": "user", "content": "Where is my parcel?"},
    ]
    assert sent["temperature"] == 0.4

    user, assistant = sorted(
        wait_for_turn(database, meta["turn_id"]), key=lambda m: m["role"] != "user"
    )
    assert (user["content"], assistant["content"]) == ("Where is my parcel?", answer)
    assert assistant["status"] == "ok"
    # The writer recounts the dialog's summary just after storing the messages.
    dialog = wait_for(
        lambda: (
            (found := client.get(f"/dialogs/{meta['dialog_id']}").json())["message_count"] == 2
            and found
        )
    )
    assert dialog["project_id"] == project["id"]
    assert dialog["prompt_id"] == bound_prompt["id"]
    assert dialog["title"] == "Where is my parcel?"
    assert dialog["message_count"] == 2
    assert [m["role"] for m in dialog["messages"]] == ["user", "assistant"]
    assert dialog["messages"][1]["usage"] == done["usage"]


def test_next_turn_sees_the_history_without_reasoning(
    client: httpx.Client, project: dict, database: Database, fake_deepseek: FakeDeepSeek
) -> None:
    fake_deepseek.default_scenario = Scenario(reply="Paris.", reasoning="Capital of France.")
    first = chat(
        client,
        project_id=project["id"],
        input="Capital of France?",
        config={"model": "deepseek-reasoner"},
    )
    meta = first[0][1]
    assert [name for name, _ in first].count("reasoning") >= 1
    wait_for_turn(database, meta["turn_id"])
    stored = database.messages.find_one({"turn_id": meta["turn_id"], "role": "assistant"})
    assert (stored["content"], stored["reasoning"]) == ("Paris.", "Capital of France.")

    second = chat(
        client,
        dialog_id=meta["dialog_id"],
        input="And of Italy?",
        config={"model": "deepseek-reasoner"},
    )
    assert second[-1][0] == "done"
    sent = fake_deepseek.chat_requests()[-1].body["messages"]
    assert sent == [
        {"role": "user", "content": "Capital of France?"},
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "And of Italy?"},
    ]


def test_history_window_is_bounded_by_count_and_tokens(
    client: httpx.Client,
    project: dict,
    database: Database,
    fake_deepseek: FakeDeepSeek,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_deepseek.default_scenario = Scenario(reply="ok")
    dialog_id = None
    for index in range(4):
        body = {"input": f"question {index} " + "x" * 40}
        body |= {"dialog_id": dialog_id} if dialog_id else {"project_id": project["id"]}
        meta = chat(client, **body)[0][1]
        dialog_id = meta["dialog_id"]
        wait_for_turn(database, meta["turn_id"])

    configure(monkeypatch, CHAT_HISTORY_MAX_MESSAGES="5")
    meta = chat(client, dialog_id=dialog_id, input="latest")[0][1]
    sent = fake_deepseek.chat_requests()[-1].body["messages"]
    # Five newest messages, but a window never opens on an answer without its question.
    assert [m["content"][:10] for m in sent] == ["question 2", "ok", "question 3", "ok", "latest"]
    wait_for_turn(database, meta["turn_id"])

    # question 3 + "ok" (~14 tokens) no longer fit beside the newest turn (~3 tokens).
    configure(monkeypatch, CHAT_HISTORY_MAX_TOKENS="15")
    chat(client, dialog_id=dialog_id, input="newest")
    sent = fake_deepseek.chat_requests()[-1].body["messages"]
    assert [m["content"] for m in sent] == ["latest", "ok", "newest"]


def test_label_moves_apply_to_the_next_turn(
    client: httpx.Client,
    project: dict,
    bound_prompt: dict,
    database: Database,
    fake_deepseek: FakeDeepSeek,
) -> None:
    meta = chat(
        client,
        project_id=project["id"],
        prompt_id=bound_prompt["id"],
        label="production",
        input="hi",
        variables={"persona": "calm"},
    )[0][1]
    wait_for_turn(database, meta["turn_id"])
    client.put(
        f"/prompts/{bound_prompt['id']}",
        json={"messages": [{"role": "system", "content": "Be {{persona}} and brief."}]},
    )
    client.put(f"/prompts/{bound_prompt['id']}/labels/production", json={"version": 2})
    second = chat(client, dialog_id=meta["dialog_id"], input="again", variables={"persona": "calm"})
    assert second[0][1]["prompt_version"] == 2
    assert fake_deepseek.chat_requests()[-1].body["messages"][0] == {
        "role": "system",
        "content": "Be calm and brief.",
    }


def test_bad_requests_are_4xx_before_any_stream(
    client: httpx.Client, project: dict, bound_prompt: dict, database: Database
) -> None:
    cases = [
        ({"input": "hi"}, 422),
        ({"project_id": project["id"], "dialog_id": "x", "input": "hi"}, 422),
        ({"project_id": project["id"], "input": ""}, 422),
        ({"dialog_id": "6b0731e5942f52642075caa9", "input": "hi"}, 404),
        ({"project_id": "6b0731e5942f52642075caa9", "input": "hi"}, 404),
        ({"project_id": project["id"], "prompt_id": bound_prompt["id"], "input": "hi"}, 422),
    ]
    for body, status in cases:
        response = client.post("/chat", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.headers["content-type"] == "application/json"
    assert database.messages.count_documents({}) == 0


def test_a_dialog_whose_prompt_was_deleted_gets_a_404_before_any_stream(
    client: httpx.Client, project: dict, bound_prompt: dict, database: Database
) -> None:
    dialog = client.post(
        "/dialogs", json={"project_id": project["id"], "prompt_id": bound_prompt["id"]}
    ).json()
    assert client.delete(f"/prompts/{bound_prompt['id']}").status_code == 204
    response = client.post("/chat", json={"dialog_id": dialog["id"], "input": "hi"})
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
    assert bound_prompt["id"] in response.json()["error"]["message"]
    assert database.messages.count_documents({}) == 0


@pytest.mark.parametrize(
    ("scenario", "error"),
    [
        ({"status": 500}, {"code": "upstream_unavailable"}),
        ({"status": 429, "retry_after": 60}, {"code": "upstream_rate_limited", "retry_after": 60}),
        ({"tokens": 6, "cut_after_chunks": 2}, {"code": "upstream_stream_broken"}),
    ],
)
def test_upstream_failure_mid_stream_ends_with_error_and_saves_the_partial_turn(
    client: httpx.Client, project: dict, database: Database, scenario: dict, error: dict
) -> None:
    events = chat(client, project_id=project["id"], input="question " + fake(**scenario))
    assert events[0][0] == "meta"
    message = events[-1][1]["message"]
    # `retry_after` (seconds) only when DeepSeek sent a Retry-After.
    assert events[-1] == ("error", {**error, "message": message})
    partial = "".join(data["delta"] for name, data in events if name == "content")
    messages = wait_for_turn(database, events[0][1]["turn_id"])
    assistant = next(m for m in messages if m["role"] == "assistant")
    assert (assistant["status"], assistant["content"]) == ("error", partial)
    assert assistant["run"]["error"] == {"code": error["code"], "message": message}


def test_client_disconnect_stops_upstream_and_saves_the_partial_turn(
    client: httpx.Client, project: dict, database: Database, fake_deepseek: FakeDeepSeek
) -> None:
    body = {"project_id": project["id"], "input": "long " + fake(tokens=200, token_interval_s=0.05)}
    turn_id = None
    with client.stream("POST", "/chat", json=body) as response:
        name, received = None, 0
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: ") and name == "meta":
                turn_id = json.loads(line[6:])["turn_id"]
            elif line.startswith("data: ") and name == "content":
                received += 1
                if received == 3:
                    break
    upstream = fake_deepseek.wait_for(
        lambda: next((r for r in fake_deepseek.chat_requests() if r.disconnected), None), 5
    )
    assert not upstream.completed
    messages = wait_for_turn(database, turn_id)
    assistant = next(m for m in messages if m["role"] == "assistant")
    assert assistant["status"] == "cancelled"
    assert assistant["content"].startswith("tok0 tok1 tok2 ")


def test_keepalive_comments_while_the_first_token_is_slow(
    client: httpx.Client, project: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, STREAM_KEEPALIVE_S="0.1")
    body = {"project_id": project["id"], "input": fake(first_token_delay_s=0.5, tokens=2)}
    with client.stream("POST", "/chat", json=body) as response:
        lines = [line for line in response.iter_lines() if line]
    first_content = lines.index("event: content")
    assert lines[0] == "event: meta"
    assert lines[:first_content].count(": keep-alive") >= 3
    assert lines[-2] == "event: done"
