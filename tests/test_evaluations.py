"""Evaluation runs through the gateway and the fake DeepSeek: the matrix of cases x targets x
repeat, grading, progress, cancellation, comparison, idempotent cells and release gates."""

import json
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from bson import ObjectId
from pydantic import SecretStr
from pymongo.database import Database

from devtools.fake_deepseek import FakeDeepSeek
from shared.queues.signatures import sign, sign_data
from shared.settings import get_settings
from shared.workflows.evaluations.models import CellEvent
from shared.workflows.evaluations.repository import EvaluationRepository
from shared.workflows.sqs_drain import drain
from tests.conftest import configure
from tests.test_datasets import create_dataset
from tests.test_executions import fake
from tests.test_history_publishers import StubGateway

MISSING_ID = "6b0731e5942f52642075caa9"


def replying(text: str) -> str:
    """A prompt template whose answer is always `text` (the directive is part of the prompt)."""
    return "Answer {{q}} " + fake(reply=text)


def started(client: httpx.Client, **body: object) -> dict:
    response = client.post("/evaluations", json=body)
    assert response.status_code == 202, response.text
    return response.json()


def finished(client: httpx.Client, evaluation_id: str, timeout: float = 30) -> dict:
    """The run once it is completed or cancelled with nothing left in flight."""
    deadline = time.monotonic() + timeout
    while True:
        run = client.get(f"/evaluations/{evaluation_id}").json()
        progress = run["progress"]
        if progress["done"] + progress["cancelled"] == progress["total"] and run["status"] in (
            "completed",
            "cancelled",
        ):
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.05)


@pytest.fixture
def prompt(make_prompt) -> dict:
    return make_prompt(template=replying("Paris is the capital."))


def new_version(client: httpx.Client, prompt: dict, reply: str) -> int:
    response = client.put(f"/prompts/{prompt['id']}", json={"template": replying(reply)})
    assert response.status_code == 200, response.text
    return response.json()["version"]["version"]


def questions(*texts: str, **fields: object) -> list[dict]:
    return [{"variables": {"q": text}, **fields} for text in texts]


def test_a_run_answers_at_once_then_grades_every_case(
    client: httpx.Client, project: dict, prompt: dict, database: Database
) -> None:
    dataset = create_dataset(
        client,
        project,
        cases=[
            {"variables": {"q": "capital?"}, "expected": "Paris is the capital."},
            {"variables": {"q": "capital?"}, "assertions": [{"type": "contains", "value": "Lyon"}]},
            {"variables": {"q": "capital?"}},
        ],
    )
    run = started(
        client,
        prompt_id=prompt["id"],
        dataset_id=dataset["id"],
        targets=[{}],
        assertions=[{"type": "starts_with", "value": "paris", "case_insensitive": True}],
    )
    assert (run["status"], run["total"], run["case_count"]) == ("queued", 3, 3)
    assert run["targets"] == [
        {"index": 0, "name": "v1", "version": 1, "label": None, "config": None}
    ]

    run = finished(client, run["id"])
    assert run["status"] == "completed"
    assert run["progress"] == {
        "total": 3,
        "done": 3,
        "passed": 2,
        "failed": 1,
        "errors": 0,
        "cancelled": 0,
        "percent": 100.0,
    }
    [summary] = run["summary"]
    assert (summary["passed"], summary["failed"], summary["pass_rate"]) == (2, 1, 0.6667)
    assert summary["assertions"] == {
        "contains": {"passed": 0, "failed": 1, "errors": 0, "pass_rate": 0.0},
        "equals": {"passed": 1, "failed": 0, "errors": 0, "pass_rate": 1.0},
        "starts_with": {"passed": 3, "failed": 0, "errors": 0, "pass_rate": 1.0},
    }
    assert summary["stability"] is None
    assert summary["total_tokens"] > 0 and summary["cost"] > 0
    assert summary["latency_mean_ms"] > 0 and summary["latency_p95_ms"] > 0

    # Failures first; every cell is an execution record of its own.
    first, *rest = run["results"]
    assert first["targets"][0]["passed"] is False
    assert [row["targets"][0]["passed"] for row in rest] == [True, True]
    [cell] = first["targets"][0]["runs"]
    assert cell["output"] == "Paris is the capital."
    assert [(a["type"], a["passed"]) for a in cell["assertions"]] == [
        ("starts_with", True),
        ("contains", False),
    ]
    execution = client.get(f"/executions/{cell['execution_id']}").json()
    assert (execution["source"], execution["status"], execution["output"]) == (
        "evaluation",
        "ok",
        "Paris is the capital.",
    )
    assert database.executions.count_documents({"source": "evaluation"}) == 3


