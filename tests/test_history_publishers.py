"""Publishing turns to each history queue, over real HTTP on loopback, and never losing one."""

import asyncio
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr
from pymongo.database import Database

from devtools.embedded_mongo import free_port
from shared.queues.publishers import (
    CloudEventsPublisher,
    LocalQueuePublisher,
    OpenFaaSPublisher,
    SqsPublisher,
    publisher_for,
    wait_until_drained,
)
from shared.queues.signatures import sign
from shared.queues.sqs import sqs_client
from shared.workflows.history.channel import TURNS
from shared.workflows.history.models import TurnEvent
from shared.workflows.history.writer import consume_turn
from shared.workflows.sqs_drain import drain
from tests.conftest import configure
from tests.test_history_writer import create_dialog, make_turn


@pytest.fixture(autouse=True)
def quick_retries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    configure(
        monkeypatch,
        HISTORY_PUBLISH_RETRIES="2",
        HISTORY_PUBLISH_BACKOFF_S="0.01",
        HISTORY_PUBLISH_TIMEOUT_S="2",
        EVENT_SPOOL_DIR=str(tmp_path / "spool"),
    )


def unreachable_database(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(
        monkeypatch,
        MONGODB_URI=f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
        MONGODB_TIMEOUT_MS="200",
    )


@pytest.fixture
def dialog(client: httpx.Client, project: dict) -> dict:
    return create_dialog(client, project)


@pytest.fixture
def turn(dialog: dict) -> TurnEvent:
    return TurnEvent.model_validate(make_turn(dialog))


def publish(*turns: TurnEvent, publisher=None) -> None:
    """Publish on a fresh event loop and wait until every turn is settled."""

    async def run() -> None:
        chosen = publisher or publisher_for(TURNS, consume_turn)
        for turn in turns:
            await chosen.publish(turn)
        assert await wait_until_drained(10)

    asyncio.run(run())


def stored_turns(database: Database) -> dict[str, int]:
    counts: dict[str, int] = {}
    for message in database.messages.find():
        counts[message["turn_id"]] = counts.get(message["turn_id"], 0) + 1
    return counts


class StubGateway:
    """An HTTP server on 127.0.0.1 answering every POST with the next scripted status."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                stub.requests.append((self.path, dict(self.headers), body))
                status = stub.statuses.pop(0) if len(stub.statuses) > 1 else stub.statuses[0]
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> "StubGateway":
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_settings_choose_the_publisher(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(publisher_for(TURNS, consume_turn), LocalQueuePublisher)
    configure(monkeypatch, K_SINK="http://broker-ingress.knative-eventing/default/default")
    chosen = publisher_for(TURNS, consume_turn)
    assert isinstance(chosen, CloudEventsPublisher)
    assert chosen.url == "http://broker-ingress.knative-eventing/default/default"
    configure(monkeypatch, HISTORY_QUEUE="openfaas", HISTORY_QUEUE_URL="http://gateway:8080/")
    assert (
        publisher_for(TURNS, consume_turn).url
        == "http://gateway:8080/async-function/history-writer"
    )
    configure(monkeypatch, HISTORY_QUEUE="sqs", HISTORY_QUEUE_URL="https://sqs.example/1/turns")
    assert isinstance(publisher_for(TURNS, consume_turn), SqsPublisher)
    configure(monkeypatch, HISTORY_QUEUE="local")
    assert isinstance(publisher_for(TURNS, consume_turn), LocalQueuePublisher)


def test_a_queue_without_its_url_falls_back_to_local(monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, HISTORY_QUEUE="sqs")
    assert isinstance(publisher_for(TURNS, consume_turn), LocalQueuePublisher)


def test_boto3_is_imported_only_to_send_to_sqs() -> None:
    probe = (
        "import os, sys\n"
        "from shared.workflows.history.channel import TURNS\n"
        "from shared.workflows.history.writer import consume_turn\n"
        "from shared.queues.publishers import publisher_for\n"
        "publisher_for(TURNS, consume_turn)\n"
        "os.environ.update(HISTORY_QUEUE='sqs', HISTORY_QUEUE_URL='https://sqs.example/1/q')\n"
        "from shared.settings import get_settings\n"
        "get_settings.cache_clear()\n"
        "publisher_for(TURNS, consume_turn)\n"
        "print('boto3' in sys.modules, 'botocore' in sys.modules)\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert output.split() == ["False", "False"]


def test_the_local_queue_writes_in_the_background(turn: TurnEvent, database: Database) -> None:
    async def run() -> bool:
        await LocalQueuePublisher(TURNS, consume_turn).publish(turn)
        return await wait_until_drained(10)

    assert asyncio.run(run())
    assert stored_turns(database) == {turn.turn_id: 2}


def test_the_local_queue_retries_a_failed_write_until_the_database_answers(
    dialog: dict,
    database: Database,
    mongo_uri: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    first, second = (TurnEvent.model_validate(make_turn(dialog)) for _ in range(2))

    async def run() -> None:
        publisher = LocalQueuePublisher(TURNS, consume_turn)
        unreachable_database(monkeypatch)
        await publisher.publish(first)
        # Well past the publish retries: it is still being retried.
        assert not await wait_until_drained(1.5)
        configure(monkeypatch, MONGODB_URI=mongo_uri)
        await publisher.publish(second)
        assert await wait_until_drained(10)

    asyncio.run(run())
    assert stored_turns(database) == {first.turn_id: 2, second.turn_id: 2}
    assert f"turn {first.turn_id} (" in caplog.text and "handling it here failed" in caplog.text
    assert first.user_content not in caplog.text
    assert first.assistant_content not in caplog.text


def test_cloudevents_reach_the_history_writer_function(
    gateway_url: str,
    turn: TurnEvent,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure(
        monkeypatch, HISTORY_QUEUE="cloudevents", HISTORY_QUEUE_URL=f"{gateway_url}/history-writer"
    )
    publish(turn, turn)
    assert stored_turns(database) == {turn.turn_id: 2}
    assert "handling it here" not in caplog.text


def test_openfaas_posts_the_turn_to_the_async_route(
    turn: TurnEvent, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with StubGateway([202]) as gateway:
        configure(monkeypatch, HISTORY_QUEUE="openfaas", HISTORY_QUEUE_URL=gateway.url)
        publish(turn)
    [(path, headers, body)] = gateway.requests
    assert path == "/async-function/history-writer"
    assert headers["content-type"] == "application/json"
    assert TurnEvent.model_validate_json(body) == turn
    assert stored_turns(database) == {}


def test_a_refusing_queue_is_retried_then_the_turn_is_written_directly(
    turn: TurnEvent,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    with StubGateway([503]) as gateway:
        publish(turn, publisher=OpenFaaSPublisher(TURNS, consume_turn, gateway.url))
    assert len(gateway.requests) == 3
    assert stored_turns(database) == {turn.turn_id: 2}
    assert any(
        r.levelname == "WARNING" and "handling it here" in r.getMessage() for r in caplog.records
    )


def test_a_queue_that_recovers_gets_the_turn(turn: TurnEvent, database: Database) -> None:
    with StubGateway([503, 202]) as gateway:
        publish(turn, publisher=OpenFaaSPublisher(TURNS, consume_turn, gateway.url))
    assert len(gateway.requests) == 2
    assert stored_turns(database) == {}


def test_an_unreachable_broker_is_retried_then_the_turn_is_written_directly(
    turn: TurnEvent, database: Database, caplog: pytest.LogCaptureFixture
) -> None:
    started = time.monotonic()
    publish(
        turn, publisher=CloudEventsPublisher(TURNS, consume_turn, f"http://127.0.0.1:{free_port()}")
    )
    assert time.monotonic() - started < 5
    assert stored_turns(database) == {turn.turn_id: 2}
    attempts = [r for r in caplog.records if "publishing" in r.getMessage()]
    assert len(attempts) == 3
    assert attempts[-1].levelname == "WARNING"


def test_without_a_signing_key_the_turn_is_written_here_at_once(
    turn: TurnEvent,
    database: Database,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    configure(monkeypatch, EVENT_SIGNING_KEY="")
    with StubGateway([202]) as gateway:
        publish(turn, publisher=OpenFaaSPublisher(TURNS, consume_turn, gateway.url))
    assert gateway.requests == []
    assert stored_turns(database) == {turn.turn_id: 2}
    assert not [r for r in caplog.records if "retrying" in r.getMessage()]


def test_a_cancelled_caller_does_not_cancel_the_delivery(
    turn: TurnEvent, database: Database
) -> None:
    async def run() -> None:
        with StubGateway([503]) as gateway:
            publisher = OpenFaaSPublisher(TURNS, consume_turn, gateway.url)
            caller = asyncio.create_task(publisher.publish(turn))
            await asyncio.sleep(0.005)
            caller.cancel()
            with pytest.raises(asyncio.CancelledError):
                await caller
            assert await wait_until_drained(10)

    asyncio.run(run())
    assert stored_turns(database) == {turn.turn_id: 2}


def sqs_queue(sqs, monkeypatch: pytest.MonkeyPatch, fifo: bool = False, **attributes: str) -> str:
    name = f"turns-{uuid.uuid4().hex[:8]}" + (".fifo" if fifo else "")
    if fifo:
        attributes["FifoQueue"] = "true"
    url = sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
    configure(monkeypatch, HISTORY_QUEUE="sqs", HISTORY_QUEUE_URL=url)
    return url


def receive(sqs, url: str) -> list[dict]:
    return sqs.receive_message(
        QueueUrl=url,
        MaxNumberOfMessages=10,
        MessageAttributeNames=["All"],
        MessageSystemAttributeNames=["All"],
    ).get("Messages", [])


def queued(sqs, url: str) -> int:
    attributes = sqs.get_queue_attributes(
        QueueUrl=url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return sum(int(value) for value in attributes.values())


def test_sqs_receives_the_turn_with_its_id(
    sqs, turn: TurnEvent, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sqs_queue(sqs, monkeypatch)
    publish(turn)
    [message] = receive(sqs, url)
    assert TurnEvent.model_validate_json(message["Body"]) == turn
    assert message["MessageAttributes"]["id"]["StringValue"] == turn.turn_id
    assert stored_turns(database) == {}


def test_a_fifo_queue_orders_by_dialog_and_deduplicates_by_turn(
    sqs, turn: TurnEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sqs_queue(sqs, monkeypatch, fifo=True)
    publish(turn, turn)
    [message] = receive(sqs, url)
    assert message["Attributes"]["MessageGroupId"] == turn.dialog_id
    assert message["Attributes"]["MessageDeduplicationId"] == turn.turn_id


def test_drain_writes_each_turn_then_deletes_it(
    sqs, dialog: dict, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sqs_queue(sqs, monkeypatch)
    turns = [TurnEvent.model_validate(make_turn(dialog, after_s=i)) for i in (1, 2)]
    publish(*turns)
    sqs.send_message(QueueUrl=url, MessageBody='{"not": "a turn"}')
    forged = TurnEvent.model_validate(make_turn(dialog, after_s=3))
    attribute = {"DataType": "String", "StringValue": sign(forged, [SecretStr("not-ours")])}
    sqs.send_message(
        QueueUrl=url,
        MessageBody=forged.model_dump_json(),
        MessageAttributes={"signature": attribute},
    )
    assert drain("history", max_messages=10, wait_seconds=0) == 2
    assert stored_turns(database) == {turns[0].turn_id: 2, turns[1].turn_id: 2}
    assert queued(sqs, url) == 0


def test_drain_leaves_a_turn_on_the_queue_while_the_database_is_down(
    sqs, turn: TurnEvent, database: Database, mongo_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sqs_queue(sqs, monkeypatch, VisibilityTimeout="1")
    publish(turn)
    unreachable_database(monkeypatch)
    assert drain("history", max_messages=10, wait_seconds=0) == 0
    assert queued(sqs, url) == 1
    configure(monkeypatch, MONGODB_URI=mongo_uri)
    time.sleep(1.2)
    assert drain("history", max_messages=10, wait_seconds=0) == 1
    assert stored_turns(database) == {turn.turn_id: 2}
    assert queued(sqs, url) == 0


def test_the_sqs_client_follows_the_queue_region(sqs) -> None:
    assert sqs_client("https://sqs.eu-west-1.amazonaws.com/1/turns").meta.region_name == "eu-west-1"
    assert sqs_client(f"{sqs.meta.endpoint_url}/1/turns").meta.region_name == "us-east-1"


def test_drain_without_a_signing_key_drains_nothing(
    sqs, turn: TurnEvent, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = sqs_queue(sqs, monkeypatch)
    publish(turn)
    configure(monkeypatch, EVENT_SIGNING_KEY="")
    with pytest.raises(RuntimeError, match="EVENT_SIGNING_KEY"):
        drain("history", max_messages=10, wait_seconds=0)
    assert queued(sqs, url) == 1


def test_a_caller_is_not_held_while_the_turn_waits_for_the_database(
    turn: TurnEvent, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # Neither the broker nor the database answers: the turn is retried here in the background,
    # and the chat stream that published it ends instead of waiting for the database.
    unreachable_database(monkeypatch)

    async def run() -> None:
        broker = f"http://127.0.0.1:{free_port()}"
        publisher = CloudEventsPublisher(TURNS, consume_turn, broker)
        await asyncio.wait_for(publisher.publish(turn), 5)
        assert not await wait_until_drained(0.1)

    asyncio.run(run())
    assert any("retrying in" in r.getMessage() for r in caplog.records)
