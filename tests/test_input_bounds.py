"""Hostile input has bounds: JSON nested too deep, free-form values MongoDB cannot hold, cursors
that do not parse and poison events are refused with a 4xx naming the field, before anything is
stored; records stored before those bounds still render."""

import base64
import json
import logging
from typing import Any

import httpx
import pytest
from bson import ObjectId
from pydantic import TypeAdapter
from pymongo.database import Database

from devtools.gateway import function_names, load_router
from shared.assertions.engine import evaluate
from shared.assertions.models import AssertionSpec
from shared.bounds import CLIPPED, MAX_VALUE_BYTES, MAX_VALUE_DEPTH
from shared.queues.cloudevents import STRUCTURED
from shared.queues.signatures import SIGNATURE_HEADER, sign_data
from shared.settings import get_settings
from tests.conftest import configure
from tests.test_datasets import NDJSON, create_dataset, json_lines
from tests.test_history_writer import create_dialog, make_turn

MISSING_ID = "6b0731e5942f52642075caa9"
JSON = {"Content-Type": "application/json"}
# About a thousand levels in under 4 KB: enough to exhaust Python's stack in `json.loads`.
DEEP_BODY = "[" * 1000 + "]" * 1000


def nested(depth: int, leaf: Any = "x") -> Any:
    """`leaf` inside `depth` objects."""
    value = leaf
    for _ in range(depth):
        value = {"a": value}
    return value


def json_routes() -> list[str]:
    """`METHOD /function/path` of every route whose handler takes a JSON body model."""
    values = {"label": "staging", "user_id": "carol"}
    routes = []
    for name in function_names():
        for route in load_router(name).routes:
            if route.body is not None:
                path = route.path.replace("{", "{0[").replace("}", "]}")
                filled = path.format(_Ids(values))
                routes.append(f"{route.method} /{name}{filled}".rstrip("/"))
    return routes


class _Ids(dict):
    """Path values: the given ones, an id of nothing for the others."""

    def __missing__(self, key: str) -> str:
        return MISSING_ID


def assert_too_deep(response: httpx.Response, in_openais_shape: bool = False) -> None:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "json_too_deep"
    if in_openais_shape:
        assert (error["type"], error["param"]) == ("invalid_request_error", None)
    else:
        assert error["details"][0]["loc"] == ["body"]


@pytest.mark.parametrize("route", json_routes())
def test_json_nested_a_thousand_levels_is_400_on_every_json_route(
    client: httpx.Client, route: str
) -> None:
    method, path = route.split(" ")
    assert len(DEEP_BODY) < 4096
    response = client.request(method, path, content=DEEP_BODY, headers=JSON)
    assert_too_deep(response, in_openais_shape=path.startswith("/openai/"))


