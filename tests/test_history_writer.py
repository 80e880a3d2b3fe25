"""The history-writer function over real HTTP: every delivery shape, idempotent, order-proof."""

import asyncio
import contextlib
import json
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from bson import ObjectId
from pydantic import SecretStr
from pymongo.database import Database

from devtools.embedded_mongo import free_port
from shared.queues.cloudevents import binary_headers
from shared.queues.signatures import NoSigningKey, sign, sign_data
from shared.settings import get_settings
from shared.workflows.history.channel import TURNS
from shared.workflows.history.models import TurnEvent, TurnWritten
from shared.workflows.history.writer import consume_turn
from tests.conftest import TEST_SIGNING_KEY, configure

WRITER = "/history-writer"


def create_dialog(client: httpx.Client, project: dict, **fields: object) -> dict:
    response = client.post("/dialogs", json={"project_id": project["id"], **fields})
    assert response.status_code == 201, response.text
    return response.json()


def make_turn(dialog: dict, after_s: float = 1, **fields: object) -> dict:
    """A finished turn of the dialog, `after_s` seconds from now (JSON-ready)."""
    user_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=after_s)
    turn = {
        "turn_id": uuid.uuid4().hex,
        "dialog_id": dialog["id"],
        "project_id": dialog["project_id"],
        "model": "deepseek-v4-flash",
        "user_content": "Where is my refund?",
        "user_at": user_at.isoformat(),
        "assistant_content": "It is on its way.",
        "assistant_reasoning": "The order shipped.",
        "assistant_at": (user_at + timedelta(milliseconds=800)).isoformat(),
        "status": "ok",
        "finish_reason": "stop",
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
        "cost": 0.00001,
        **fields,
    }
    return json.loads(TurnEvent.model_validate(turn).model_dump_json())


def signature(turn: dict, keys: list[SecretStr] | None = None) -> str:
    """The turn signed as our publishers sign it, or with other `keys`."""
    keys = get_settings().event_signing_keys if keys is None else keys
    return sign(TurnEvent.model_validate(turn), keys)


def post_binary(
    client: httpx.Client, turn: dict, keys: list[SecretStr] | None = None
) -> httpx.Response:
    headers = binary_headers(TURNS, TurnEvent.model_validate(turn), signature(turn, keys))
    return client.post(WRITER, content=json.dumps(turn), headers=headers)


def post_structured(
    client: httpx.Client, turn: dict, keys: list[SecretStr] | None = None
) -> httpx.Response:
    event = {
        "specversion": "1.0",
        "id": turn["turn_id"],
        "source": "/chat",
        "type": "com.better-assistant.turn.completed",
        "datacontenttype": "application/json",
        "signature": signature(turn, keys),
        "data": turn,
    }
    return client.post(
        WRITER, content=json.dumps(event), headers={"Content-Type": "application/cloudevents+json"}
    )


def post_plain(
    client: httpx.Client, turn: dict, keys: list[SecretStr] | None = None
) -> httpx.Response:
    return client.post(WRITER, json=turn, headers={"ce-signature": signature(turn, keys)})


def stored(database: Database, turn: dict) -> dict[str, dict]:
    """The stored messages of a turn, by role."""
    return {m["role"]: m for m in database.messages.find({"turn_id": turn["turn_id"]})}


@pytest.fixture
def dialog(client: httpx.Client, project: dict) -> dict:
    return create_dialog(client, project, title="Refunds")


