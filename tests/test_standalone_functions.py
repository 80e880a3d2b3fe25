"""Each function also runs alone under the functions-framework CLI, as it does when deployed."""

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devtools.embedded_mongo import free_port
from devtools.gateway import FUNCTIONS_DIR, TARGET, function_names
from devtools.processes import wait_until_healthy
from tests.conftest import ADMIN_HEADERS, TEST_ADMIN_KEY
from tests.test_http_contract import assert_odd_requests_get_the_error_model

CLI = Path(sys.executable).parent / "functions-framework"


@pytest.fixture(scope="module")
def deployed(mongo_uri: str) -> Iterator[dict[str, str]]:
    """Every function started exactly as a deployment starts it, each on its own port."""
    database = f"standalone_{uuid.uuid4().hex[:8]}"
    processes: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    try:
        for name in function_names():
            port = free_port()
            env = {
                **os.environ,
                "MONGODB_URI": mongo_uri,
                "MONGODB_DB": database,
                "PORT": str(port),
                "ADMIN_API_KEY": TEST_ADMIN_KEY,
            }
            source = FUNCTIONS_DIR / name / "main.py"
            processes.append(
                subprocess.Popen(
                    [str(CLI), "--source", str(source), "--target", TARGET],
                    env=env,
                    cwd="/",
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
            )
            urls[name] = f"http://127.0.0.1:{port}"
        for process, url in zip(processes, urls.values(), strict=True):
            wait_until_healthy(url, process)
        yield urls
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=10)


@pytest.mark.parametrize("name", function_names())
def test_each_function_answers_at_its_own_root(deployed: dict[str, str], name: str) -> None:
    with httpx.Client(base_url=deployed[name]) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json() == {"status": "ready"}
        missing = http.get("/nothing/here/at/all")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "route_not_found"


@pytest.mark.parametrize("name", function_names())
def test_each_function_alone_answers_every_unmatched_request_in_the_error_model(
    deployed: dict[str, str], name: str
) -> None:
    """The framework's own routing (Starlette's for the ASGI functions) answers nothing itself."""
    assert_odd_requests_get_the_error_model(deployed[name], name)


def test_a_newline_is_no_empty_path_alone(deployed: dict[str, str]) -> None:
    """Starlette's `{path:path}` once read `/%0A` as the root: the list of every run."""
    response = httpx.get(f"{deployed['evaluations']}/%0A", headers=ADMIN_HEADERS)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("name", function_names())
def test_each_function_serves_its_own_document_alone(
    deployed: dict[str, str], gateway_url: str, name: str
) -> None:
    """Flask and ASGI functions alike, without a credential: the document the gateway serves at
    `/<name>/openapi.json`, whose relative server is the function's root wherever it is."""
    with httpx.Client(base_url=deployed[name]) as http:
        alone = http.get("/openapi.json")
    assert alone.status_code == 200, alone.text
    assert alone.json() == httpx.get(f"{gateway_url}/{name}/openapi.json").json()
    assert alone.json()["servers"][0]["url"] == "."


def test_separately_deployed_functions_work_together(deployed: dict[str, str]) -> None:
    projects = httpx.Client(base_url=deployed["projects"], headers=ADMIN_HEADERS)
    prompts = httpx.Client(base_url=deployed["prompts"], headers=ADMIN_HEADERS)
    project = projects.post("/", json={"name": f"alone-{uuid.uuid4().hex[:6]}"}).json()
    body = {
        "project_id": project["id"],
        "name": "alone",
        "type": "text",
        "template": "Hi {{x}}",
        "labels": ["production"],
    }
    prompt = prompts.post("/", json=body)
    assert prompt.status_code == 201
    fetched = prompts.get(f"/{prompt.json()['id']}", params={"label": "production"})
    assert fetched.json()["version"]["template"] == "Hi {{x}}"
    assert projects.delete(f"/{project['id']}").status_code == 409
