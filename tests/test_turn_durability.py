"""No finished turn is lost: a turn that cannot be written is retried for as long as the process
lives, kept on disk when the process stops (or after EVENT_SPOOL_AFTER_S of failing), replayed by
the next start; and the logs of the whole ordeal name turns by id and size, never their text."""

import asyncio
import json
import logging
import os
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient
from pymongo.database import Database

from devtools.embedded_mongo import EmbeddedMongo, free_port
from devtools.fake_deepseek import FakeDeepSeek, Scenario
from devtools.gateway import load_function
from devtools.processes import wait_until_healthy
from devtools.run import command
from shared.queues.publishers import (
    CloudEventsPublisher,
    LocalQueuePublisher,
    replay_spooled,
    wait_until_drained,
)
from shared.queues.signatures import verify
from shared.queues.spool import spool_path, write_spool_file
from shared.settings import get_settings
from shared.workflows.history.channel import TURNS
from shared.workflows.history.models import TurnEvent
from shared.workflows.history.writer import consume_turn
from tests.conftest import ADMIN_HEADERS, ServerThread, configure
from tests.test_chat import wait_for
from tests.test_history_publishers import stored_turns, unreachable_database
from tests.test_history_writer import create_dialog, make_turn

ROOT = Path(__file__).resolve().parent.parent
QUESTION = "My passport number is X1234567, where is my refund?"
ANSWER = "Your refund of 42 euros left our bank on Monday."


@pytest.fixture(autouse=True)
def spool(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test's own spool folder, and retries quick enough to watch."""
    folder = tmp_path / "spool"
    configure(
        monkeypatch,
        EVENT_SPOOL_DIR=str(folder),
        HISTORY_PUBLISH_RETRIES="1",
        HISTORY_PUBLISH_BACKOFF_S="0.05",
        EVENT_RETRY_MAX_BACKOFF_S="1",
    )
    return folder


@pytest.fixture
def dialog(client: httpx.Client, project: dict) -> dict:
    return create_dialog(client, project)


@pytest.fixture
def outage_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmbeddedMongo]:
    """A database of the test's own, on disk (so it can be stopped and started again on the same
    port and data), that the functions use."""
    server = EmbeddedMongo(str(tmp_path / "mongo"), port=free_port())
    server.start()
    configure(monkeypatch, MONGODB_URI=server.uri, MONGODB_TIMEOUT_MS="500")
    try:
        yield server
    finally:
        server.stop()


def restarted(server: EmbeddedMongo) -> EmbeddedMongo:
    """The same database back: same storage, same port."""
    return EmbeddedMongo(server.storage, port=server.port).start()


def stored_messages(uri: str, database: str, turn_id: str) -> dict[str, str]:
    with MongoClient(uri, serverSelectionTimeoutMS=2000) as client:
        found = client[database].messages.find({"turn_id": turn_id})
        return {message["role"]: message["content"] for message in found}


def new_project(client: httpx.Client) -> dict:
    response = client.post("/projects", json={"name": "Refunds"})
    assert response.status_code == 201, response.text
    return response.json()


def read_meta(lines: Iterator[str]) -> dict:
    """The stream's first event, `meta`, read as soon as it arrives."""
    for line in lines:
        if line.startswith("data: "):
            return json.loads(line[6:])
    raise AssertionError("the stream ended before its meta event")


def assert_no_content(text: str) -> None:
    assert QUESTION not in text and "X1234567" not in text
    assert ANSWER not in text