def test_two_targets_repeated_compare_side_by_side(
    client: httpx.Client, project: dict, prompt: dict
) -> None:
    worse = new_version(client, prompt, "No idea.")
    dataset = create_dataset(client, project, cases=questions("capital?", "river?"))
    run = started(
        client,
        prompt_id=prompt["id"],
        dataset_id=dataset["id"],
        targets=[{"version": 1}, {"label": "latest", "config": {"temperature": 0.2}}],
        assertions=[{"type": "contains", "value": "Paris"}],
        repeat=2,
        concurrency=3,
    )
    assert run["total"] == 2 * 2 * 2
    assert [target["name"] for target in run["targets"]] == ["v1", f"latest@v{worse}+config"]
    run = finished(client, run["id"])
    better, worse_summary = run["summary"]
    assert (better["cells"], better["pass_rate"], better["stability"]) == (4, 1.0, 1.0)
    assert (worse_summary["cells"], worse_summary["pass_rate"], worse_summary["stability"]) == (
        4,
        0.0,
        0.0,
    )
    for row in run["results"]:
        assert [len(column["runs"]) for column in row["targets"]] == [2, 2]

    comparison = client.get(f"/evaluations/{run['id']}/compare?a=0&b=1").json()
    assert (comparison["a"]["version"], comparison["b"]["version"]) == (1, worse)
    assert len(comparison["pass_to_fail"]) == 2 and comparison["fail_to_pass"] == []
    change = comparison["pass_to_fail"][0]
    assert change["a"]["runs"][0]["output"] == "Paris is the capital."
    assert change["b"]["runs"][0]["output"] == "No idea."
    reverse = client.get(f"/evaluations/{run['id']}/compare", params={"a": "v1+x", "b": "v1"})
    assert reverse.status_code == 422
    assert reverse.json()["error"]["code"] == "unknown_target"
    by_name = client.get(
        f"/evaluations/{run['id']}/compare", params={"a": run["targets"][1]["name"], "b": "v1"}
    ).json()
    assert len(by_name["fail_to_pass"]) == 2


def test_a_page_of_cases_and_a_comparison_read_the_right_cases(
    client: httpx.Client, project: dict, prompt: dict
) -> None:
    worse = new_version(client, prompt, "No idea.")
    lyon = {"assertions": [{"type": "contains", "value": "Lyon"}]}
    cases = [*questions("a?"), *questions("b?", **lyon), *questions("c?", "d?")]
    dataset = create_dataset(client, project, cases=cases)
    run = started(
        client,
        prompt_id=prompt["id"],
        dataset_id=dataset["id"],
        targets=[{"version": 1}, {"version": worse}],
        assertions=[{"type": "contains", "value": "Paris"}],
    )
    finished(client, run["id"])
    case_ids = [case["id"] for case in client.get(f"/datasets/{dataset['id']}").json()["cases"]]
    # Every case fails on the worse version, so the table keeps case order.
    for offset in range(4):
        page = client.get(f"/evaluations/{run['id']}", params={"offset": offset, "limit": 1})
        [row] = page.json()["results"]
        assert (row["case_id"], page.json()["results_total"]) == (case_ids[offset], 4)
        assert [len(column["runs"]) for column in row["targets"]] == [1, 1]
    comparison = client.get(f"/evaluations/{run['id']}/compare?a=0&b=1").json()
    assert [change["case_id"] for change in comparison["pass_to_fail"]] == [
        case_ids[0],
        case_ids[2],
        case_ids[3],
    ]
    assert comparison["pass_to_fail"][1]["b"]["runs"][0]["output"] == "No idea."
    assert (comparison["both_failed"], comparison["both_passed"], comparison["undecided"]) == (
        1,
        0,
        0,
    )
    assert comparison["fail_to_pass"] == []


