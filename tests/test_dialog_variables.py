"""A dialog keeps its template variables, and a chat prompt's messages open the conversation once:
every turn sends the opening, the history, then the turn, with nothing repeated or stale."""

import httpx
import pytest
from pymongo.database import Database

from devtools.fake_deepseek import FakeDeepSeek, Scenario
from tests.test_chat import chat, wait_for_turn


def sent_messages(fake_deepseek: FakeDeepSeek) -> list[dict]:
    return fake_deepseek.chat_requests()[-1].body["messages"]


def turn(client: httpx.Client, database: Database, **body: object) -> dict:
    """One chat turn, once the history writer has stored it; its `meta` event."""
    events = chat(client, **body)
    assert events[-1][0] == "done", events[-1]
    meta = events[0][1]
    wait_for_turn(database, meta["turn_id"])
    return meta


@pytest.fixture
def persona_prompt(make_prompt) -> dict:
    return make_prompt(
        type="chat",
        template=None,
        messages=[{"role": "system", "content": "You are {{persona}} for {{company}}."}],
    )


def test_follow_up_turns_use_the_variables_the_dialog_kept(
    client: httpx.Client,
    project: dict,
    persona_prompt: dict,
    database: Database,
    fake_deepseek: FakeDeepSeek,
) -> None:
    fake_deepseek.default_scenario = Scenario(reply="ok")
    meta = turn(
        client,
        database,
        project_id=project["id"],
        prompt_id=persona_prompt["id"],
        input="Hello",
        variables={"persona": "a courier", "company": "Acme"},
    )
    dialog_id = meta["dialog_id"]
    assert client.get(f"/dialogs/{dialog_id}").json()["variables"] == {
        "persona": "a courier",
        "company": "Acme",
    }

    turn(client, database, dialog_id=dialog_id, input="Where is it?")
    assert sent_messages(fake_deepseek)[0]["content"] == "You are a courier for Acme."

    # A turn's variables are merged over the dialog's and kept for the next turns...
    turn(client, database, dialog_id=dialog_id, input="And now?", variables={"persona": "a pilot"})
    assert sent_messages(fake_deepseek)[0]["content"] == "You are a pilot for Acme."
    turn(client, database, dialog_id=dialog_id, input="Still?")
    assert sent_messages(fake_deepseek)[0]["content"] == "You are a pilot for Acme."

    # ...unless the turn says they are for it alone.
    turn(
        client,
        database,
        dialog_id=dialog_id,
        input="Once",
        variables={"company": "Globex"},
        save_variables=False,
    )
    assert sent_messages(fake_deepseek)[0]["content"] == "You are a pilot for Globex."
    assert client.get(f"/dialogs/{dialog_id}").json()["variables"]["company"] == "Acme"


def test_dialogs_are_created_and_updated_with_variables(
    client: httpx.Client,
    project: dict,
    persona_prompt: dict,
    database: Database,
    fake_deepseek: FakeDeepSeek,
) -> None:
    created = client.post(
        "/dialogs",
        json={
            "project_id": project["id"],
            "prompt_id": persona_prompt["id"],
            "variables": {"persona": "a clerk", "company": "Initech"},
        },
    )
    assert created.status_code == 201
    dialog = created.json()
    assert dialog["variables"] == {"persona": "a clerk", "company": "Initech"}
    turn(client, database, dialog_id=dialog["id"], input="Hi")
    assert sent_messages(fake_deepseek)[0]["content"] == "You are a clerk for Initech."

    # PUT replaces the whole set: a variable left out is gone.
    updated = client.put(f"/dialogs/{dialog['id']}", json={"variables": {"persona": "a judge"}})
    assert updated.json()["variables"] == {"persona": "a judge"}
    refused = client.post("/chat", json={"dialog_id": dialog["id"], "input": "Hi again"})
    assert refused.status_code == 422
    assert refused.json()["error"]["details"] == {"missing": ["company"]}
    assert client.put(f"/dialogs/{dialog['id']}", json={"title": "x"}).json()["variables"] == {
        "persona": "a judge"
    }


@pytest.mark.parametrize(
    "variables",
    [{"$where": "1"}, {"a.b": 1}, {"ok": {"$gt": ""}}, {"1st": "x"}, ["not", "an", "object"]],
)
def test_unsafe_variables_are_refused_and_change_nothing(
    client: httpx.Client, project: dict, database: Database, variables: object
) -> None:
    created = client.post("/dialogs", json={"project_id": project["id"], "variables": variables})
    assert created.status_code == 422
    dialog = client.post("/dialogs", json={"project_id": project["id"]}).json()
    updated = client.put(f"/dialogs/{dialog['id']}", json={"variables": variables})
    assert updated.status_code == 422
    assert database.dialogs.count_documents({}) == 1
    assert client.get(f"/dialogs/{dialog['id']}").json()["variables"] == {}


