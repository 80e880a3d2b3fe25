"""MongoDB going away fails fast and comes back by itself; liveness never waits on it.

The database here is a SecantusDB of the test's own, on a folder and port of its own, killed and
started again on the same folder and port. Timings are only generous bounds that tell "answered
at once" from "waited out the driver's server selection"; the figures are bench/database_outage's.
"""

import json
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DuplicateKeyError,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WTimeoutError,
)

from devtools.embedded_mongo import EmbeddedMongo, free_port
from devtools.fake_deepseek import FakeDeepSeek, Scenario
from shared.breaker import Breaker
from shared.http.routing import render_error
from tests.conftest import ADMIN_HEADERS, configure
from tests.test_executions import read_events

# The driver's server selection timeout in these tests: what a request waited for every
# request before the breaker. "Fast" is anything well under it.
SELECTION_TIMEOUT_S = 3
FAST_S = 1.0


@pytest.fixture
def own_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedMongo]:
    """A SecantusDB of the test's own, on a folder (so that it can be killed and started again
    with its data) and a port of its own."""
    with EmbeddedMongo(str(tmp_path / "mongo"), port=free_port()) as database:
        timeout_ms = str(SELECTION_TIMEOUT_S * 1000)
        configure(monkeypatch, MONGODB_URI=database.uri, MONGODB_TIMEOUT_MS=timeout_ms)
        yield database


def timed(
    client: httpx.Client, method: str, path: str, **kwargs: object
) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.request(method, path, **kwargs)
    return response, time.monotonic() - started


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert int(response.headers["Retry-After"]) >= 1


def wait_until(predicate, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_the_breaker_answers_at_once_during_an_outage_and_closes_when_the_database_returns(
    client: httpx.Client, own_database: EmbeddedMongo
) -> None:
    created = client.post("/projects", json={"name": "before the outage"})
    assert created.status_code == 201, created.text
    project_id = created.json()["id"]

    own_database.kill()
    # The first requests find the database gone (at worst after the selection timeout).
    first, _ = timed(client, "GET", f"/projects/{project_id}")
    assert_database_unavailable(first)
    for method, path, body in [
        ("GET", f"/projects/{project_id}", None),
        ("GET", "/projects", None),
        ("POST", "/projects", {"name": "during the outage"}),
        ("GET", "/projects/readyz", None),
        ("GET", "/chat/readyz", None),
    ]:
        response, seconds = timed(client, method, path, json=body)
        assert_database_unavailable(response)
        assert seconds < FAST_S, f"{method} {path} waited {seconds:.2f} s"
    health, seconds = timed(client, "GET", "/projects/healthz")
    assert health.status_code == 200
    assert seconds < FAST_S

    own_database.start()
    # Nobody has to ask: the probe notices the database and the next request goes through.
    wait_until(lambda: client.get("/projects/readyz").status_code == 200, timeout=10)
    again = client.get(f"/projects/{project_id}")
    assert again.status_code == 200, again.text
    assert again.json()["name"] == "before the outage"


@pytest.fixture
def unreachable_database(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(
        monkeypatch,
        MONGODB_URI=f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
        MONGODB_TIMEOUT_MS=str(SELECTION_TIMEOUT_S * 1000),
    )


SOME_ID = "6b0731e5942f52642075caa9"


@pytest.mark.usefixtures("unreachable_database")
@pytest.mark.parametrize(
    ("function", "method", "path", "body"),
    [
        ("projects", "GET", "/projects", None),
        ("prompts", "GET", f"/prompts/{SOME_ID}", None),
        ("chat", "POST", "/chat", {"project_id": SOME_ID, "input": "hello"}),
        ("evaluations", "GET", f"/evaluations/{SOME_ID}", None),
    ],
)
def test_liveness_answers_while_every_worker_thread_waits_on_the_database(
    gateway_url: str, function: str, method: str, path: str, body: dict | None
) -> None:
    # Enough requests to hold every worker thread of the function (the event loop's default
    # pool for ASGI functions, the WSGI bridge's for Flask ones) in the driver's server selection.
    waiting = 40
    with (
        httpx.Client(base_url=gateway_url, timeout=30, headers=ADMIN_HEADERS) as http,
        ThreadPoolExecutor(waiting) as pool,
    ):
        stuck = [pool.submit(http.request, method, path, json=body) for _ in range(waiting)]
        time.sleep(0.5)
        health, seconds = timed(http, "GET", f"/{function}/healthz")
        assert health.status_code == 200
        assert seconds < FAST_S, f"/{function}/healthz waited {seconds:.2f} s"
        assert {future.result().status_code for future in stuck} == {503}


@pytest.mark.usefixtures("unreachable_database")
@pytest.mark.parametrize(
    "error",
    [
        NotPrimaryError("not primary", {"code": 10107}),
        AutoReconnect("connection closed"),
        NetworkTimeout("timed out"),
        ServerSelectionTimeoutError("no servers"),
        WTimeoutError("waiting for replication timed out", 64, {"code": 64}),
        OperationFailure("shutting down", 91),
        OperationFailure("primary stepped down", 189),
        BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64, "errmsg": "x"}]}),
        OperationFailure("in a transaction", 251, {"errorLabels": ["TransientTransactionError"]}),
        OperationFailure("retry me", 1, {"errorLabels": ["RetryableWriteError"]}),
    ],
    ids=lambda error: type(error).__name__,
)
def test_transient_driver_errors_are_a_503_database_unavailable(error: Exception) -> None:
    response = render_error(error, "request-1")
    assert response.status == 503
    assert json.loads(response.body)["error"]["code"] == "database_unavailable"
    assert response.headers["Retry-After"] == "1"