def test_stability_counts_cases_that_passed_every_repetition(
    client: httpx.Client, project: dict, prompt: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, DEEPSEEK_MAX_RETRIES="0")
    flaky = {"variables": {"q": "x"}, "input": fake(status=503, fail_times=1, reply="Paris")}
    dataset = create_dataset(client, project, cases=[flaky, *questions("capital?")])
    run = started(
        client,
        prompt_id=prompt["id"],
        dataset_id=dataset["id"],
        targets=[{}],
        assertions=[{"type": "contains", "value": "Paris"}],
        repeat=2,
        concurrency=1,
    )
    run = finished(client, run["id"])
    [summary] = run["summary"]
    assert (summary["passed"], summary["errors"], summary["stability"]) == (3, 1, 0.5)
    errored = run["results"][0]["targets"][0]["runs"][0]
    assert (errored["status"], errored["passed"]) == ("error", None)
    assert errored["error"]["code"] == "upstream_unavailable"


def test_a_cell_failing_upstream_is_an_error_and_the_run_completes(
    client: httpx.Client, project: dict, prompt: dict
) -> None:
    broken = {"variables": {"q": "x"}, "input": fake(status=402)}
    dataset = create_dataset(client, project, cases=[broken, *questions("capital?")])
    run = finished(
        client,
        started(client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}])["id"],
    )
    assert run["status"] == "completed"
    assert (run["progress"]["passed"], run["progress"]["errors"]) == (1, 1)
    cell = run["results"][0]["targets"][0]["runs"][0]
    assert cell["error"]["code"] == "upstream_insufficient_balance"
    assert client.get(f"/executions/{cell['execution_id']}").json()["status"] == "error"


def test_a_case_missing_a_variable_is_an_error_cell(
    client: httpx.Client, project: dict, prompt: dict
) -> None:
    dataset = create_dataset(client, project, cases=[{"variables": {}}, *questions("capital?")])
    run = finished(
        client,
        started(client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}])["id"],
    )
    cell = run["results"][0]["targets"][0]["runs"][0]
    assert (cell["execution_id"], cell["error"]["code"]) == (None, "missing_variables")
    assert "q" in cell["error"]["message"]


def test_multi_turn_cases_send_their_history(
    client: httpx.Client, project: dict, make_prompt, fake_deepseek: FakeDeepSeek
) -> None:
    prompt = make_prompt(
        type="chat", template=None, messages=[{"role": "system", "content": "Be brief."}]
    )
    history = [
        {"role": "user", "content": "My name is Ada."},
        {"role": "assistant", "content": "Hello Ada."},
    ]
    dataset = create_dataset(
        client,
        project,
        cases=[{"input": "What is my name? " + fake(echo=True), "history": history}],
    )
    run = finished(
        client,
        started(
            client,
            prompt_id=prompt["id"],
            dataset_id=dataset["id"],
            targets=[{}],
            assertions=[{"type": "contains", "value": "My name is Ada."}],
        )["id"],
    )
    assert run["progress"]["passed"] == 1
    [request] = fake_deepseek.chat_requests()
    assert [m["role"] for m in request.body["messages"]] == ["system", "user", "assistant", "user"]


