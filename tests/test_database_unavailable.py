"""An unreachable MongoDB answers 503 within seconds; health stays cheap."""

import time

import httpx
import pytest

from devtools.embedded_mongo import free_port
from tests.conftest import configure


@pytest.fixture
def unreachable_database(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(
        monkeypatch,
        MONGODB_URI=f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
        MONGODB_TIMEOUT_MS="500",
    )


@pytest.mark.usefixtures("unreachable_database")
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/projects", None),
        ("POST", "/projects", {"name": "x"}),
        ("GET", "/prompts/6b0731e5942f52642075caa9?label=production", None),
        ("PUT", "/prompts/6b0731e5942f52642075caa9", {"name": "x"}),
        ("GET", "/prompts/readyz", None),
    ],
)
def test_requests_answer_503_quickly(
    client: httpx.Client, method: str, path: str, body: dict | None
) -> None:
    started = time.monotonic()
    response = client.request(method, path, json=body)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"
    assert response.headers["Retry-After"] == "1"
    assert time.monotonic() - started < 5


@pytest.mark.usefixtures("unreachable_database")
def test_health_does_not_touch_the_database(client: httpx.Client) -> None:
    assert client.get("/projects/healthz").status_code == 200
