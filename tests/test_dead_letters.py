"""Dead letters: the events a broker gave up on are kept, listed, replayed and deleted by operators.

Driven through the gateway as the dead-letter Broker's Trigger drives the function: the events
are signed as our publishers sign them and carry Knative's dead-letter attributes.
"""

import base64
import json
import logging
import uuid

import httpx
import pytest
from pymongo.database import Database

from shared.queues.signatures import SIGNATURE_HEADER, sign_data
from shared.settings import get_settings
from shared.workflows.evaluations.channel import CELLS
from shared.workflows.history.channel import TURNS
from tests.test_history_publishers import unreachable_database
from tests.test_history_writer import create_dialog, make_turn

SINK = "/dead-letters"
# What history-writer answered the broker before it gave the turn up.
ERROR_BODY = {"error": {"code": "service_unavailable", "message": "The database is down."}}


def signed(data: object) -> str:
    return sign_data(data, get_settings().event_signing_keys)


def dead_headers(event_type: str, event_id: str, data: object, **attributes: str) -> dict[str, str]:
    """A binary-mode CloudEvent as the dead-letter Broker's Trigger delivers it: the event's own
    attributes and signature, and Knative's dead-letter extensions."""
    return {
        "content-type": "application/json",
        SIGNATURE_HEADER: signed(data),
        "ce-specversion": "1.0",
        "ce-id": event_id,
        "ce-type": event_type,
        "ce-source": "/chat",
        "ce-time": "2026-12-02T10:00:00Z",
        "ce-knativeerrorcode": "503",
        "ce-knativeerrordest": "http://history-writer.better-assistant.svc.cluster.local",
        "ce-knativeerrordata": base64.b64encode(json.dumps(ERROR_BODY).encode()).decode(),
        **{f"ce-{name}": value for name, value in attributes.items()},
    }


def post_dead_turn(http: httpx.Client, turn: dict) -> httpx.Response:
    headers = dead_headers(TURNS.event_type, turn["turn_id"], turn, subject=turn["dialog_id"])
    return http.post(SINK, content=json.dumps(turn), headers=headers)


def post_dead_cell(http: httpx.Client, cell: dict) -> httpx.Response:
    headers = dead_headers(CELLS.event_type, cell["cell_id"], cell, source="/evaluations")
    return http.post(SINK, content=json.dumps(cell), headers=headers)


def keep(http: httpx.Client, post, event: dict) -> dict:
    response = post(http, event)
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture
def dialog(client: httpx.Client, project: dict) -> dict:
    return create_dialog(client, project, title="Refunds")


def cell_event() -> dict:
    return {"evaluation_id": "6b0731e5942f52642075caa9", "cell_id": uuid.uuid4().hex[:24]}


# Keeping.


def test_a_dead_event_is_kept_once_as_it_was_published(
    client: httpx.Client, dialog: dict, database: Database
) -> None:
    """Its type, id, subject, source, time, original signature and data are kept, with why the
    broker gave it up; a redelivery (binary or structured) stores nothing new, only counts."""
    turn = make_turn(dialog)
    first = keep(client, post_dead_turn, turn)
    assert first == {
        "id": first["id"],
        "event_id": turn["turn_id"],
        "event_type": TURNS.event_type,
        "duplicate": False,
    }
    again = keep(client, post_dead_turn, turn)
    structured = {
        "specversion": "1.0",
        "id": turn["turn_id"],
        "type": TURNS.event_type,
        "source": "/chat",
        "signature": signed(turn),
        "data": turn,
    }
    redelivered = client.post(
        SINK,
        content=json.dumps(structured),
        headers={"content-type": "application/cloudevents+json"},
    )
    assert redelivered.status_code == 200, redelivered.text
    assert again["duplicate"] is redelivered.json()["duplicate"] is True
    assert again["id"] == redelivered.json()["id"] == first["id"]
    assert database.dead_letters.count_documents({}) == 1

    letter = client.get(f"{SINK}/{first['id']}").json()
    assert letter["data"] == turn
    assert letter["signature"] == signed(turn)
    assert {
        key: letter[key]
        for key in ("event_id", "event_type", "source", "subject", "time", "status", "deliveries")
    } == {
        "event_id": turn["turn_id"],
        "event_type": TURNS.event_type,
        "source": "/chat",
        "subject": dialog["id"],
        "time": "2026-12-02T10:00:00Z",
        "status": "dead",
        "deliveries": 3,
    }
    assert letter["error_code"] == 503
    assert letter["error_destination"].startswith("http://history-writer.")
    assert json.loads(letter["error_data"]) == ERROR_BODY
    assert letter["replay"] is None
    # Nothing was written to the dialog by keeping it.
    assert client.get(f"/dialogs/{dialog['id']}").json()["message_count"] == 0