def test_the_judge_grades_cells_and_sees_the_history(
    client: httpx.Client, project: dict, make_prompt, fake_deepseek: FakeDeepSeek
) -> None:
    prompt = make_prompt(template="{{answer}}")
    passing = "Polite? " + fake(reply=json.dumps({"pass": True, "reason": "polite"}))
    unparseable = "Polite? " + fake(reply="probably")
    history = [{"role": "user", "content": "Earlier question"}]
    cases = [
        {
            "variables": {"answer": fake(reply="Happy to help.")},
            "history": history,
            "assertions": [{"type": "judge", "rubric": passing}],
        },
        {
            "variables": {"answer": fake(reply="Whatever.")},
            "assertions": [{"type": "judge", "rubric": unparseable}],
        },
    ]
    dataset = create_dataset(client, project, cases=cases)
    run = finished(
        client,
        started(
            client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}], concurrency=1
        )["id"],
    )
    [summary] = run["summary"]
    assert summary["assertions"] == {
        "judge": {"passed": 1, "failed": 0, "errors": 1, "pass_rate": 0.5}
    }
    assert summary["judge_cost"] > 0
    assert summary["judge_cost"] == pytest.approx(
        sum(row["targets"][0]["runs"][0]["judge_cost"] for row in run["results"])
    )
    unparsed = run["results"][0]["targets"][0]["runs"][0]["assertions"][0]
    assert (unparsed["passed"], unparsed["error"]) == (None, "unparseable_verdict")
    judged = [
        request.body["messages"][-1]["content"]
        for request in fake_deepseek.chat_requests()
        if request.body["messages"][0]["content"].startswith("You grade")
    ]
    assert any("CONVERSATION SO FAR" in text and "Earlier question" in text for text in judged)


def test_case_tags_choose_the_cases(client: httpx.Client, project: dict, prompt: dict) -> None:
    dataset = create_dataset(
        client,
        project,
        cases=[*questions("a", tags=["smoke"]), *questions("b", tags=["slow"]), *questions("c")],
    )
    run = started(
        client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}], case_tags=["smoke"]
    )
    assert run["total"] == 1
    assert finished(client, run["id"])["results"][0]["variables"] == {"q": "a"}


def test_bad_requests_are_refused_and_store_nothing(
    client: httpx.Client, project: dict, prompt: dict, database: Database
) -> None:
    dataset = create_dataset(client, project, cases=questions("a", tags=["smoke"]))
    other = client.post("/projects", json={"name": "Other"}).json()
    foreign = create_dataset(client, other, cases=questions("x"))
    base = {"prompt_id": prompt["id"], "dataset_id": dataset["id"], "targets": [{}]}
    refusals = [
        ({**base, "prompt_id": MISSING_ID}, 404, "not_found"),
        ({**base, "dataset_id": foreign["id"]}, 404, "not_found"),
        ({**base, "targets": []}, 422, "validation_failed"),
        ({**base, "targets": [{"version": 1, "label": "production"}]}, 422, "validation_failed"),
        ({**base, "targets": [{"label": "production"}]}, 404, "not_found"),
        ({**base, "targets": [{"version": 9}]}, 404, "not_found"),
        ({**base, "case_tags": ["none"]}, 422, "no_cases"),
        ({**base, "repeat": 0}, 422, "validation_failed"),
        ({**base, "assertions": [{"type": "regex", "pattern": "("}]}, 422, "validation_failed"),
    ]
    for body, status, code in refusals:
        response = client.post("/evaluations", json=body)
        assert (response.status_code, response.json()["error"]["code"]) == (status, code), body
    assert database.evaluations.count_documents({}) == 0
    assert database.evaluation_cells.count_documents({}) == 0
    assert client.get(f"/evaluations/{MISSING_ID}").status_code == 404
    assert client.post(f"/evaluations/{MISSING_ID}/cancel").status_code == 404


def test_runs_are_listed_by_prompt(client: httpx.Client, project: dict, prompt: dict) -> None:
    dataset = create_dataset(client, project, cases=questions("a"))
    first = started(client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}])
    second = started(client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}])
    page = client.get("/evaluations", params={"prompt_id": prompt["id"]}).json()
    assert [run["id"] for run in page["items"]] == [second["id"], first["id"]]
    assert page["total"] == 2
    for run in (first, second):
        finished(client, run["id"])


