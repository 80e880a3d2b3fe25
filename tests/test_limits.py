"""A project's limits on the routes that call DeepSeek: the output cap (422), the monthly budget
(402, and its overshoot under concurrency), requests per minute (429), also across two function
processes sharing one MongoDB."""

import json
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from pymongo.database import Database

from devtools.embedded_mongo import free_port
from devtools.fake_deepseek import FakeDeepSeek
from devtools.gateway import FUNCTIONS_DIR, TARGET
from devtools.processes import wait_until_healthy
from tests.conftest import ADMIN_HEADERS, configure
from tests.test_datasets import create_dataset
from tests.test_evaluations import finished
from tests.test_executions import fake
from tests.test_standalone_functions import CLI

# A dollar per output token and nothing for input: a call's cost is its answer's length.
PRICES = {"deepseek-v4-flash": {"input_cache_hit": 0, "input_cache_miss": 0, "output": 1e6}}
CALL_COST = 5.0
FIVE_TOKENS = {"tokens": 5}


def set_limits(client: httpx.Client, project: dict, **limits: object) -> None:
    response = client.put(f"/projects/{project['id']}", json={"limits": limits})
    assert response.status_code == 200, response.text


def execute(
    client: httpx.Client, prompt: dict, question: str = "why?", **body: object
) -> httpx.Response:
    payload = {"prompt_id": prompt["id"], "variables": {"question": question}, **body}
    return client.post("/executions", json=payload)


