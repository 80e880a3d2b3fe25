"""The OpenAPI document: generated from the route tables, served by the gateway, true to the API."""

import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, assume, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from devtools.gateway import api_document, function_names, load_router

DOCUMENT_FILE = Path(__file__).resolve().parent.parent / "openapi.json"
METHODS = {"get", "put", "post", "delete", "patch", "head", "options"}


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {
        (method.upper(), path)
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }


def test_the_document_describes_exactly_the_routes_that_exist() -> None:
    routes = {
        (route.method, f"/{name}{route.path.rstrip('/')}")
        for name in function_names()
        for route in load_router(name).routes
    }
    documented = documented_operations(api_document())
    assert not routes - documented, f"routes the document does not describe: {routes - documented}"
    assert not documented - routes, f"documented routes that do not exist: {documented - routes}"


def test_the_committed_document_is_current() -> None:
    committed = json.loads(DOCUMENT_FILE.read_text()) if DOCUMENT_FILE.exists() else None
    assert committed == api_document(), "openapi.json is stale: run `make openapi` and commit it"


def test_every_documented_operation_is_served_by_the_gateway(client: httpx.Client) -> None:
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.1")
    for method, path in sorted(documented_operations(document)):
        concrete = path
        for parameter in document["paths"][path][method.lower()].get("parameters", []):
            if parameter["in"] == "path":
                value = "1" if parameter["schema"]["type"] == "integer" else "unknown"
                concrete = concrete.replace(f"{{{parameter['name']}}}", value)
        response = client.request(method, concrete)
        code = response.json().get("error", {}).get("code") if response.content else None
        assert code not in {"route_not_found", "function_not_found", "method_not_allowed"}, (
            method,
            concrete,
            response.text,
        )


def test_the_docs_page_renders_the_document_without_a_cdn(client: httpx.Client) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert "/openapi.json" in page.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f"/docs/static/{asset}" in page.text
        assert client.get(f"/docs/static/{asset}").status_code == 200


# Built from the route tables at collection; requests go over HTTP to the gateway fixture, which
# serves the same document (checked above).
fuzzed = schemathesis.openapi.from_dict(api_document())


@pytest.fixture
def existing(project: dict, make_prompt) -> dict[str, object]:
    """Path values naming things that exist, so generated requests reach past the lookups."""
    prompt = make_prompt(labels=["production"])
    return {
        "project_id": project["id"],
        "prompt_id": prompt["id"],
        "number": 1,
        "label": "production",
    }


# Server errors the fuzzer found in the services, reported to their owners; generated requests
# that would hit them are set aside until the fix lands, and the xfail test below turns red (and
# asks for this entry's removal) as soon as one is fixed.
KNOWN_SERVER_ERRORS = {
    "explicit null name/tags": (
        "PUT /prompts/{prompt_id} stores an explicit null name or tags (PromptUpdate.metadata "
        "keeps set None values), corrupting the prompt: this and every later read answer 500"
    ),
    "chat selector without a prompt": (
        "POST /chat with a version or label but no prompt_id (and no dialog_id) builds a "
        "DialogCreate inside ChatService.prepare, whose ValidationError is not a 422"
    ),
    "integer beyond 8 bytes": (
        "an integer query or body value of 2**63 or more reaches pymongo (OverflowError): "
        "/prompts/{id}/diff from/to, /prompts/{id}?version, /prompts/{id}/versions?cursor, "
        "GET /executions?version, POST /executions version"
    ),
}


def _integers(value: object) -> Iterator[int]:
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _integers(item)
    elif isinstance(value, list):
        for item in value:
            yield from _integers(item)


def known_server_error(case: schemathesis.Case) -> str | None:
    body = case.body if isinstance(case.body, dict) else {}
    operation = f"{case.method.upper()} {case.path}"
    if operation == "PUT /prompts/{prompt_id}" and None in (
        body.get("name", ""),
        body.get("tags", []),
    ):
        return "explicit null name/tags"
    selector = body.get("version") is not None or body.get("label") is not None
    if operation == "POST /chat" and selector and body.get("prompt_id") is None:
        return "chat selector without a prompt"
    values = [case.query, case.body, case.path_parameters]
    if any(abs(number) >= 2**63 for number in _integers(values)):
        return "integer beyond 8 bytes"
    return None


@fuzzed.parametrize()
@settings(
    max_examples=10,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_generated_requests_never_get_a_server_error(
    case: schemathesis.Case, gateway_url: str, existing: dict[str, object]
) -> None:
    """Generated requests, valid and not: never a 5xx, and every response as documented."""
    parameters = case.path_parameters or {}
    # Every other case addresses existing records; the rest keep their generated values.
    if parameters and zlib.crc32(json.dumps(parameters, sort_keys=True, default=str).encode()) % 2:
        case.path_parameters = parameters | {
            name: value for name, value in existing.items() if name in parameters
        }
    assume(known_server_error(case) is None)
    case.call_and_validate(
        base_url=gateway_url,
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_schema_conformance,
        ],
    )


@pytest.mark.xfail(strict=True, reason="known server errors, reported; see KNOWN_SERVER_ERRORS")
@pytest.mark.parametrize("bug", KNOWN_SERVER_ERRORS)
def test_known_server_errors_are_still_there(
    bug: str, client: httpx.Client, existing: dict[str, object]
) -> None:
    prompt = f"/prompts/{existing['prompt_id']}"
    if bug == "explicit null name/tags":
        response = client.put(prompt, json={"name": None})
    elif bug == "chat selector without a prompt":
        body = {"project_id": existing["project_id"], "label": "production", "input": "hi"}
        response = client.post("/chat", json=body)
    else:
        response = client.get(f"{prompt}/diff", params={"from": 2**70, "to": 1})
    assert response.status_code < 500, KNOWN_SERVER_ERRORS[bug]