@pytest.fixture
def openfaas_queue(monkeypatch: pytest.MonkeyPatch):
    """Cells go to a stand-in for OpenFaaS's async route, which takes them and delivers
    nothing: the test plays the queue-worker and delivers them to `evaluation-worker`."""
    with StubGateway([202]) as gateway:
        configure(monkeypatch, EVALUATION_QUEUE="openfaas", EVALUATION_QUEUE_URL=gateway.url)
        yield gateway


def signed(cell: CellEvent) -> str:
    return sign(cell, get_settings().event_signing_keys)


def deliver(client: httpx.Client, queue: StubGateway, start: int = 0) -> list[dict]:
    """POST every cell the queue took, from `start` on, to the worker; its answers."""
    answers = []
    for path, sent, body in queue.requests[start:]:
        assert path == "/async-function/evaluation-worker"
        # The queue-worker hands the function the headers the publisher sent with the body.
        headers = {"Content-Type": "application/json", "ce-signature": sent["ce-signature"]}
        response = client.post("/evaluation-worker", content=body, headers=headers)
        assert response.status_code == 200, response.text
        answers.append(response.json())
    return answers


def deliver_all(client: httpx.Client, queue: StubGateway, start: int) -> None:
    """Play the queue-worker until the queue holds nothing undelivered (each cell a worker
    finishes queues the next)."""
    while len(queue.requests) > start:
        queued = len(queue.requests)
        deliver(client, queue, start=start)
        start = queued


def test_cells_go_through_the_queue_bounded_by_concurrency_and_run_once(
    client: httpx.Client,
    project: dict,
    prompt: dict,
    openfaas_queue: StubGateway,
    fake_deepseek: FakeDeepSeek,
) -> None:
    dataset = create_dataset(client, project, cases=questions("a", "b", "c", "d", "e"))
    run = started(
        client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}], concurrency=2
    )
    assert len(openfaas_queue.requests) == 2  # only `concurrency` cells are handed out

    [first, _] = deliver(client, openfaas_queue)[:2]
    assert first["outcome"] == "done"
    progress = client.get(f"/evaluations/{run['id']}").json()
    assert progress["status"] == "running"
    assert progress["progress"]["done"] == 2 and progress["progress"]["percent"] == 40.0
    assert len(openfaas_queue.requests) == 4  # each finished cell handed out the next

    # Redelivering cells that already ran runs and bills nothing again.
    again = deliver(client, openfaas_queue, start=0)[:2]
    assert [answer["outcome"] for answer in again] == ["duplicate", "duplicate"]
    deliver_all(client, openfaas_queue, start=4)
    run = finished(client, run["id"])
    assert run["progress"]["passed"] == 5
    assert len(fake_deepseek.chat_requests()) == 5


def test_a_redelivered_last_cell_completes_a_run_left_running(
    client: httpx.Client,
    project: dict,
    prompt: dict,
    openfaas_queue: StubGateway,
    database: Database,
) -> None:
    """The delivery that stored the run's last cell failed before completing the run: its
    retry, a duplicate, completes it."""
    dataset = create_dataset(client, project, cases=questions("a"))
    run = started(client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}])
    deliver(client, openfaas_queue)
    assert finished(client, run["id"])["status"] == "completed"
    database.evaluations.update_one(
        {"_id": ObjectId(run["id"])},
        {"$set": {"status": "running", "finished_at": None}, "$unset": {"target_results": ""}},
    )
    [answer] = deliver(client, openfaas_queue)
    assert answer["outcome"] == "duplicate"
    completed = database.evaluations.find_one({"_id": ObjectId(run["id"])})
    assert completed["status"] == "completed"
    assert completed["target_results"][0]["pass_rate"] == 1.0