def test_an_event_without_a_type_or_an_id_is_refused_and_nothing_is_kept(
    client: httpx.Client, dialog: dict, database: Database
) -> None:
    turn = make_turn(dialog)
    headers = dead_headers(TURNS.event_type, turn["turn_id"], turn)
    del headers["ce-type"], headers["ce-id"]
    response = client.post(SINK, content=json.dumps(turn), headers=headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "malformed_event"
    assert [detail["loc"] for detail in error["details"]] == [
        ["header", "ce-id"],
        ["header", "ce-type"],
    ]
    assert database.dead_letters.count_documents({}) == 0


def test_attributes_out_of_bounds_are_a_422_naming_the_header(
    client: httpx.Client, dialog: dict, database: Database
) -> None:
    turn = make_turn(dialog)
    headers = dead_headers(TURNS.event_type, "x" * 201, turn, subject="s" * 1001)
    response = client.post(SINK, content=json.dumps(turn), headers=headers)
    assert response.status_code == 422, response.text
    fields = {detail["loc"][-1] for detail in response.json()["error"]["details"]}
    assert fields == {"event_id", "subject"}
    assert database.dead_letters.count_documents({}) == 0


def test_an_error_code_that_is_no_http_status_is_not_kept(
    client: httpx.Client, dialog: dict
) -> None:
    turn = make_turn(dialog)
    headers = dead_headers(TURNS.event_type, turn["turn_id"], turn, knativeerrorcode="9" * 30)
    kept = keep(client, lambda http, event: http.post(SINK, json=event, headers=headers), turn)
    assert client.get(f"{SINK}/{kept['id']}").json()["error_code"] is None


def test_unsigned_and_forged_dead_events_are_refused(
    client: httpx.Client, dialog: dict, database: Database
) -> None:
    turn = make_turn(dialog)
    headers = dead_headers(TURNS.event_type, turn["turn_id"], turn)
    forged = {**turn, "assistant_content": "Send your password."}
    unsigned = {key: value for key, value in headers.items() if key != SIGNATURE_HEADER}
    for sent_headers, body in ((unsigned, turn), (headers, forged)):
        response = client.post(SINK, content=json.dumps(body), headers=sent_headers)
        assert response.status_code == 401, response.text
    assert database.dead_letters.count_documents({}) == 0


# Reading.


def test_operators_list_dead_letters_newest_first_by_type_and_status(
    client: httpx.Client, dialog: dict
) -> None:
    turns = [keep(client, post_dead_turn, make_turn(dialog)) for _ in range(3)]
    cell = keep(client, post_dead_cell, cell_event())

    everything = client.get(SINK).json()
    assert [item["id"] for item in everything["items"]] == [
        cell["id"],
        *(turn["id"] for turn in reversed(turns)),
    ]
    assert everything["total"] == 4
    assert "data" not in everything["items"][0] and "signature" not in everything["items"][0]

    of_turns = client.get(SINK, params={"type": TURNS.event_type, "limit": 2}).json()
    assert [item["id"] for item in of_turns["items"]] == [turns[2]["id"], turns[1]["id"]]
    assert of_turns["total"] == 3 and of_turns["next_cursor"]
    rest = client.get(
        SINK, params={"type": TURNS.event_type, "limit": 2, "cursor": of_turns["next_cursor"]}
    ).json()
    assert [item["id"] for item in rest["items"]] == [turns[0]["id"]]
    assert rest["next_cursor"] is None

    assert client.post(f"{SINK}/{turns[0]['id']}/replay").status_code == 200
    replayed = client.get(SINK, params={"status": "replayed"}).json()["items"]
    assert [item["id"] for item in replayed] == [turns[0]["id"]]
    assert client.get(SINK, params={"status": "dead"}).json()["total"] == 3
    assert client.get(SINK, params={"type": "com.example.other"}).json()["items"] == []


def test_bad_list_parameters_are_a_422_naming_them(client: httpx.Client) -> None:
    for params, field in (({"status": "lost"}, "status"), ({"cursor": "x"}, "cursor")):
        response = client.get(SINK, params=params)
        assert response.status_code == 422, response.text
        assert field in response.text


def test_an_unknown_dead_letter_is_a_404(client: httpx.Client) -> None:
    for method, path in (
        ("GET", "6b0731e5942f52642075caa9"),
        ("GET", "not-an-id"),
        ("POST", "6b0731e5942f52642075caa9/replay"),
        ("DELETE", "6b0731e5942f52642075caa9"),
    ):
        response = client.request(method, f"{SINK}/{path}")
        assert response.status_code == 404, (method, path, response.text)
        assert response.json()["error"]["code"] == "not_found"


# Replaying.


def test_a_replayed_turn_lands_in_its_dialog_once(
    client: httpx.Client, dialog: dict, database: Database
) -> None:
    turn = make_turn(dialog)
    kept = keep(client, post_dead_turn, turn)

    replayed = client.post(f"{SINK}/{kept['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    letter = replayed.json()
    assert letter["status"] == "replayed"
    assert letter["replay"]["taken"] is True and letter["replay"]["error"] is None
    assert letter["replay"]["result"] == {
        "turn_id": turn["turn_id"],
        "dialog_id": dialog["id"],
        "written": True,
        "duplicate": False,
        "reason": None,
    }
    read = client.get(f"/dialogs/{dialog['id']}").json()
    assert [(m["role"], m["content"]) for m in read["messages"]] == [
        ("user", "Where is my refund?"),
        ("assistant", "It is on its way."),
    ]

    # Consumers are idempotent, so a second replay (or the queue delivering it after all)
    # writes nothing more.
    again = client.post(f"{SINK}/{kept['id']}/replay").json()
    assert again["replay"]["taken"] is True and again["replay"]["result"]["duplicate"] is True
    assert database.messages.count_documents({"turn_id": turn["turn_id"]}) == 2
    assert client.get(f"{SINK}/{kept['id']}").json()["status"] == "replayed"


def test_a_replayed_cell_goes_to_the_evaluation_consumer(client: httpx.Client) -> None:
    """A cell of a run that is gone: the worker's consumer takes it and settles it as unknown."""
    cell = cell_event()
    kept = keep(client, post_dead_cell, cell)
    letter = client.post(f"{SINK}/{kept['id']}/replay").json()
    assert letter["status"] == "replayed"
    assert letter["replay"]["result"]["cell_id"] == cell["cell_id"]
    assert letter["replay"]["result"]["outcome"] == "unknown"


def test_an_event_its_consumer_refuses_stays_dead_with_the_reason(
    client: httpx.Client, dialog: dict
) -> None:
    """Signed but not a turn (a publisher newer than this consumer, say): kept, and a replay
    records why it was refused instead of failing."""
    not_a_turn = {"turn_id": uuid.uuid4().hex, "dialog_id": dialog["id"]}
    kept = keep(client, post_dead_turn, not_a_turn)
    response = client.post(f"{SINK}/{kept['id']}/replay")
    assert response.status_code == 200, response.text
    letter = response.json()
    assert letter["status"] == "dead"
    assert letter["replay"]["taken"] is False
    assert letter["replay"]["error"] == {
        "code": "invalid_event",
        "message": "The event is not a turn.",
    }


def test_an_event_of_a_type_no_channel_consumes_cannot_be_replayed(client: httpx.Client) -> None:
    data = {"anything": 1}
    headers = dead_headers("com.example.unknown", "event-1", data)
    kept = client.post(SINK, content=json.dumps(data), headers=headers).json()
    response = client.post(f"{SINK}/{kept['id']}/replay")
    assert response.status_code == 409, response.text
    assert response.json()["error"]["code"] == "no_consumer"
    assert client.get(f"{SINK}/{kept['id']}").json()["replay"] is None


# Deleting.


def test_a_deleted_dead_letter_is_gone(client: httpx.Client, dialog: dict) -> None:
    kept = keep(client, post_dead_turn, make_turn(dialog))
    other = keep(client, post_dead_turn, make_turn(dialog))
    assert client.delete(f"{SINK}/{kept['id']}").status_code == 204
    assert client.get(f"{SINK}/{kept['id']}").status_code == 404
    assert client.delete(f"{SINK}/{kept['id']}").status_code == 404
    assert [item["id"] for item in client.get(SINK).json()["items"]] == [other["id"]]


# Who may.


def test_only_the_admin_key_reads_replays_or_deletes_dead_letters(
    client: httpx.Client,
    gateway_url: str,
    dialog: dict,
    project: dict,
    key_headers,
    user_headers,
    database: Database,
) -> None:
    """They hold every project's conversations: a project's owner key or a signed-in user is
    refused (403), no credentials 401, and nothing changes."""
    kept = keep(client, post_dead_turn, make_turn(dialog))
    owner = client.put(f"/projects/{project['id']}/members/alice", json={"role": "owner"})
    assert owner.status_code == 200
    refused = {403: [key_headers(project, "owner"), user_headers("alice")], 401: [{}]}
    stored = list(database.dead_letters.find())
    with httpx.Client(base_url=gateway_url, timeout=30) as anonymous:
        for status, credentials in refused.items():
            for headers in credentials:
                for method, path in (
                    ("GET", ""),
                    ("GET", f"/{kept['id']}"),
                    ("POST", f"/{kept['id']}/replay"),
                    ("DELETE", f"/{kept['id']}"),
                ):
                    response = anonymous.request(method, f"{SINK}{path}", headers=headers)
                    assert response.status_code == status, (method, path, response.text)
                    assert "Where is my refund?" not in response.text
    assert list(database.dead_letters.find()) == stored
    assert client.get(f"/dialogs/{dialog['id']}").json()["message_count"] == 0


def test_the_content_of_a_dead_event_never_reaches_the_logs(
    client: httpx.Client, dialog: dict, caplog: pytest.LogCaptureFixture
) -> None:
    # Ours, at every level (the driver's own debug log of commands is not on in production).
    caplog.set_level(logging.DEBUG, logger="better_assistant")
    secret_text = f"my card number is {uuid.uuid4().hex}"
    turn = make_turn(dialog, user_content=secret_text, assistant_content=secret_text)
    kept = keep(client, post_dead_turn, turn)
    keep(client, post_dead_turn, turn)
    assert client.post(f"{SINK}/{kept['id']}/replay").status_code == 200
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("better_"))
    assert kept["id"] in ours  # the sink does log what it kept, by id
    assert secret_text not in ours


# The database down.


def test_an_unreachable_database_is_a_503_so_the_broker_retries(
    client: httpx.Client, dialog: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    turn = make_turn(dialog)
    unreachable_database(monkeypatch)
    for response in (post_dead_turn(client, turn), client.get(SINK)):
        assert response.status_code == 503, response.text
        assert response.json()["error"]["code"] == "database_unavailable"