def test_a_turn_finished_during_a_30_second_outage_is_written_when_the_database_returns(
    client: httpx.Client,
    environment: str,
    fake_deepseek: FakeDeepSeek,
    outage_database: EmbeddedMongo,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    project = new_project(client)
    fake_deepseek.default_scenario = Scenario(reply=ANSWER, token_interval_s=0.15)
    body = {"project_id": project["id"], "input": QUESTION}
    with client.stream("POST", "/chat", json=body) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        turn_id = read_meta(lines)["turn_id"]
        # The database goes down while the answer streams: the turn finishes into the outage.
        outage_database.stop()
        down_at = time.monotonic()
        streamed = "".join(
            json.loads(line[6:]).get("delta", "") for line in lines if line.startswith("data: ")
        )
    assert streamed == ANSWER
    time.sleep(max(0.0, 30 - (time.monotonic() - down_at)))

    back = restarted(outage_database)
    try:
        written = wait_for(lambda: stored_messages(back.uri, environment, turn_id), timeout=15)
    finally:
        back.stop()
    assert written == {"user": QUESTION, "assistant": ANSWER}
    assert f"turn {turn_id}" in caplog.text  # the ordeal was logged, by id
    assert_no_content(caplog.text)


def test_a_turn_still_failing_when_its_loop_ends_is_kept_on_disk_for_replay(
    dialog: dict, spool: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    turn = TurnEvent.model_validate(make_turn(dialog, user_content=QUESTION))
    unreachable_database(monkeypatch)
    broker = CloudEventsPublisher(TURNS, consume_turn, f"http://127.0.0.1:{free_port()}")

    async def run() -> None:
        # The caller is answered after a first attempt here; the loop ends while it is retried.
        await broker.publish(turn)
        assert not await wait_until_drained(0.5)

    asyncio.run(run())

    [kept] = spool.iterdir()
    assert kept.name == f"history.{turn.turn_id}.json"
    assert TurnEvent.model_validate_json(kept.read_bytes()) == turn
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600
    # The log says where the turn is and how to post it by hand, not what it says.
    [line] = [r.getMessage() for r in caplog.records if str(kept) in r.getMessage()]
    signature = line.split("ce-signature: ")[1]
    verify(json.loads(kept.read_bytes()), signature, get_settings().event_signing_keys)
    assert_no_content(caplog.text)


def test_a_turn_failing_for_long_is_kept_on_disk_then_removed_once_written(
    dialog: dict,
    database: Database,
    mongo_uri: str,
    spool: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    turn = TurnEvent.model_validate(make_turn(dialog))
    configure(monkeypatch, EVENT_SPOOL_AFTER_S="0.3")
    kept = spool_path(TURNS, turn)

    async def run() -> None:
        unreachable_database(monkeypatch)
        await LocalQueuePublisher(TURNS, consume_turn).publish(turn)
        while not kept.exists():
            await asyncio.sleep(0.05)
        configure(monkeypatch, MONGODB_URI=mongo_uri)
        assert await wait_until_drained(10)

    asyncio.run(run())
    assert stored_turns(database) == {turn.turn_id: 2}
    assert not kept.exists()


def test_the_next_start_replays_kept_turns_and_sets_corrupt_files_aside(
    client: httpx.Client, project: dict, database: Database, spool: Path
) -> None:
    turns = [TurnEvent.model_validate(make_turn(create_dialog(client, project))) for _ in "ab"]
    for turn in turns:
        write_spool_file(spool_path(TURNS, turn), turn)
    (spool / "history.truncated.json").write_text('{"turn_id": "trunc')
    # A new handler of the chat function: its first request starts the replay, without waiting.
    with ServerThread(load_function("chat")) as chat:
        assert httpx.get(f"{chat.url}/healthz", timeout=5).status_code == 200
        wait_for(lambda: not list(spool.glob("*.json")), timeout=10)
    assert stored_turns(database) == {turn.turn_id: 2 for turn in turns}
    assert [path.name for path in spool.iterdir()] == ["history.truncated.json.corrupt"]


def test_a_replay_of_a_turn_already_written_changes_nothing(
    dialog: dict, database: Database, spool: Path
) -> None:
    turn = TurnEvent.model_validate(make_turn(dialog))

    async def run() -> int:
        await LocalQueuePublisher(TURNS, consume_turn).publish(turn)
        assert await wait_until_drained(10)
        write_spool_file(spool_path(TURNS, turn), turn)
        replayed = await replay_spooled(TURNS, consume_turn)
        assert await wait_until_drained(10)
        return replayed

    assert asyncio.run(run()) == 1
    assert stored_turns(database) == {turn.turn_id: 2}
    assert list(spool.iterdir()) == []


def test_the_chat_function_keeps_an_unwritten_turn_across_a_sigterm(
    client: httpx.Client,
    environment: str,
    fake_deepseek: FakeDeepSeek,
    outage_database: EmbeddedMongo,
    spool: Path,
    tmp_path: Path,
) -> None:
    """Run as its image runs it (functions-framework: gunicorn and a uvicorn worker), stopped while
    a turn cannot be written, the function leaves the turn on disk for the next start."""
    project = new_project(client)
    fake_deepseek.default_scenario = Scenario(reply=ANSWER, token_interval_s=0.15)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    output = tmp_path / "chat.log"
    with open(output, "wb") as log:
        chat = subprocess.Popen(
            command("chat", port),
            cwd=ROOT,
            env={**os.environ, "PORT": str(port), "PYTHONPATH": str(ROOT)},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_healthy(url, chat, timeout=60)
        body = {"project_id": project["id"], "input": QUESTION}
        with httpx.stream("POST", url, json=body, headers=ADMIN_HEADERS, timeout=30) as response:
            assert response.status_code == 200
            lines = response.iter_lines()
            turn_id = read_meta(lines)["turn_id"]
            outage_database.stop()
            list(lines)
        wait_for(lambda: "handling it here failed" in output.read_text(), timeout=15)
    finally:
        chat.terminate()
        chat.wait(timeout=30)
    assert [path.name for path in spool.iterdir()] == [f"history.{turn_id}.json"]
    assert_no_content(output.read_text())

    back = restarted(outage_database)
    try:
        with ServerThread(load_function("chat")) as next_start:
            assert httpx.get(f"{next_start.url}/healthz", timeout=5).status_code == 200
            written = wait_for(lambda: stored_messages(back.uri, environment, turn_id), timeout=15)
            wait_for(lambda: not list(spool.iterdir()), timeout=5)
    finally:
        back.stop()
    assert written == {"user": QUESTION, "assistant": ANSWER}