def test_the_worker_takes_cloudevents_and_refuses_malformed_events(
    client: httpx.Client, project: dict, prompt: dict, openfaas_queue: StubGateway
) -> None:
    dataset = create_dataset(client, project, cases=questions("a"))
    run = started(client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}])
    [(_, sent, body)] = openfaas_queue.requests
    cell = json.loads(body)
    signature = sent["ce-signature"]
    headers = {
        "ce-signature": signature,
        "ce-specversion": "1.0",
        "ce-id": cell["cell_id"],
        "ce-type": "com.better-assistant.evaluation.cell",
        "ce-source": "/evaluations",
        "content-type": "application/json",
    }
    answer = client.post("/evaluation-worker", content=body, headers=headers).json()
    assert answer == {**cell, "outcome": "done", "passed": True}
    assert finished(client, run["id"])["status"] == "completed"

    structured = {
        "specversion": "1.0",
        "id": "x",
        "type": "t",
        "source": "s",
        "signature": signature,
        "data": cell,
    }
    replay = client.post(
        "/evaluation-worker",
        content=json.dumps(structured),
        headers={"content-type": "application/cloudevents+json"},
    )
    assert replay.json()["outcome"] == "duplicate"
    unknown_cell = CellEvent(evaluation_id=run["id"], cell_id=MISSING_ID)
    unknown = client.post(
        "/evaluation-worker",
        content=unknown_cell.model_dump_json(),
        headers={"content-type": "application/json", "ce-signature": signed(unknown_cell)},
    )
    assert unknown.json()["outcome"] == "unknown"
    not_a_cell = {"cell": "x"}
    malformed = client.post(
        "/evaluation-worker",
        json=not_a_cell,
        headers={"ce-signature": sign_data(not_a_cell, get_settings().event_signing_keys)},
    )
    assert malformed.status_code == 422
    assert client.post("/evaluation-worker", json=not_a_cell).status_code == 401


def test_the_worker_refuses_unsigned_and_forged_cells_and_runs_nothing(
    client: httpx.Client,
    project: dict,
    prompt: dict,
    openfaas_queue: StubGateway,
    fake_deepseek: FakeDeepSeek,
) -> None:
    dataset = create_dataset(client, project, cases=questions("a"))
    run = started(client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}])
    [(_, sent, body)] = openfaas_queue.requests
    forged = sign(CellEvent.model_validate_json(body), [SecretStr("not-our-key")])
    for headers, code in (
        ({}, "unsigned_event"),
        ({"ce-signature": forged}, "invalid_signature"),
        ({"ce-signature": sent["ce-signature"][::-1]}, "invalid_signature"),
    ):
        refused = client.post(
            "/evaluation-worker",
            content=body,
            headers={"content-type": "application/json", **headers},
        )
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, code)
    assert client.get(f"/evaluations/{run['id']}").json()["progress"]["done"] == 0
    assert fake_deepseek.chat_requests() == []


def test_cancel_stops_dispatching_and_keeps_finished_cells(
    client: httpx.Client, project: dict, prompt: dict, openfaas_queue: StubGateway
) -> None:
    dataset = create_dataset(client, project, cases=questions("a", "b", "c", "d"))
    run = started(
        client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}], concurrency=1
    )
    deliver(client, openfaas_queue)  # the first cell runs and hands out the second
    cancelled = client.post(f"/evaluations/{run['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    # The second cell was on the queue already: delivered now, it is not run.
    assert [a["outcome"] for a in deliver(client, openfaas_queue, start=1)] == ["cancelled"]
    assert len(openfaas_queue.requests) == 2
    run = finished(client, run["id"])
    assert run["progress"] | {"percent": None} == {
        "total": 4,
        "done": 1,
        "passed": 1,
        "failed": 0,
        "errors": 0,
        "cancelled": 3,
        "percent": None,
    }
    assert run["results"][0]["targets"][0]["runs"][0]["state"] == "done"
    again = client.post(f"/evaluations/{run['id']}/cancel")
    assert (again.status_code, again.json()["error"]["code"]) == (409, "evaluation_finished")


def test_resume_hands_out_cells_whose_worker_vanished(
    client: httpx.Client,
    project: dict,
    prompt: dict,
    openfaas_queue: StubGateway,
    database: Database,
) -> None:
    dataset = create_dataset(client, project, cases=questions("a", "b", "c"))
    run = started(
        client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}], concurrency=2
    )
    assert client.post(f"/evaluations/{run['id']}/resume").status_code == 200
    assert len(openfaas_queue.requests) == 2  # a healthy run gets nothing more
    # The queue lost both deliveries and their leases ran out.
    expired = datetime.now(UTC) - timedelta(seconds=1)
    database.evaluation_cells.update_many(
        {"state": "dispatched"}, {"$set": {"lease_until": expired}}
    )
    assert client.post(f"/evaluations/{run['id']}/resume").status_code == 200
    assert len(openfaas_queue.requests) == 4
    deliver_all(client, openfaas_queue, start=2)
    assert finished(client, run["id"])["progress"]["passed"] == 3