@pytest.mark.parametrize(
    "error",
    [
        OperationFailure("bad query", 2),
        DuplicateKeyError("duplicate", 11000),
        BulkWriteError({"writeErrors": [{"code": 11000, "errmsg": "dup"}]}),
        RuntimeError("a bug"),
    ],
    ids=lambda error: type(error).__name__,
)
def test_other_errors_stay_a_500_with_the_request_id(error: Exception) -> None:
    response = render_error(error, "request-2")
    assert response.status == 500
    assert json.loads(response.body)["error"] == {
        "code": "internal_error",
        "message": "An unexpected error occurred.",
        "details": {"request_id": "request-2"},
    }


# The fault suite: bounded load, with the database killed and restarted in the middle of it.
WORKERS = 8
REQUESTS = 300
# Requests kept for once the database is back (the rest are spread over the outage).
AFTER = 60
CHATS = 6
WARM_S = 1.0
OUTAGE_S = 4.0
PAUSE_S = WORKERS * (WARM_S + OUTAGE_S) / (REQUESTS - AFTER)


@dataclass
class Outcome:
    sent: float
    seconds: float
    status: int
    code: str | None


def test_a_killed_database_under_load_loses_no_acknowledged_write_and_gives_no_500(
    gateway_url: str,
    own_database: EmbeddedMongo,
    environment: str,
    fake_deepseek: FakeDeepSeek,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_deepseek.default_scenario = Scenario(tokens=5, token_interval_s=0.05)
    # A turn that could not be written is retried soon enough to be seen written below.
    configure(monkeypatch, EVENT_RETRY_MAX_BACKOFF_S="0.5")
    with httpx.Client(base_url=gateway_url, timeout=30, headers=ADMIN_HEADERS) as http:
        project = http.post("/projects", json={"name": "load"}).json()
    run = uuid.uuid4().hex[:8]
    outcomes: list[Outcome] = []
    acknowledged: list[str] = []
    finished_turns: list[str] = []
    indexes = iter(range(REQUESTS))
    lock = threading.Lock()
    back = threading.Event()

    def one(index: int, http: httpx.Client) -> None:
        sent = time.monotonic()
        if index % (REQUESTS // CHATS) == 0:
            body = {"project_id": project["id"], "input": f"question {index}"}
            with http.stream("POST", "/chat", json=body) as response:
                if response.status_code == 200:
                    events = dict(read_events(response))
                else:
                    events = {}
                    response.read()
            if "done" in events:
                with lock:
                    finished_turns.append(events["meta"]["turn_id"])
        elif index % 2 == 0:
            name = f"{run}-{index}"
            body = {"project_id": project["id"], "name": name, "type": "text", "template": "{{x}}"}
            response = http.post("/prompts", json=body)
            if response.status_code == 201:
                with lock:
                    acknowledged.append(name)
        else:
            response = http.get(f"/projects/{project['id']}")
        code = response.json()["error"]["code"] if response.status_code >= 400 else None
        with lock:
            outcomes.append(Outcome(sent, time.monotonic() - sent, response.status_code, code))

    def worker() -> None:
        with httpx.Client(base_url=gateway_url, timeout=30, headers=ADMIN_HEADERS) as http:
            for index in indexes:
                if index >= REQUESTS - AFTER:
                    assert back.wait(60), "the database did not come back"
                one(index, http)
                time.sleep(PAUSE_S)

    with ThreadPoolExecutor(WORKERS) as pool:
        load = [pool.submit(worker) for _ in range(WORKERS)]
        time.sleep(WARM_S)
        killed = time.monotonic()
        own_database.kill()
        time.sleep(OUTAGE_S)
        own_database.start()
        answering = time.monotonic()
        back.set()
        for future in load:
            future.result()

    assert len(outcomes) == REQUESTS
    assert {outcome.status for outcome in outcomes} <= {200, 201, 503}
    unavailable = [outcome for outcome in outcomes if outcome.status == 503]
    assert unavailable, "the outage was not seen"
    assert {outcome.code for outcome in unavailable} == {"database_unavailable"}
    # The breaker opened: once the requests that were inside the driver at the kill have
    # failed, nothing waits for the driver's server selection any more.
    settled = [o for o in unavailable if killed + SELECTION_TIMEOUT_S + 0.5 < o.sent < answering]
    assert settled and max(o.seconds for o in settled) < FAST_S
    # ... and closed by itself: requests sent once the database is back go through.
    after = [outcome for outcome in outcomes if outcome.sent > answering + 1]
    assert after and all(outcome.status in (200, 201) for outcome in after[-WORKERS:])
    with MongoClient(own_database.uri, serverSelectionTimeoutMS=5000) as mongo:
        stored = {prompt["name"] for prompt in mongo[environment].prompts.find()}
        assert set(acknowledged) <= stored
        # Every turn a user saw finish is written, those that finished during the outage too.
        assert finished_turns, "no chat finished"
        messages = mongo[environment].messages

        def written() -> bool:
            return set(finished_turns) <= set(messages.distinct("turn_id"))

        wait_until(written, timeout=10)


def test_an_acknowledged_write_survives_a_crash_of_the_database_right_after_it(
    client: httpx.Client, own_database: EmbeddedMongo, environment: str
) -> None:
    names = [f"acknowledged {index}" for index in range(30)]
    for name in names:
        assert client.post("/projects", json={"name": name}).status_code == 201
    own_database.kill()
    own_database.start()
    with MongoClient(own_database.uri, serverSelectionTimeoutMS=5000) as mongo:
        stored = {project["name"] for project in mongo[environment].projects.find()}
    assert set(names) <= stored


def test_a_breaker_nobody_asks_about_stops_probing_until_it_is_asked_again() -> None:
    """A configuration the process left behind (settings changed, a test's unreachable URI)
    does not keep a thread pinging a dead address for the rest of the process's life."""
    answering = threading.Event()

    def probe() -> None:
        if not answering.is_set():
            raise ConnectionError("down")

    breaker = Breaker("idle-check", probe, pause_s=0.01, idle_s=0.2)
    breaker.trip("down")

    def probing() -> bool:
        return any(thread.name == "idle-check-probe" for thread in threading.enumerate())

    assert probing()
    deadline = time.monotonic() + 5
    while probing() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not probing()
    assert breaker.is_open  # still refusing, and asking starts the probe again
    answering.set()
    deadline = time.monotonic() + 5
    while breaker.is_open and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not breaker.is_open