def test_a_turn_refused_for_missing_variables_saves_none_of_its_variables(
    client: httpx.Client, project: dict, persona_prompt: dict, database: Database
) -> None:
    dialog = client.post(
        "/dialogs", json={"project_id": project["id"], "prompt_id": persona_prompt["id"]}
    ).json()
    refused = client.post(
        "/chat", json={"dialog_id": dialog["id"], "input": "Hi", "variables": {"persona": "x"}}
    )
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "missing_variables"
    assert client.get(f"/dialogs/{dialog['id']}").json()["variables"] == {}
    assert database.messages.count_documents({}) == 0


FEW_SHOT_OPENING = [
    {"role": "system", "content": "You answer for {{company}}."},
    {"role": "user", "content": "Example: where is order 1?"},
    {"role": "assistant", "content": "Order 1 ships today."},
]
FEW_SHOT_SENT = [
    {"role": "system", "content": "You answer for Acme."},
    *FEW_SHOT_OPENING[1:],
]
ACCOUNT_OPENING = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "My account is {{company}}."},
]
ACCOUNT_SENT = [ACCOUNT_OPENING[0], {"role": "user", "content": "My account is Acme."}]
FIRST, SECOND = "Where is order 7?", "And order 8?"
EARLIER_TURN = [{"role": "user", "content": FIRST}, {"role": "assistant", "content": "Noted."}]


@pytest.mark.parametrize(
    ("messages", "first_turn", "second_turn"),
    [
        pytest.param(
            [*FEW_SHOT_OPENING, {"role": "user", "content": "Customer asks: {{input}}"}],
            [*FEW_SHOT_SENT, {"role": "user", "content": f"Customer asks: {FIRST}"}],
            [
                *FEW_SHOT_SENT,
                *EARLIER_TURN,
                {"role": "user", "content": f"Customer asks: {SECOND}"},
            ],
            id="the input fills its message once, after the history",
        ),
        pytest.param(
            ACCOUNT_OPENING,
            [*ACCOUNT_SENT, {"role": "user", "content": FIRST}],
            [*ACCOUNT_SENT, *EARLIER_TURN, {"role": "user", "content": SECOND}],
            id="a message without the input opens the dialog once",
        ),
    ],
)
def test_the_prompts_messages_open_the_dialog_and_each_turn_comes_last(
    client: httpx.Client,
    project: dict,
    make_prompt,
    database: Database,
    fake_deepseek: FakeDeepSeek,
    messages: list[dict],
    first_turn: list[dict],
    second_turn: list[dict],
) -> None:
    fake_deepseek.default_scenario = Scenario(reply="Noted.")
    prompt = make_prompt(type="chat", template=None, messages=messages)
    meta = turn(
        client,
        database,
        project_id=project["id"],
        prompt_id=prompt["id"],
        input=FIRST,
        variables={"company": "Acme"},
    )
    assert sent_messages(fake_deepseek) == first_turn
    turn(client, database, dialog_id=meta["dialog_id"], input=SECOND)
    assert sent_messages(fake_deepseek) == second_turn


def test_a_dialog_keeps_a_bounded_set_of_variables(
    client: httpx.Client, project: dict, database: Database, fake_deepseek: FakeDeepSeek
) -> None:
    too_large = client.post(
        "/dialogs", json={"project_id": project["id"], "variables": {"a": "x" * 600_000}}
    )
    assert too_large.status_code == 422
    assert too_large.json()["error"]["code"] == "variables_too_large"
    dialog = client.post(
        "/dialogs", json={"project_id": project["id"], "variables": {"a": "x" * 300_000}}
    ).json()
    growing = {"dialog_id": dialog["id"], "input": "Hi", "variables": {"b": "y" * 300_000}}
    refused = client.post("/chat", json=growing)
    assert refused.status_code == 422
    assert refused.json()["error"]["details"]["limit_bytes"] == 512 * 1024
    assert fake_deepseek.chat_requests() == []
    assert list(client.get(f"/dialogs/{dialog['id']}").json()["variables"]) == ["a"]
    # Large values for one turn alone are fine.
    turn(client, database, **growing, save_variables=False)
    replaced = client.put(f"/dialogs/{dialog['id']}", json={"variables": {"c": "z" * 600_000}})
    assert replaced.status_code == 422