def move(client: httpx.Client, prompt: dict, label: str, version: int) -> httpx.Response:
    return client.put(f"/prompts/{prompt['id']}/labels/{label}", json={"version": version})


def test_a_gated_label_moves_only_to_a_version_that_passed(
    client: httpx.Client, project: dict, prompt: dict
) -> None:
    dataset = create_dataset(
        client,
        project,
        cases=questions("a", "b", assertions=[{"type": "contains", "value": "Paris"}]),
    )
    half = new_version(client, prompt, "Paris maybe")
    gate = client.put(
        f"/prompts/{prompt['id']}/gates/production",
        json={"dataset_id": dataset["id"], "min_pass_rate": 0.9},
    )
    assert gate.status_code == 200, gate.text
    assert gate.json()["min_pass_rate"] == 0.9
    listed = client.get(f"/prompts/{prompt['id']}/gates").json()["items"]
    assert [(g["label"], g["dataset_id"]) for g in listed] == [("production", dataset["id"])]

    missing = move(client, prompt, "production", half)
    assert (missing.status_code, missing.json()["error"]["code"]) == (409, "gate_run_missing")

    # v2 passes one case of two: 50%, short of 90%.
    cases = client.get(f"/datasets/{dataset['id']}").json()["cases"]
    client.put(
        f"/datasets/{dataset['id']}/cases/{cases[1]['id']}",
        json={"assertions": [{"type": "contains", "value": "maybe"}]},
    )
    both = started(
        client,
        prompt_id=prompt["id"],
        dataset_id=dataset["id"],
        targets=[{"version": 1}, {"version": half}],
    )
    finished(client, both["id"])
    short = move(client, prompt, "production", 1)
    error = short.json()["error"]
    assert (short.status_code, error["code"]) == (409, "gate_not_passed")
    assert (error["details"]["pass_rate"], error["details"]["shortfall"]) == (0.5, 0.4)
    assert error["details"]["evaluation_id"] == both["id"]

    passing = new_version(client, prompt, "Paris maybe, Paris")
    run = started(
        client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{"version": passing}]
    )
    assert finished(client, run["id"])["summary"][0]["pass_rate"] == 1.0
    moved = move(client, prompt, "production", passing)
    assert moved.status_code == 200, moved.text
    assert moved.json()["labels"]["production"] == passing

    # A run with overrides, or on an older state of the dataset, does not count.
    client.post(f"/datasets/{dataset['id']}/cases", json=questions("c"))
    assert move(client, prompt, "production", passing).json()["error"]["code"] == (
        "gate_run_missing"
    )
    # Ungated labels move freely; removing the gate frees the label.
    assert move(client, prompt, "staging", half).status_code == 200
    assert client.delete(f"/prompts/{prompt['id']}/gates/production").status_code == 204
    assert move(client, prompt, "production", half).status_code == 200


def test_gates_are_validated_and_protect_their_dataset(
    client: httpx.Client, project: dict, prompt: dict
) -> None:
    dataset = create_dataset(client, project, cases=questions("a"))
    url = f"/prompts/{prompt['id']}/gates"
    body = {"dataset_id": dataset["id"], "min_pass_rate": 0.8}
    assert client.put(f"{url}/latest", json=body).json()["error"]["code"] == "reserved_label"
    assert client.put(f"{url}/prod", json={**body, "min_pass_rate": 1.5}).status_code == 422
    assert client.put(f"{url}/prod", json={**body, "dataset_id": MISSING_ID}).status_code == 404
    assert client.put(f"/prompts/{MISSING_ID}/gates/prod", json=body).status_code == 404
    assert client.delete(f"{url}/prod").status_code == 404
    assert client.put(f"{url}/prod", json=body).status_code == 200
    in_use = client.delete(f"/datasets/{dataset['id']}")
    assert (in_use.status_code, in_use.json()["error"]["code"]) == (409, "dataset_in_use")
    assert client.delete(f"{url}/prod").status_code == 204
    assert client.delete(f"/datasets/{dataset['id']}").status_code == 204


