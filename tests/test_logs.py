"""Logs operators can use: one JSON object per line, tied to its request, at LOG_LEVEL, with no
secrets and nothing a user wrote."""

import json
import logging
import os
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from devtools.embedded_mongo import free_port
from devtools.fake_deepseek import FakeDeepSeek, Scenario
from devtools.gateway import FUNCTIONS_DIR, TARGET
from devtools.processes import wait_until_healthy
from shared.logs import configure_logging
from tests.conftest import ADMIN_HEADERS, TEST_ADMIN_KEY, configure

CLI = Path(sys.executable).parent / "functions-framework"
LINE_FIELDS = {"time", "level", "logger", "message", "function"}


def json_lines(text: str) -> list[dict]:
    """Every line written, each of which must be one JSON object."""
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def access_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if line["logger"] == "better_assistant.access"]


def test_each_request_leaves_one_access_line_with_its_route_template(
    client: httpx.Client, project: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    response = client.get(
        f"/projects/{project['id']}",
        params={"api_key": "query-secret"},
        headers={"X-Request-Id": "logs-test-1"},
    )
    assert response.status_code == 200
    written = capsys.readouterr().err
    lines = [line for line in json_lines(written) if line.get("request_id") == "logs-test-1"]
    assert len(access_lines(lines)) == 1
    access = access_lines(lines)[0]
    assert access.keys() >= LINE_FIELDS
    assert access["level"] == "INFO"
    assert access["function"] == "projects"
    assert access["method"] == "GET"
    # The route's template: never the raw path, its query string or its values.
    assert access["route"] == "/{project_id}"
    assert access["status"] == 200
    assert isinstance(access["duration_ms"], float)
    assert project["id"] not in json.dumps(lines)
    assert "query-secret" not in json.dumps(lines)


def test_a_stream_is_logged_with_its_request_and_without_what_the_user_wrote(
    client: httpx.Client,
    project: dict,
    fake_deepseek: FakeDeepSeek,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    fake_deepseek.default_scenario = Scenario(status=500)
    capsys.readouterr()
    words = f"my-private-words-{uuid.uuid4().hex}"
    body = {"project_id": project["id"], "input": words}
    with client.stream("POST", "/chat", json=body, headers={"X-Request-Id": "logs-test-2"}) as r:
        assert r.status_code == 200
        r.read()
    lines = [line for line in json_lines(capsys.readouterr().err) if line.get("request_id")]
    mine = [line for line in lines if line["request_id"] == "logs-test-2"]
    assert [line["route"] for line in access_lines(mine)] == ["/"]
    # The upstream's failure, logged while the stream ran, belongs to the same request.
    assert any(line["logger"] == "better_assistant.deepseek" for line in mine)
    assert all(line["function"] == "chat" for line in mine)
    assert words not in caplog.text
    assert not any(words in json.dumps(line) for line in lines)


def test_every_line_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("tests")
    secrets = {
        "Bearer eyJhbGciOi.payload.signature": "Bearer [redacted]",
        "sk-0123456789abcdef": "[redacted]",
        "ba_s3cr3tProjectKey0123": "[redacted]",
        "api_key=hunter2hunter2": "api_key=[redacted]",
        '"password": "p4ssw0rd!"': '"password": "[redacted]"',
        "mongodb://admin:dbpass@mongo:27017": "mongodb://admin:[redacted]@mongo:27017",
        f"the admin key {TEST_ADMIN_KEY}": "the admin key [redacted]",
        # Prose that names a setting stays readable.
        "no DEEPSEEK_API_KEY: answers come from the fake": "no DEEPSEEK_API_KEY: answers come "
        "from the fake",
    }
    logger = logging.getLogger("better_assistant.tests")
    capsys.readouterr()
    try:
        raise RuntimeError("failed with DEEPSEEK_API_KEY test-key")
    except RuntimeError:
        logger.exception("calling with %s", " | ".join(secrets))
    [line] = [line for line in json_lines(capsys.readouterr().err) if line["logger"] == logger.name]
    assert line["level"] == "ERROR"
    assert line["message"] == "calling with " + " | ".join(secrets.values())
    assert "failed with DEEPSEEK_API_KEY [redacted]" in line["exception"]
    assert "test-key" not in json.dumps(line)


def serve_alone(name: str, mongo_uri: str, log_level: str) -> tuple[str, subprocess.Popen[bytes]]:
    """The function started as a deployment starts it, at `log_level`."""
    port = free_port()
    env = {
        **os.environ,
        "MONGODB_URI": mongo_uri,
        "MONGODB_DB": f"logs_{uuid.uuid4().hex[:8]}",
        "PORT": str(port),
        "ADMIN_API_KEY": TEST_ADMIN_KEY,
        "LOG_LEVEL": log_level,
    }
    source = FUNCTIONS_DIR / name / "main.py"
    process = subprocess.Popen(
        [str(CLI), "--source", str(source), "--target", TARGET],
        env=env,
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    wait_until_healthy(url, process)
    return url, process


def written_by(process: subprocess.Popen[bytes]) -> str:
    process.terminate()
    _, stderr = process.communicate(timeout=10)
    return stderr.decode()


def test_a_function_alone_writes_json_lines_at_its_log_level(mongo_uri: str) -> None:
    url, process = serve_alone("projects", mongo_uri, "INFO")
    try:
        httpx.get(f"{url}/readyz", headers={"X-Request-Id": "alone-1"})
        httpx.get(f"{url}/{uuid.uuid4().hex}", headers=ADMIN_HEADERS)
    finally:
        lines = json_lines(written_by(process))
    assert all(line.keys() >= LINE_FIELDS for line in lines)
    accesses = {line["request_id"]: line for line in access_lines(lines)}
    ready = accesses["alone-1"]
    assert (ready["function"], ready["route"], ready["status"]) == ("projects", "/readyz", 200)
    assert [line["route"] for line in accesses.values()].count("/{project_id}") == 1


def test_a_function_alone_honours_a_quieter_log_level(mongo_uri: str) -> None:
    """The ASGI functions too: `chat` at WARNING writes no access line."""
    url, process = serve_alone("chat", mongo_uri, "WARNING")
    try:
        assert httpx.get(f"{url}/readyz").status_code == 200
    finally:
        lines = json_lines(written_by(process))
    assert access_lines(lines) == []
    assert all(line["level"] in ("WARNING", "ERROR", "CRITICAL") for line in lines)


def test_lines_are_written_while_the_settings_do_not_load(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A setting out of bounds is reported by the log, not turned into another failure there."""
    configure_logging("tests")
    configure(monkeypatch, LOG_LEVEL="chatty")
    logger = logging.getLogger("better_assistant.tests")
    capsys.readouterr()
    try:
        raise RuntimeError("with the key sk-0123456789abcdef")
    except RuntimeError:
        logger.exception("unhandled error request_id=%s", "settings-1")
    [line] = [line for line in json_lines(capsys.readouterr().err) if line["logger"] == logger.name]
    assert line["message"] == "unhandled error request_id=settings-1"
    assert "with the key [redacted]" in line["exception"]


@pytest.mark.parametrize("name", ["chat", "projects"])
def test_a_function_whose_settings_do_not_load_stays_live_and_answers_in_the_error_model(
    mongo_uri: str, name: str
) -> None:
    """A wrong setting is a failing readiness in JSON, with a request id and the reason logged,
    not a text page on every path (liveness included, so the pod would be restarted in a loop)."""
    url, process = serve_alone(name, mongo_uri, "chatty")
    try:
        ready = httpx.get(
            f"{url}/readyz", headers={"X-Request-Id": "wrong-1", "Origin": "https://app.example"}
        )
    finally:
        lines = json_lines(written_by(process))
    assert ready.status_code == 500
    assert ready.headers["X-Request-Id"] == "wrong-1"
    assert ready.json()["error"]["details"] == {"request_id": "wrong-1"}
    [failure] = [
        line for line in lines if line.get("request_id") == "wrong-1" and "exception" in line
    ]
    assert "LOG_LEVEL" in failure["exception"]