@pytest.mark.parametrize("post", [post_binary, post_structured, post_plain])
def test_each_delivery_shape_writes_both_messages(
    client: httpx.Client, dialog: dict, database: Database, post
) -> None:
    turn = make_turn(dialog)
    response = post(client, turn)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "turn_id": turn["turn_id"],
        "dialog_id": dialog["id"],
        "written": True,
        "duplicate": False,
        "reason": None,
    }
    messages = stored(database, turn)
    assert messages["user"]["content"] == "Where is my refund?"
    assert messages["user"]["status"] == "ok"
    assert "reasoning" not in messages["user"]
    assistant = messages["assistant"]
    assert (assistant["content"], assistant["reasoning"]) == (
        "It is on its way.",
        "The order shipped.",
    )
    assert assistant["usage"]["total_tokens"] == 17
    assert assistant["created_at"] == datetime.fromisoformat(turn["assistant_at"])
    assert messages["user"]["created_at"] == datetime.fromisoformat(turn["user_at"])

    read = client.get(f"/dialogs/{dialog['id']}").json()
    assert read["message_count"] == 2
    assert read["updated_at"] == turn["assistant_at"].replace("+00:00", "Z")
    assert [(m["role"], m["content"]) for m in read["messages"]] == [
        ("user", "Where is my refund?"),
        ("assistant", "It is on its way."),
    ]
    assert read["messages"][1]["reasoning"] == "The order shipped."


def test_a_redelivered_turn_is_stored_once(
    client: httpx.Client, dialog: dict, database: Database
) -> None:
    turn = make_turn(dialog)
    first = post_binary(client, turn)
    again = [post(client, turn) for post in (post_binary, post_structured, post_plain)]
    assert first.json()["duplicate"] is False
    assert all(r.status_code == 200 and r.json()["duplicate"] for r in again)
    assert database.messages.count_documents({"turn_id": turn["turn_id"]}) == 2
    assert client.get(f"/dialogs/{dialog['id']}").json()["message_count"] == 2