def refused(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    return error


def stored(database: Database) -> dict[str, int]:
    """What the calls could have left behind."""
    names = ("executions", "dialogs", "evaluations", "evaluation_cells", "usage_ledger")
    return {name: database[name].count_documents({}) for name in names}


@pytest.fixture
def priced(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, DEEPSEEK_PRICES=json.dumps(PRICES))


def test_output_above_the_cap_is_refused_and_nothing_is_stored(
    client: httpx.Client,
    project: dict,
    make_prompt,
    database: Database,
    fake_deepseek: FakeDeepSeek,
) -> None:
    set_limits(client, project, max_output_tokens=100)
    prompt = make_prompt()
    long_prompt = make_prompt(config={"max_tokens": 500})
    dataset = create_dataset(client, project, cases=[{"variables": {"question": "x"}}])

    error = refused(execute(client, prompt, config={"max_tokens": 101}), 422, "validation_failed")
    assert error["details"][0]["loc"] == ["body", "config", "max_tokens"]
    # The prompt's own config counts too: the request must lower it.
    refused(execute(client, long_prompt), 422, "validation_failed")
    refused(
        execute(client, long_prompt, stream=True, config={"max_tokens": 1000}),
        422,
        "validation_failed",
    )
    chat = {"project_id": project["id"], "input": "hi", "config": {"max_tokens": 101}}
    refused(client.post("/chat", json=chat), 422, "validation_failed")
    evaluation = {
        "prompt_id": prompt["id"],
        "dataset_id": dataset["id"],
        "targets": [{}, {"config": {"max_tokens": 101}}],
    }
    error = refused(client.post("/evaluations", json=evaluation), 422, "validation_failed")
    assert error["details"][0]["loc"] == ["body", "targets", 1, "config", "max_tokens"]

    assert set(stored(database).values()) == {0}
    assert fake_deepseek.chat_requests() == []
    assert execute(client, long_prompt, config={"max_tokens": 100}).status_code == 201


def test_without_max_tokens_deepseek_gets_the_cap(
    client: httpx.Client, project: dict, make_prompt, fake_deepseek: FakeDeepSeek
) -> None:
    set_limits(client, project, max_output_tokens=64)
    prompt = make_prompt()
    record = execute(client, prompt).json()
    assert record["params"]["max_tokens"] == 64
    execute(client, prompt, config={"max_tokens": 10})
    with client.stream(
        "POST", "/chat", json={"project_id": project["id"], "input": "hi"}
    ) as response:
        assert response.status_code == 200
        response.read()
    sent = [request.body["max_tokens"] for request in fake_deepseek.chat_requests()]
    assert sent == [64, 10, 64]


def test_a_spent_budget_refuses_every_call_before_deepseek(
    client: httpx.Client,
    project: dict,
    make_prompt,
    priced: None,
    database: Database,
    fake_deepseek: FakeDeepSeek,
) -> None:
    set_limits(client, project, monthly_budget_usd=4)
    prompt = make_prompt()
    dataset = create_dataset(client, project, cases=[{"variables": {"question": "x"}}])
    first = execute(client, prompt, fake(**FIVE_TOKENS))
    assert (first.status_code, first.json()["cost"]) == (201, CALL_COST)
    before = stored(database)

    error = refused(execute(client, prompt), 402, "budget_exceeded")
    assert error["details"]["budget_usd"] == 4
    assert error["details"]["spent_usd"] == CALL_COST
    assert len(error["details"]["month"]) == 7
    refused(execute(client, prompt, stream=True), 402, "budget_exceeded")
    chat = {"project_id": project["id"], "input": "hi"}
    refused(client.post("/chat", json=chat), 402, "budget_exceeded")
    evaluation = {"prompt_id": prompt["id"], "dataset_id": dataset["id"], "targets": [{}]}
    refused(client.post("/evaluations", json=evaluation), 402, "budget_exceeded")

    assert stored(database) == before
    assert len(fake_deepseek.chat_requests()) == 1
    # An owner raising the budget lets calls through again.
    set_limits(client, project, monthly_budget_usd=100)
    assert execute(client, prompt).status_code == 201


def test_calls_in_flight_overshoot_the_budget_by_at_most_their_own_cost(
    gateway_url: str,
    client: httpx.Client,
    project: dict,
    make_prompt,
    priced: None,
    fake_deepseek: FakeDeepSeek,
) -> None:
    """The bound: calls admitted while the ledger is under the budget all finish and count, so
    the month ends at most `in_flight` x (one call's cost) over the budget, and no later."""
    budget, in_flight = 7.0, 4
    set_limits(client, project, monthly_budget_usd=budget)
    prompt = make_prompt()
    assert execute(client, prompt, fake(**FIVE_TOKENS)).status_code == 201  # 5 of 7 spent

    slow = fake(**FIVE_TOKENS, first_token_delay_s=0.5)

    def run_one(_: int) -> httpx.Response:
        with httpx.Client(base_url=gateway_url, headers=ADMIN_HEADERS, timeout=30) as http:
            return execute(http, prompt, slow)

    with ThreadPoolExecutor(in_flight) as pool:
        responses = list(pool.map(run_one, range(in_flight)))
    # All were admitted under the budget, before any of them was counted.
    assert [response.status_code for response in responses] == [201] * in_flight

    spent = client.get(f"/projects/{project['id']}/usage").json()["month"]["spent_usd"]
    assert spent == CALL_COST * (1 + in_flight)
    assert budget < spent <= budget + in_flight * CALL_COST
    refused(execute(client, prompt), 402, "budget_exceeded")
    assert len(fake_deepseek.chat_requests()) == 1 + in_flight


def test_a_running_evaluation_stops_at_the_budget_and_records_the_rest_as_not_run(
    client: httpx.Client,
    project: dict,
    make_prompt,
    priced: None,
    database: Database,
    fake_deepseek: FakeDeepSeek,
) -> None:
    set_limits(client, project, monthly_budget_usd=7)
    prompt = make_prompt(template="{{question}} " + fake(**FIVE_TOKENS))
    cases = [{"variables": {"question": f"q{n}"}} for n in range(5)]
    dataset = create_dataset(client, project, cases=cases)
    response = client.post(
        "/evaluations",
        json={
            "prompt_id": prompt["id"],
            "dataset_id": dataset["id"],
            "targets": [{}],
            "concurrency": 1,
        },
    )
    assert response.status_code == 202, response.text
    run = finished(client, response.json()["id"])

    # One cell at a time: the first two were admitted under the budget (0, then 5 of 7 spent).
    assert run["status"] == "completed"
    progress = run["progress"]
    assert (progress["done"], progress["passed"], progress["errors"]) == (5, 2, 3)
    errors = [
        row["targets"][0]["runs"][0]["error"]
        for row in run["results"]
        if row["targets"][0]["runs"][0]["error"]
    ]
    assert [error["code"] for error in errors] == ["budget_exceeded"] * 3
    assert len(fake_deepseek.chat_requests()) == 2
    assert database.executions.count_documents({}) == 2
    # Dispatching stopped: the cells after the refused one were never handed to a worker.
    assert database.evaluation_cells.count_documents({"attempts": {"$gte": 1}}) == 3


def test_requests_per_minute_per_key_answer_429_with_retry_after_and_change_nothing(
    client: httpx.Client,
    project: dict,
    make_prompt,
    key_headers,
    database: Database,
    fake_deepseek: FakeDeepSeek,
) -> None:
    set_limits(client, project, requests_per_minute=2)
    prompt = make_prompt()
    dataset = create_dataset(client, project, cases=[{"variables": {"question": "x"}}])
    editor, other = key_headers(project, "editor"), key_headers(project, "runner")
    body = {"prompt_id": prompt["id"], "variables": {"question": "x"}}

    assert client.post("/executions", json=body, headers=editor).status_code == 201
    with client.stream(
        "POST", "/chat", json={"project_id": project["id"], "input": "hi"}, headers=editor
    ) as response:
        assert response.status_code == 200
        response.read()
    before = stored(database)
    window = database.rate_windows.find_one()

    limited = client.post("/executions", json=body, headers=editor)
    error = refused(limited, 429, "rate_limited")
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert error["details"]["requests_per_minute"] == 2
    chat = {"project_id": project["id"], "input": "hi"}
    refused(client.post("/chat", json=chat, headers=editor), 429, "rate_limited")
    evaluation = {"prompt_id": prompt["id"], "dataset_id": dataset["id"], "targets": [{}]}
    refused(client.post("/evaluations", json=evaluation, headers=editor), 429, "rate_limited")

    assert stored(database) == before
    assert database.rate_windows.find_one() == window
    assert len(fake_deepseek.chat_requests()) == 2
    # Per caller: another key has its own window, and the operators' admin key has none.
    assert client.post("/executions", json=body, headers=other).status_code == 201
    for _ in range(3):
        assert client.post("/executions", json=body).status_code == 201
    # Windows end on their own: a TTL index removes them.
    ttl = database.rate_windows.index_information()["expire_ended"]
    assert (ttl["key"], ttl["expireAfterSeconds"]) == ([("expires_at", 1)], 0)


@pytest.fixture
def two_replicas(environment: str) -> Iterator[list[str]]:
    """The executions function twice, as two replicas: two processes, one MongoDB."""
    processes, urls = [], []
    try:
        for _ in range(2):
            port = free_port()
            processes.append(
                subprocess.Popen(
                    [
                        str(CLI),
                        "--source",
                        str(FUNCTIONS_DIR / "executions" / "main.py"),
                        "--target",
                        TARGET,
                    ],
                    env={**os.environ, "PORT": str(port)},
                    cwd="/",
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
            urls.append(f"http://127.0.0.1:{port}")
        for process, url in zip(processes, urls, strict=True):
            wait_until_healthy(url, process)
        yield urls
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


def test_requests_per_minute_hold_across_two_processes_sharing_mongodb(
    two_replicas: list[str],
    client: httpx.Client,
    project: dict,
    make_prompt,
    key_headers,
    fake_deepseek: FakeDeepSeek,
) -> None:
    set_limits(client, project, requests_per_minute=3)
    prompt = make_prompt()
    runner = key_headers(project, "runner")
    body = {"prompt_id": prompt["id"], "variables": {"question": "x"}}
    first, second = (httpx.Client(base_url=url, headers=runner, timeout=30) for url in two_replicas)
    with first, second:
        statuses = [
            replica.post("/", json=body).status_code
            for replica in (first, second, first, second, first)
        ]
        assert statuses == [201, 201, 201, 429, 429]
    assert len(fake_deepseek.chat_requests()) == 3