def test_cells_travel_through_sqs_and_its_drain_runs_them(
    client: httpx.Client, project: dict, prompt: dict, sqs, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sqs.create_queue(QueueName=f"cells-{time.time_ns()}")["QueueUrl"]
    configure(monkeypatch, EVALUATION_QUEUE="sqs", EVALUATION_QUEUE_URL=url)
    dataset = create_dataset(client, project, cases=questions("a", "b", "c"))
    run = started(
        client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}], concurrency=2
    )
    drained = 0
    while drained < 3:
        consumed = drain("evaluation", max_messages=10, wait_seconds=0)
        assert consumed, "the relay stopped handing out cells"
        drained += consumed
    assert finished(client, run["id"])["progress"]["passed"] == 3


def test_a_redelivered_cell_restarts_a_run_that_lost_its_relay(
    client: httpx.Client,
    project: dict,
    prompt: dict,
    openfaas_queue: StubGateway,
    database: Database,
) -> None:
    dataset = create_dataset(client, project, cases=questions("a", "b"))
    run = started(
        client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}], concurrency=1
    )
    deliver(client, openfaas_queue)
    # The first cell finished but its successor never reached the queue.
    database.evaluation_cells.update_one(
        {"state": "dispatched"}, {"$set": {"state": "pending"}, "$unset": {"lease_until": ""}}
    )
    del openfaas_queue.requests[1:]
    assert deliver(client, openfaas_queue)[0]["outcome"] == "duplicate"
    assert len(openfaas_queue.requests) == 2  # the queue's retry handed the successor out
    deliver(client, openfaas_queue, start=1)
    assert finished(client, run["id"])["progress"]["passed"] == 2


def test_a_cell_given_back_after_a_failure_can_be_claimed_again(
    client: httpx.Client, project: dict, prompt: dict, openfaas_queue: StubGateway
) -> None:
    dataset = create_dataset(client, project, cases=questions("a"))
    started(client, prompt_id=prompt["id"], dataset_id=dataset["id"], targets=[{}])
    cell_id = json.loads(openfaas_queue.requests[0][2])["cell_id"]
    cells = EvaluationRepository()
    taken = cells.claim(cell_id, "first", lease_s=60)
    assert taken is not None
    assert cells.claim(cell_id, "second", lease_s=60) is None  # held by the first delivery
    cells.release(taken, "someone-else")
    assert cells.claim(cell_id, "second", lease_s=60) is None  # only its holder gives it back
    cells.release(taken, "first")
    assert cells.claim(cell_id, "second", lease_s=60) is not None


def test_run_level_json_schema_assertions_keep_their_dollar_keys(
    client: httpx.Client, project: dict, make_prompt
) -> None:
    prompt = make_prompt(template="{{q}} " + fake(reply='{"answer": 42}'))
    dataset = create_dataset(client, project, cases=questions("a"))
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$defs": {"n": {"type": "integer"}},
        "type": "object",
        "properties": {"answer": {"$ref": "#/$defs/n"}},
        "required": ["answer"],
    }
    run = started(
        client,
        prompt_id=prompt["id"],
        dataset_id=dataset["id"],
        targets=[{}],
        assertions=[{"type": "json_schema", "schema": schema}],
    )
    assert run["assertions"] == [{"type": "json_schema", "schema": schema}]
    run = finished(client, run["id"])
    assert run["progress"]["passed"] == 1
    assert run["assertions"][0]["schema"] == schema
