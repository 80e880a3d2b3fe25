"""Each function's own OpenAPI document, `GET /openapi.json` at its root: open to anyone, valid
OpenAPI 3.1, exactly its routes, relative to wherever it is mounted, with its security and every
request body declared."""

from typing import Any

import httpx
import pytest
import schemathesis

from devtools.gateway import api_document, function_names, load_router
from shared.http.openapi import DOCUMENT_PATH
from shared.http.routing import NO_BODY, Route
from tests.test_openapi import documented_operations

SCHEME_OF_ACCESS = {"public": None, "signed_event": "signedEvent"}


def own_path(route: Route) -> str:
    return route.path.rstrip("/") or "/"


def expected_security(route: Route) -> list[dict[str, list[str]]]:
    scheme = SCHEME_OF_ACCESS.get(route.access.kind, "bearer")
    return [{scheme: []}] if scheme else []


def takes_a_body(route: Route) -> bool:
    return route.method in {"POST", "PUT"} and route.body_doc is not NO_BODY


def assert_valid(document: dict[str, Any]) -> None:
    """Valid against the OpenAPI 3.1 schema (the one schemathesis bundles)."""
    assert document["openapi"].startswith("3.1")
    schemathesis.openapi.from_dict(document).validate()


@pytest.fixture
def anonymous(gateway_url: str) -> Any:
    with httpx.Client(base_url=gateway_url, timeout=30) as http:
        yield http


@pytest.mark.parametrize("name", function_names())
def test_each_function_serves_its_own_document(anonymous: httpx.Client, name: str) -> None:
    response = anonymous.get(f"/{name}{DOCUMENT_PATH}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    document = response.json()
    assert_valid(document)
    routes = {(route.method, own_path(route)): route for route in load_router(name).routes}
    assert documented_operations(document) == routes.keys()
    assert ("GET", DOCUMENT_PATH) in routes
    # Relative to the document's own location: the function's root wherever it is mounted.
    assert [server["url"] for server in document["servers"]] == ["."]
    schemes = document["components"]["securitySchemes"]
    for (method, path), route in routes.items():
        operation = document["paths"][path][method.lower()]
        assert operation["security"] == expected_security(route), (method, path)
        for need in operation["security"]:
            assert need.keys() <= schemes.keys()
        assert ("requestBody" in operation) == takes_a_body(route), (method, path)


def test_the_document_is_built_once_per_process() -> None:
    route = next(route for route in load_router("prompts").routes if route.path == DOCUMENT_PATH)
    assert route.handler() is route.handler()


def test_every_post_and_put_declares_its_body() -> None:
    """A route reading the raw request names its media types (`body_doc`), or says it takes
    none (`NO_BODY`): no body goes undocumented."""
    undeclared = [
        f"{name} {route.method} {route.path}"
        for name in function_names()
        for route in load_router(name).routes
        if route.method in {"POST", "PUT"} and route.body is None and route.body_doc is None
    ]
    assert undeclared == [], "declare a body model, body_doc=BodyDoc(...) or body_doc=NO_BODY"
    document = api_document()
    for name in function_names():
        for route in load_router(name).routes:
            operation = document["paths"][f"/{name}{route.path.rstrip('/')}"]
            assert ("requestBody" in operation[route.method.lower()]) == takes_a_body(route)


def test_raw_bodies_are_documented_by_media_type() -> None:
    document = api_document()
    cases = document["paths"]["/datasets/{dataset_id}/cases"]["post"]["requestBody"]["content"]
    assert cases["application/json"]["schema"]["type"] == "array"
    assert cases["application/json"]["schema"]["items"] == {
        "$ref": "#/components/schemas/CaseCreate"
    }
    assert cases["application/x-ndjson"]["schema"] == {"type": "string"}
    for name, event in (("history-writer", "TurnEvent"), ("evaluation-worker", "CellEvent")):
        content = document["paths"][f"/{name}"]["post"]["requestBody"]["content"]
        assert content["application/json"]["schema"] == {"$ref": f"#/components/schemas/{event}"}
        structured = content["application/cloudevents+json"]["schema"]["$ref"].split("/")[-1]
        envelope = document["components"]["schemas"][structured]
        assert envelope["properties"]["data"] == {"$ref": f"#/components/schemas/{event}"}
        assert {"signature", "data"} <= set(envelope["required"])


def test_the_combined_document_declares_servers_and_security() -> None:
    document = api_document()
    assert_valid(document)
    # Swagger UI calls the first server: the gateway that served the page, on whatever PORT.
    served_from, make_dev = document["servers"]
    assert served_from["url"] == "/"
    assert make_dev["url"].format(port=make_dev["variables"]["port"]["default"]) == (
        "http://127.0.0.1:8080"
    )
    schemes = document["components"]["securitySchemes"]
    assert schemes["bearer"] == schemes["bearer"] | {"type": "http", "scheme": "bearer"}
    assert "ba_" in schemes["bearer"]["description"]
    assert (
        schemes["signedEvent"] | {"type": "apiKey", "in": "header", "name": "ce-signature"}
        == (schemes["signedEvent"])
    )
    for name in function_names():
        for route in load_router(name).routes:
            operation = document["paths"][f"/{name}{route.path.rstrip('/')}"]
            assert operation[route.method.lower()]["security"] == expected_security(route)
