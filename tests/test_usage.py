"""The usage ledger: every finished call's final usage, by day and by key or user, read back
through GET /projects/{id}/usage."""

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pymongo.database import Database

from devtools.fake_deepseek import FakeDeepSeek, Scenario
from tests.test_chat import chat, wait_for
from tests.test_datasets import create_dataset
from tests.test_evaluations import finished
from tests.test_executions import fake, read_events


def usage(client: httpx.Client, project: dict, **params: str) -> dict:
    response = client.get(f"/projects/{project['id']}/usage", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def tokens_of(usage_figures: dict) -> dict:
    """The ledger's token figures for a call's `usage` as DeepSeek reported it."""
    return {
        "prompt_cache_hit": usage_figures["prompt_cache_hit_tokens"],
        "prompt_cache_miss": usage_figures["prompt_cache_miss_tokens"],
        "completion": usage_figures["completion_tokens"],
    }


def add_member(client: httpx.Client, project: dict, user: str, role: str) -> None:
    response = client.put(f"/projects/{project['id']}/members/{user}", json={"role": role})
    assert response.status_code == 200, response.text


def test_the_ledger_holds_every_calls_final_usage_by_day_and_by_caller(
    client: httpx.Client,
    project: dict,
    make_prompt,
    key_headers,
    user_headers,
    fake_deepseek: FakeDeepSeek,
    database: Database,
) -> None:
    fake_deepseek.default_scenario = Scenario(tokens=7, cache_hit_tokens=3)
    prompt = make_prompt()
    runner = key_headers(project, "runner")
    add_member(client, project, "alice", "runner")
    alice = user_headers("alice", name="Alice")
    body = {"prompt_id": prompt["id"], "variables": {"question": "why?"}}

    by_key = client.post("/executions", json=body, headers=runner).json()
    with client.stream(
        "POST", "/executions", json={**body, "stream": True}, headers=alice
    ) as response:
        assert response.status_code == 200
        streamed = dict(read_events(response))["done"]
    chatted = chat(client, project_id=project["id"], input="Hello there, how are you today?")[-1][1]
    calls = [by_key, streamed, chatted]
    assert all(call["usage"]["prompt_cache_hit_tokens"] == 3 for call in calls)

    report = usage(client, project)
    today = datetime.now(UTC).date().isoformat()
    assert (report["since"], report["until"]) == (today[:8] + "01", today)
    assert report["calls"] == 3
    assert report["spend_usd"] == pytest.approx(sum(call["cost"] for call in calls))
    assert report["spend_usd"] > 0
    assert report["tokens"] == {
        name: sum(tokens_of(call["usage"])[name] for call in calls)
        for name in ("prompt_cache_hit", "prompt_cache_miss", "completion")
    }
    [day] = report["by_day"]
    assert day["day"] == today
    assert (day["calls"], day["tokens"]) == (3, report["tokens"])

    by_actor = {row["actor"]["kind"]: row for row in report["by_actor"]}
    assert set(by_actor) == {"key", "user", "admin"}
    assert by_actor["key"]["actor"]["name"] == "runner key"
    assert by_actor["user"]["actor"] == {"kind": "user", "id": "alice", "name": "Alice"}
    for kind, call in zip(("key", "user", "admin"), calls, strict=True):
        assert by_actor[kind]["calls"] == 1
        assert by_actor[kind]["tokens"] == tokens_of(call["usage"])
        assert by_actor[kind]["spend_usd"] == pytest.approx(call["cost"])
    assert report["month"] == {
        "month": today[:7],
        "budget_usd": None,
        "spent_usd": pytest.approx(report["spend_usd"]),
        "remaining_usd": None,
    }
    # One document per day and caller, and one per month for the budget check.
    assert database.usage_ledger.count_documents({"day": {"$exists": True}}) == 3
    assert database.usage_ledger.count_documents({"month": {"$exists": True}}) == 1


def test_a_failed_call_costs_nothing_and_remaining_budget_is_reported(
    client: httpx.Client, project: dict, make_prompt, fake_deepseek: FakeDeepSeek
) -> None:
    prompt = make_prompt()
    body = {"prompt_id": prompt["id"], "variables": {"question": fake(status=500)}}
    assert client.post("/executions", json=body).status_code == 503
    assert usage(client, project)["calls"] == 0

    body["variables"] = {"question": "fine"}
    cost = client.post("/executions", json=body).json()["cost"]
    client.put(f"/projects/{project['id']}", json={"limits": {"monthly_budget_usd": 1}})
    month = usage(client, project)["month"]
    assert (month["budget_usd"], month["spent_usd"]) == (1, pytest.approx(cost))
    assert month["remaining_usd"] == pytest.approx(1 - cost)


def test_evaluation_cells_and_their_judge_calls_are_billed_to_who_started_the_run(
    client: httpx.Client, project: dict, make_prompt, key_headers
) -> None:
    prompt = make_prompt(template="{{answer}}")
    verdict = "Polite? " + fake(reply='{"pass": true, "reason": "polite"}')
    cases = [
        {
            "variables": {"answer": fake(reply=f"Happy to help {n}.")},
            "assertions": [{"type": "judge", "rubric": verdict}],
        }
        for n in range(2)
    ]
    dataset = create_dataset(client, project, cases=cases)
    editor = key_headers(project, "editor")
    response = client.post(
        "/evaluations",
        json={"prompt_id": prompt["id"], "dataset_id": dataset["id"], "targets": [{}]},
        headers=editor,
    )
    assert response.status_code == 202, response.text
    run = response.json()
    assert run["started_by"]["kind"] == "key"
    run = finished(client, run["id"])
    [summary] = run["summary"]
    assert summary["passed"] == 2

    report = usage(client, project)
    [payer] = report["by_actor"]
    assert payer["actor"] == run["started_by"]
    assert payer["calls"] == 4  # each cell: its own call and the judge's
    assert payer["spend_usd"] == pytest.approx(summary["cost"] + summary["judge_cost"])


def test_the_range_is_checked_and_only_its_days_are_summed(
    client: httpx.Client, project: dict, make_prompt, key_headers
) -> None:
    prompt = make_prompt()
    client.post("/executions", json={"prompt_id": prompt["id"], "variables": {"question": "x"}})
    today = datetime.now(UTC).date()
    path = f"/projects/{project['id']}/usage"
    for params in (
        {"since": today.isoformat(), "until": (today - timedelta(days=1)).isoformat()},
        {"since": (today - timedelta(days=366)).isoformat(), "until": today.isoformat()},
        {"since": "yesterday"},
    ):
        response = client.get(path, params=params)
        assert response.status_code == 422, params
        assert response.json()["error"]["code"] == "validation_failed"

    yesterday = (today - timedelta(days=1)).isoformat()
    past = usage(client, project, since=(today - timedelta(days=365)).isoformat(), until=yesterday)
    assert (past["calls"], past["by_day"], past["by_actor"]) == (0, [], [])
    assert past["month"]["spent_usd"] > 0  # the month is always the current one

    # Reading usage is reading the project: a viewer may, a runner key may not.
    assert client.get(path, headers=key_headers(project, "viewer")).status_code == 200
    assert client.get(path, headers=key_headers(project, "runner")).status_code == 403


def test_a_stream_cut_off_before_its_usage_is_counted_from_what_was_sent_and_received(
    client: httpx.Client, project: dict, database: Database, fake_deepseek: FakeDeepSeek
) -> None:
    """DeepSeek bills the tokens it streamed even when the caller leaves before the final usage
    chunk, so leaving early must not be a way around the budget."""
    body = {"project_id": project["id"], "input": "long " + fake(tokens=200, token_interval_s=0.05)}
    with client.stream("POST", "/chat", json=body) as response:
        received = 0
        for line in response.iter_lines():
            if line.startswith("event: content"):
                received += 1
                if received == 3:
                    break
    wait_for(lambda: database.usage_ledger.find_one({"day": {"$exists": True}}), 5)
    report = usage(client, project)
    assert report["calls"] == 1
    assert report["tokens"]["prompt_cache_miss"] > 0
    assert 0 < report["tokens"]["completion"] < 200
    assert report["spend_usd"] > 0
