"""The one error model, limits, CORS and request ids, identical for every function."""

import http.client
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic import BaseModel, ValidationError

from devtools.gateway import function_names, load_router
from shared.access.policy import PUBLIC
from shared.errors import MethodNotAllowed, NotFound
from shared.http.messages import Request
from shared.http.routing import Router
from tests.conftest import ADMIN_HEADERS, configure

FUNCTIONS = ["projects", "prompts"]
# Methods no route takes or that only a browser's preflight may send, and paths no route
# matches or that a framework's own routing handles: a newline, a NUL, empty or dot segments,
# the files frameworks answer themselves.
ODD_METHODS = ["PATCH", "TRACE", "PROPFIND", "OPTIONS", "HEAD", "GET", "POST"]
ODD_PATHS = [
    "/%0A",
    "/ab%0Acd",
    "/%00",
    "//",
    "//x",
    "/a/../b",
    "/..",
    "/robots.txt",
    "/favicon.ico",
    "/healthz%0A",
    "/healthz/x",
]


def raw_request(base_url: str, method: str, path: str) -> tuple[http.client.HTTPResponse, bytes]:
    """The request sent as written: clients normalize dot segments and escapes away."""
    address = urlsplit(base_url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    try:
        connection.putrequest(method, f"{address.path}{path}", skip_accept_encoding=True)
        for name, value in ADMIN_HEADERS.items():
            connection.putheader(name, value)
        connection.endheaders()
        response = connection.getresponse()
        return response, response.read()
    finally:
        connection.close()


def in_model(model: type[BaseModel], body: bytes) -> bool:
    try:
        model.model_validate_json(body)
    except ValidationError:
        return False
    return True


def assert_odd_requests_get_the_error_model(base_url: str, function: str) -> None:
    """Every odd method on every odd path: a 4xx in the function's error model (ours, or the
    one its router names), with a request id."""
    error_body = load_router(function).errors.body
    wrong = []
    for method in ODD_METHODS:
        for path in ODD_PATHS:
            response, body = raw_request(base_url, method, path)
            in_error_model = (
                400 <= response.status < 500
                and response.getheader("content-type") == "application/json"
                and response.getheader("x-request-id")
                and (method == "HEAD" or in_model(error_body, body))
            )
            if not in_error_model:
                wrong.append((method, path, response.status, body[:80]))
    assert not wrong


@pytest.mark.parametrize("function", function_names())
def test_every_unmatched_method_and_path_gets_the_error_model(
    gateway_url: str, function: str
) -> None:
    assert_odd_requests_get_the_error_model(f"{gateway_url}/{function}", function)


def test_the_gateway_answers_what_no_function_serves_in_the_error_model(gateway_url: str) -> None:
    for method, path in [("GET", "/nothing"), ("POST", "/openapi.json"), ("DELETE", "/")]:
        response, body = raw_request(gateway_url, method, path)
        assert response.status in (404, 405)
        assert response.getheader("x-request-id")
        assert b'"error":{"code":' in body


def test_a_route_matches_the_whole_path_not_a_final_newline() -> None:
    router = Router("things")
    router.get("/", access=PUBLIC)(lambda: None)
    router.get("/{thing_id}/parts", access=PUBLIC)(lambda thing_id: None)
    for path in ["/\n", "/x/parts\n"]:
        with pytest.raises(NotFound):
            router.resolve("GET", path)


def test_a_path_belongs_to_the_first_route_that_matches_it() -> None:
    """`/healthz` is no record id: other methods on it are 405 listing only its own."""
    router = Router("things")
    router.get("/{thing_id}", access=PUBLIC)(lambda thing_id: None)
    router.delete("/{thing_id}", access=PUBLIC)(lambda thing_id: None)
    with pytest.raises(MethodNotAllowed) as refused:
        router.resolve("DELETE", "/healthz")
    assert refused.value.headers["Allow"] == "GET, OPTIONS"
    route, values = router.resolve("DELETE", "/thing")
    assert (route.method, values) == ("DELETE", {"thing_id": "thing"})


def test_a_newline_is_no_empty_path(client: httpx.Client) -> None:
    """`/evaluations/%0A` once listed every run: it names one that does not exist."""
    response = client.get("/evaluations/%0A")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_unknown_route_is_404_in_the_error_model(client: httpx.Client, function: str) -> None:
    response = client.get(f"/{function}/a/b/c/d")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == "route_not_found"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_wrong_method_is_405_with_allow(client: httpx.Client, function: str) -> None:
    response = client.patch(f"/{function}")
    assert response.status_code == 405
    assert "POST" in response.headers["Allow"]
    assert response.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_malformed_json_is_400(client: httpx.Client, function: str) -> None:
    response = client.post(
        f"/{function}", content=b'{"name": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "malformed_json"


@pytest.mark.parametrize("function", FUNCTIONS)
def test_missing_body_is_400(client: httpx.Client, function: str) -> None:
    assert client.post(f"/{function}").status_code == 400


@pytest.mark.parametrize("function", FUNCTIONS)
def test_wrong_content_type_is_415(client: httpx.Client, function: str) -> None:
    response = client.post(
        f"/{function}", content=b"name=x", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 415
    assert response.json()["error"]["code"] == "unsupported_media_type"


def test_body_over_the_limit_is_413_and_stores_nothing(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, MAX_BODY_BYTES="2048")
    big = {"name": "big", "description": "x" * 4000}
    assert client.post("/projects", json=big).status_code == 413

    def chunks():
        yield b'{"name": "streamed", "description": "'
        yield b"y" * 4000
        yield b'"}'

    streamed = client.post(
        "/projects", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert streamed.status_code == 413
    assert streamed.json()["error"]["details"] == {"limit": 2048}
    assert client.get("/projects").json()["total"] == 0


def test_unknown_fields_are_422(client: httpx.Client) -> None:
    response = client.post("/projects", json={"name": "x", "owner": "me"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == ["body", "owner"]


def test_query_operators_in_json_never_reach_mongodb(
    client: httpx.Client, project: dict, make_prompt
) -> None:
    make_prompt(name="secret")
    for body in (
        {"name": {"$ne": ""}},
        {"name": "x", "description": {"$gt": ""}},
    ):
        assert client.post("/projects", json=body).status_code == 422
    smuggled = client.put(f"/projects/{project['id']}", json={"name": {"$set": {"x": 1}}})
    assert smuggled.status_code == 422
    listed = client.get("/prompts", params={"project_id": project["id"], "name": '{"$ne": ""}'})
    assert listed.json()["items"] == []


def test_validation_errors_name_every_failing_field(client: httpx.Client) -> None:
    response = client.post("/prompts", json={"type": "text"})
    assert response.status_code == 422
    locations = {tuple(item["loc"]) for item in response.json()["error"]["details"]}
    assert {("body", "project_id"), ("body", "name")} <= locations


def test_request_id_is_echoed_or_generated(client: httpx.Client) -> None:
    echoed = client.get("/projects", headers={"X-Request-Id": "trace-123"})
    assert echoed.headers["X-Request-Id"] == "trace-123"
    generated = client.get("/projects")
    assert len(generated.headers["X-Request-Id"]) == 32


def test_unexpected_errors_are_500_with_only_the_request_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    router = Router("broken")

    @router.get("/", access=PUBLIC)
    def explode() -> None:
        raise RuntimeError("password=hunter2 in a stack trace")

    request = Request("GET", "/", {}, {}, lambda: b"", "req-42")
    response = router.dispatch(request)
    assert response.status == 500
    assert b"hunter2" not in response.body
    assert b'"request_id":"req-42"' in response.body
    assert "req-42" in caplog.text


def test_cors_preflight_and_allowed_origins(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, CORS_ORIGINS="https://app.example.com")
    preflight = client.options(
        "/prompts/abc",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "content-type, if-none-match",
        },
    )
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "PUT" in preflight.headers["Access-Control-Allow-Methods"]
    allowed_headers = preflight.headers["Access-Control-Allow-Headers"].lower().split(", ")
    assert {"content-type", "if-none-match", "authorization"} <= set(allowed_headers)
    # Request headers are named, never echoed from the preflight.
    smuggled = client.options(
        "/prompts/abc",
        headers={
            "Origin": "https://app.example.com",
            "Access-Control-Request-Method": "PUT",
            "Access-Control-Request-Headers": "x-anything",
        },
    )
    assert "x-anything" not in smuggled.headers["Access-Control-Allow-Headers"].lower()

    allowed = client.get("/projects", headers={"Origin": "https://app.example.com"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "ETag" in allowed.headers["Access-Control-Expose-Headers"]
    denied = client.get("/projects", headers={"Origin": "https://evil.example.com"})
    assert "Access-Control-Allow-Origin" not in denied.headers


def test_no_browser_origin_is_allowed_unless_configured(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CORS_ORIGINS")
    configure(monkeypatch)
    response = client.get("/projects", headers={"Origin": "https://app.example.com"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_health_is_cheap_and_readiness_reaches_mongodb(client: httpx.Client) -> None:
    for function in FUNCTIONS:
        assert client.get(f"/{function}/healthz").json() == {"status": "ok"}
        assert client.get(f"/{function}/readyz").json() == {"status": "ready"}


@pytest.mark.parametrize("function", FUNCTIONS)
def test_paths_the_framework_cannot_route_still_get_the_error_model(
    client: httpx.Client, function: str
) -> None:
    response = client.get(f"/{function}/ab%0Acd")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] in {"not_found", "route_not_found"}