@pytest.mark.parametrize("function", ["history-writer", "evaluation-worker"])
def test_queue_functions_refuse_a_deep_event_with_a_logged_4xx(
    client: httpx.Client, function: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A 4xx is final for the queue (no redelivery); the log names the delivery, not its content."""
    deep = '{"secret_user_text":' * 1000 + "1" + "}" * 1000
    data_base64 = base64.b64encode(deep.encode()).decode()
    deliveries = [
        (deep, {**JSON, "ce-id": "event-1"}),
        (deep, {"Content-Type": STRUCTURED}),
        (
            json.dumps({"specversion": "1.0", "data_base64": data_base64}),
            {"Content-Type": STRUCTURED},
        ),
    ]
    with caplog.at_level(logging.WARNING):
        responses = [client.post(f"/{function}", content=body, headers=h) for body, h in deliveries]
    assert_too_deep(responses[0])
    assert_too_deep(responses[1])
    assert responses[2].status_code == 422, responses[2].text
    assert responses[2].json()["error"]["code"] == "malformed_event"
    refusals = [
        record.getMessage()
        for record in caplog.records
        if "refused an event" in record.getMessage()
    ]
    assert len(refusals) == 3
    assert "ce-id=event-1" in refusals[0] and f"size={len(deep)}" in refusals[0]
    assert not any("secret_user_text" in line for line in refusals)


def test_a_turn_at_a_moment_mongodb_cannot_hold_is_a_final_422(
    client: httpx.Client, project: dict, database: Database
) -> None:
    """Past year 9999 in UTC the driver fails: a 500 the queue would redeliver forever."""
    dialog = create_dialog(client, project)
    turn = {**make_turn(dialog), "user_at": "9999-12-31T23:59:59-14:00"}
    signature = sign_data(turn, get_settings().event_signing_keys)
    headers = {**JSON, SIGNATURE_HEADER: signature}
    response = client.post("/history-writer", content=json.dumps(turn), headers=headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["loc"] == ["body", "user_at"]
    assert database.messages.count_documents({}) == 0


def test_a_time_filter_past_year_9999_is_422(client: httpx.Client, make_prompt) -> None:
    prompt = make_prompt()
    for path in ("/executions", "/executions/stats"):
        for name, moment in (
            ("since", "9999-12-31T23:59:59-14:00"),
            ("until", "0001-01-01T00:00+14:00"),
        ):
            response = client.get(path, params={"prompt_id": prompt["id"], name: moment})
            assert response.status_code == 422, (path, response.text)
            assert response.json()["error"]["details"][0]["loc"] == ["query", name]


def test_a_deep_line_of_a_case_import_is_named_and_nothing_is_imported(
    client: httpx.Client, project: dict, database: Database
) -> None:
    dataset = create_dataset(client, project)
    body = json_lines({"input": "ok"}, DEEP_BODY)
    response = client.post(f"/datasets/{dataset['id']}/cases", content=body, headers=NDJSON)
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert [(detail["loc"], detail["type"]) for detail in details] == [
        (["body", "line", 2], "json_too_deep")
    ]
    assert database.dataset_cases.count_documents({}) == 0


# Variables the old code stored (or stored, then answered 500: 255 levels), or refused with a
# 500 (a NUL in a key, an integer past 64 bits). Too deep for a body is refused before parsing.
POISON_VARIABLES = {
    "just_too_deep": {"question": nested(MAX_VALUE_DEPTH)},
    "too_deep_for_a_body": {"question": nested(255)},
    "nul_in_a_nested_key": {"question": {"a\x00b": 1}},
    "integer_past_64_bits": {"question": [2**70]},
    "list_too_long": {"question": list(range(10_001))},
}


@pytest.mark.parametrize("variables", POISON_VARIABLES.values(), ids=POISON_VARIABLES.keys())
def test_poison_variables_are_422_naming_the_field_and_store_nothing(
    client: httpx.Client, make_prompt, project: dict, database: Database, variables: dict
) -> None:
    prompt = make_prompt()
    dataset = create_dataset(client, project)
    requests = [
        ("executions", "/executions", {"prompt_id": prompt["id"], "variables": variables}),
        ("dataset_cases", f"/datasets/{dataset['id']}/cases", [{"variables": variables}]),
        ("dialogs", "/dialogs", {"project_id": project["id"], "variables": variables}),
        ("dialogs", "/chat", {"project_id": project["id"], "input": "hi", "variables": variables}),
        ("executions", f"/prompts/{prompt['id']}/render", {"variables": variables}),
    ]
    for collection, path, body in requests:
        response = client.post(path, json=body)
        locations = [detail["loc"] for detail in response.json()["error"]["details"]]
        if response.status_code == 400:
            assert locations == [["body"]], locations
        else:
            assert response.status_code == 422, (collection, response.text)
            assert any(location[-1] == "variables" for location in locations), locations
        assert database[collection].count_documents({}) == 0, collection
    too_deep_for_a_body = json.dumps(variables).count("{") > 60
    assert response.status_code == (400 if too_deep_for_a_body else 422)


def test_half_a_surrogate_pair_is_a_4xx_and_stores_nothing(
    client: httpx.Client, project: dict, database: Database
) -> None:
    """JSON may escape half a UTF-16 pair, which MongoDB cannot store and an event's signature
    could not encode (both were 500s)."""
    dialog = {"project_id": project["id"], "variables": {"a": ["\udfff"]}}
    response = client.post("/dialogs", content=json.dumps(dialog), headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["loc"] == ["body", "variables"]
    assert database.dialogs.count_documents({}) == 0
    turn = {**make_turn(create_dialog(client, project)), "user_content": "\ud800"}
    headers = {**JSON, SIGNATURE_HEADER: "0" * 64}
    response = client.post("/history-writer", content=json.dumps(turn), headers=headers)
    assert response.status_code == 401, response.text
    assert database.messages.count_documents({}) == 0


def test_variables_larger_than_the_bound_are_422_whatever_the_body_limit(
    client: httpx.Client, make_prompt, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, MAX_BODY_BYTES=str(4 * MAX_VALUE_BYTES))
    prompt = make_prompt()
    variables = {"question": "x" * MAX_VALUE_BYTES}
    response = client.post("/executions", json={"prompt_id": prompt["id"], "variables": variables})
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["loc"] == ["body", "variables"]
    assert database.executions.count_documents({}) == 0


def test_variables_within_bounds_are_stored_as_given(
    client: httpx.Client, make_prompt, database: Database
) -> None:
    prompt = make_prompt()
    variables = {"question": nested(MAX_VALUE_DEPTH - 1), "keys": {"a b": ["$ok as a value"]}}
    response = client.post("/executions", json={"prompt_id": prompt["id"], "variables": variables})
    assert response.status_code == 201, response.text
    assert response.json()["variables"] == variables
    assert database.executions.find_one()["variables"] == variables


def test_a_json_schema_assertion_is_bounded_too(
    client: httpx.Client, project: dict, database: Database
) -> None:
    """Its keys may start with `$` (it is stored as text), but not its depth."""
    dataset = create_dataset(client, project)
    spec = {"type": "json_schema", "schema": {"$defs": {}, "const": nested(MAX_VALUE_DEPTH)}}
    response = client.post(f"/datasets/{dataset['id']}/cases", json=[{"assertions": [spec]}])
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert [detail["loc"] for detail in details] == [["body", 0, "assertions"]]
    assert "deeper than 32" in details[0]["msg"]
    assert database.dataset_cases.count_documents({}) == 0
    spec["schema"]["const"] = nested(MAX_VALUE_DEPTH - 2)
    response = client.post(f"/datasets/{dataset['id']}/cases", json=[{"assertions": [spec]}])
    assert response.status_code == 201, response.text


def cursor(position: object) -> str:
    text = position if isinstance(position, str) else json.dumps(position)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


BAD_CURSORS = {
    "time_past_year_9999": cursor({"t": 1e20, "id": MISSING_ID}),
    "huge_integer_time": cursor({"t": 10**400, "id": MISSING_ID}),
    "negative_time": cursor({"t": -5, "id": MISSING_ID}),
    "deep": cursor(DEEP_BODY),
}


@pytest.mark.parametrize("bad", BAD_CURSORS.values(), ids=BAD_CURSORS.keys())
def test_a_cursor_that_does_not_parse_is_422_on_every_list(
    client: httpx.Client, make_prompt, project: dict, bad: str
) -> None:
    prompt = make_prompt(labels=["production"])
    dataset = create_dataset(client, project)
    dialog = client.post("/dialogs", json={"project_id": project["id"]}).json()
    in_project = {"project_id": project["id"]}
    lists = [
        ("/projects", {}),
        ("/prompts", in_project),
        (f"/prompts/{prompt['id']}/labels/production/history", {}),
        ("/executions", in_project),
        ("/datasets", in_project),
        (f"/datasets/{dataset['id']}", {}),
        ("/dialogs", in_project),
        (f"/dialogs/{dialog['id']}", {}),
        ("/evaluations", in_project),
    ]
    for path, params in lists:
        response = client.get(path, params={**params, "cursor": bad})
        assert response.status_code == 422, (path, response.text)
        assert response.json()["error"]["details"][0]["loc"] == ["query", "cursor"]


def test_records_stored_before_the_bounds_still_render(
    client: httpx.Client, make_prompt, project: dict, database: Database
) -> None:
    """254 levels of variables, stored by the old code, made every page holding them a 500."""
    poison = {"question": nested(254)}
    prompt = make_prompt()
    run = {"prompt_id": prompt["id"], "variables": {"question": "q"}}
    execution = client.post("/executions", json=run)
    dataset = create_dataset(client, project, cases=[{"input": "hi"}])
    dialog = client.post("/dialogs", json={"project_id": project["id"]})
    assert (execution.status_code, dialog.status_code) == (201, 201), execution.text
    execution, dialog = execution.json(), dialog.json()
    for collection in ("executions", "dataset_cases", "dialogs"):
        database[collection].update_many({}, {"$set": {"variables": poison}})
    pages = {
        f"/executions/{execution['id']}": lambda page: page["variables"],
        f"/executions?project_id={project['id']}": lambda page: page["items"][0]["variables"],
        f"/datasets/{dataset['id']}": lambda page: page["cases"][0]["variables"],
        f"/dialogs/{dialog['id']}": lambda page: page["variables"],
        f"/dialogs?project_id={project['id']}": lambda page: page["items"][0]["variables"],
    }
    for path, variables_of in pages.items():
        response = client.get(path)
        assert response.status_code == 200, (path, response.text)
        shown = json.dumps(variables_of(response.json()))
        assert CLIPPED in shown and shown.count("{") == 64, path
    assert database.executions.find_one({"_id": ObjectId(execution["id"])})["variables"] == poison


def test_an_answer_nested_too_deep_to_parse_gets_no_verdict() -> None:
    """A model's answer is parsed by `is_json` and `json_schema` assertions in the evaluation
    worker: a thousand levels were a RecursionError there, a 500 the queue redelivered."""
    specs = TypeAdapter(list[AssertionSpec]).validate_python(
        [{"type": "is_json"}, {"type": "json_schema", "schema": {"type": "array"}}]
    )
    results = evaluate(specs, DEEP_BODY, latency_ms=None, cost=None)
    assert [(result.passed, result.error) for result in results] == [
        (None, "answer_too_deep"),
        (None, "answer_too_deep"),
    ]
    assert evaluate(specs, "[[1]]", latency_ms=None, cost=None)[0].passed is True