def test_simultaneous_deliveries_of_one_turn_store_one_copy(
    client: httpx.Client, gateway_url: str, dialog: dict, database: Database
) -> None:
    turn = make_turn(dialog)
    statuses: list[int] = []

    def deliver() -> None:
        with httpx.Client(base_url=gateway_url, timeout=30) as http:
            statuses.append(post_plain(http, turn).status_code)

    threads = [threading.Thread(target=deliver) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 6
    assert database.messages.count_documents({}) == 2
    assert client.get(f"/dialogs/{dialog['id']}").json()["message_count"] == 2


def test_turns_out_of_order_read_back_in_time_order(client: httpx.Client, dialog: dict) -> None:
    first = make_turn(dialog, after_s=1, user_content="one", assistant_content="1")
    second = make_turn(dialog, after_s=5, user_content="two", assistant_content="2")
    assert post_binary(client, second).status_code == 200
    assert post_binary(client, first).status_code == 200
    read = client.get(f"/dialogs/{dialog['id']}").json()
    assert [m["content"] for m in read["messages"]] == ["one", "1", "two", "2"]
    assert [m["turn_id"] for m in read["messages"]] == [first["turn_id"]] * 2 + [
        second["turn_id"]
    ] * 2
    assert read["message_count"] == 4
    assert read["updated_at"] == second["assistant_at"].replace("+00:00", "Z")


def test_user_comes_before_assistant_even_at_the_same_instant(
    client: httpx.Client, dialog: dict
) -> None:
    turn = make_turn(dialog, status="error", assistant_content="", assistant_reasoning=None)
    turn["assistant_at"] = turn["user_at"]
    assert post_plain(client, turn).status_code == 200
    roles = [m["role"] for m in client.get(f"/dialogs/{dialog['id']}").json()["messages"]]
    assert roles == ["user", "assistant"]


def test_an_interrupted_turn_keeps_its_partial_answer_and_error(
    client: httpx.Client, dialog: dict, database: Database
) -> None:
    turn = make_turn(
        dialog,
        status="cancelled",
        assistant_content="It is on",
        error={"code": "cancelled", "message": "The client went away."},
        finish_reason=None,
    )
    assert post_binary(client, turn).status_code == 200
    messages = stored(database, turn)
    assert messages["user"]["status"] == "ok"
    assert messages["assistant"]["status"] == "cancelled"
    assert messages["assistant"]["content"] == "It is on"
    assert messages["assistant"]["run"]["error"]["code"] == "cancelled"
    assert messages["assistant"]["run"]["model"] == "deepseek-v4-flash"


def test_a_turn_for_a_missing_dialog_is_acknowledged_and_not_written(
    client: httpx.Client, project: dict, database: Database
) -> None:
    for dialog_id in ("6b0731e5942f52642075caa9", "not-an-object-id"):
        turn = make_turn({"id": dialog_id, "project_id": project["id"]})
        response = post_binary(client, turn)
        assert response.status_code == 200
        assert response.json()["written"] is False
        assert response.json()["reason"] == "dialog_not_found"
    assert database.messages.count_documents({}) == 0


def test_a_turn_naming_another_project_than_its_dialogs_is_not_written(
    client: httpx.Client, dialog: dict, database: Database
) -> None:
    other = client.post("/projects", json={"name": "other"}).json()
    response = post_binary(client, make_turn(dialog, project_id=other["id"]))
    assert response.status_code == 200
    assert (response.json()["written"], response.json()["reason"]) == (False, "dialog_not_found")
    assert database.messages.count_documents({}) == 0
    assert client.get(f"/dialogs/{dialog['id']}").json()["message_count"] == 0


@pytest.mark.parametrize("deliver", [post_binary, post_structured, post_plain])
def test_an_unsigned_or_forged_turn_is_refused_with_a_401(
    client: httpx.Client,
    dialog: dict,
    database: Database,
    caplog: pytest.LogCaptureFixture,
    deliver: Callable[..., httpx.Response],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    turn = make_turn(dialog)
    forged = deliver(client, turn, [SecretStr("a-key-that-is-not-ours")])
    unsigned = client.post(WRITER, json=turn)
    for refused, code in ((forged, "invalid_signature"), (unsigned, "unsigned_event")):
        assert (refused.status_code, refused.json()["error"]["code"]) == (401, code)
    with pytest.raises(NoSigningKey):
        deliver(client, turn, [])
    assert database.messages.count_documents({}) == 0
    assert "a-key-that-is-not-ours" not in caplog.text
    # While the key rotates, events signed with the old one are still taken.
    configure(monkeypatch, EVENT_SIGNING_KEY=f"a-new-key,{TEST_SIGNING_KEY}")
    assert deliver(client, turn, [SecretStr(TEST_SIGNING_KEY)]).json()["written"] is True


@pytest.mark.parametrize("bad", ["é" * 64, "f" * 63, "F" * 64, "x"])
def test_a_signature_that_is_not_one_of_ours_is_a_401_not_a_crash(
    client: httpx.Client, dialog: dict, bad: str
) -> None:
    turn = make_turn(dialog)
    structured = {"specversion": "1.0", "id": "x", "signature": bad, "data": turn}
    refused = client.post(
        WRITER,
        content=json.dumps(structured),
        headers={"Content-Type": "application/cloudevents+json"},
    )
    assert (refused.status_code, refused.json()["error"]["code"]) == (401, "invalid_signature")


def test_a_writer_without_a_signing_key_answers_503_so_the_queue_keeps_the_turn(
    client: httpx.Client, dialog: dict, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    turn = make_turn(dialog)
    signed = signature(turn)
    configure(monkeypatch, EVENT_SIGNING_KEY="")
    response = client.post(WRITER, json=turn, headers={"ce-signature": signed})
    assert (response.status_code, response.json()["error"]["code"]) == (
        503,
        "signing_not_configured",
    )
    assert database.messages.count_documents({}) == 0


def test_a_deleted_dialog_gets_no_more_messages(
    client: httpx.Client, dialog: dict, database: Database
) -> None:
    assert client.delete(f"/dialogs/{dialog['id']}").status_code == 204
    response = post_structured(client, make_turn(dialog))
    assert response.json()["written"] is False
    assert database.messages.count_documents({}) == 0


def test_turns_finishing_together_are_written_once_each_in_one_batch(
    client: httpx.Client, project: dict, dialog: dict, database: Database
) -> None:
    """What the local queue does when many streams end at once: every turn goes through the
    same batched write, whatever else is in the batch."""
    other = create_dialog(client, project, title="Shipping")
    gone = create_dialog(client, project, title="Deleted")
    assert client.delete(f"/dialogs/{gone['id']}").status_code == 204
    already = make_turn(dialog, after_s=0)
    assert post_plain(client, already).json()["duplicate"] is False
    newest_first = [make_turn(dialog, after_s=5 - index) for index in range(5)]
    elsewhere = [make_turn(other, after_s=index) for index in range(3)]
    turns = [
        *newest_first,
        *elsewhere,
        already,
        elsewhere[0],  # delivered twice into the same batch
        make_turn(gone),
        make_turn({"id": "not-an-object-id", "project_id": project["id"]}),
    ]
    events = [TurnEvent.model_validate(turn) for turn in turns]

    async def write_all() -> list[TurnWritten]:
        return await asyncio.gather(*(consume_turn(event) for event in events))

    results = asyncio.run(write_all())
    assert [result.turn_id for result in results] == [turn["turn_id"] for turn in turns]
    assert [(result.written, result.duplicate) for result in results] == [
        *[(True, False)] * 8,
        (True, True),
        (True, True),
        (False, False),
        (False, False),
    ]
    assert {result.reason for result in results[-2:]} == {"dialog_not_found"}
    assert database.messages.count_documents({"dialog_id": ObjectId(gone["id"])}) == 0
    first = client.get(f"/dialogs/{dialog['id']}").json()
    assert first["message_count"] == 12
    contents = [message["turn_id"] for message in first["messages"]]
    assert contents == [already["turn_id"]] * 2 + [
        turn["turn_id"] for turn in reversed(newest_first) for _ in range(2)
    ]
    assert first["updated_at"] == newest_first[0]["assistant_at"].replace("+00:00", "Z")
    assert client.get(f"/dialogs/{other['id']}").json()["message_count"] == 6


@pytest.mark.parametrize(
    ("content", "content_type", "status"),
    [
        (b'{"turn_id": ', "application/json", 400),
        (b"turn", "text/plain", 415),
        (b"", "application/json", 422),
        (b'{"turn_id": "t1"}', "application/json", 422),
        (b"[1, 2]", "application/json", 422),
        (b'{"specversion": "1.0", "id": "x"}', "application/cloudevents+json", 422),
        (b'{"specversion": "1.0", "data_base64": "%%%"}', "application/cloudevents+json", 422),
        (b'"just a string"', "application/cloudevents+json", 422),
        (b"[]", "application/cloudevents-batch+json", 415),
    ],
)
def test_a_malformed_event_is_refused_with_a_4xx_and_logged(
    client: httpx.Client,
    database: Database,
    caplog: pytest.LogCaptureFixture,
    content: bytes,
    content_type: str,
    status: int,
) -> None:
    headers = {"Content-Type": content_type}
    if content_type == "application/json" and content:
        with contextlib.suppress(ValueError):
            # Signed, so what is refused is the event itself, not a missing signature.
            headers["ce-signature"] = sign_data(json.loads(content), [SecretStr(TEST_SIGNING_KEY)])
    response = client.post(WRITER, content=content, headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["code"]
    assert "refused an event" in caplog.text
    assert database.messages.count_documents({}) == 0


def test_an_invalid_turn_names_the_failing_fields(client: httpx.Client, dialog: dict) -> None:
    turn = make_turn(dialog)
    turn.update(turn_id="has spaces", status="finished")
    del turn["user_at"]
    response = client.post(
        WRITER, json=turn, headers={"ce-signature": sign_data(turn, [SecretStr(TEST_SIGNING_KEY)])}
    )
    assert response.status_code == 422
    failing = {tuple(item["loc"]) for item in response.json()["error"]["details"]}
    assert failing == {("body", "turn_id"), ("body", "status"), ("body", "user_at")}


def test_an_unreachable_database_is_a_503_so_the_queue_retries(
    client: httpx.Client, dialog: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    turn = make_turn(dialog)
    configure(
        monkeypatch,
        MONGODB_URI=f"mongodb://127.0.0.1:{free_port()}/?directConnection=true",
        MONGODB_TIMEOUT_MS="300",
    )
    response = post_binary(client, turn)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "database_unavailable"


def test_the_writer_answers_health_and_readiness(client: httpx.Client) -> None:
    assert client.get(f"{WRITER}/healthz").json() == {"status": "ok"}
    assert client.get(f"{WRITER}/readyz").json() == {"status": "ready"}
    assert client.get(WRITER).status_code == 405
