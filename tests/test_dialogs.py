"""Dialogs through the gateway: create, bind to prompts, list by activity, read messages, delete."""

import httpx
import pytest
from pymongo.database import Database

from shared.dialogs.service import DialogService
from shared.errors import NotFound
from shared.projects.service import ProjectService
from shared.prompts.service import PromptService
from tests.test_history_writer import create_dialog, make_turn, post_plain

MISSING_ID = "6b0731e5942f52642075caa9"


def write_turns(client: httpx.Client, dialog: dict, count: int) -> list[dict]:
    """`count` turns, one second apart, written through the history writer."""
    turns = [
        make_turn(
            dialog, after_s=index + 1, user_content=f"q{index}", assistant_content=f"a{index}"
        )
        for index in range(count)
    ]
    for turn in turns:
        assert post_plain(client, turn).json()["written"] is True
    return turns


def test_create_renders_the_contract(client: httpx.Client, project: dict) -> None:
    response = client.post("/dialogs", json={"project_id": project["id"], "title": " Refunds "})
    assert response.status_code == 201
    dialog = response.json()
    assert set(dialog) == {
        "id",
        "project_id",
        "prompt_id",
        "version",
        "label",
        "title",
        "variables",
        "message_count",
        "created_at",
        "updated_at",
    }
    assert dialog["project_id"] == project["id"]
    assert (dialog["prompt_id"], dialog["version"], dialog["label"]) == (None, None, None)
    assert dialog["title"] == "Refunds"
    assert dialog["message_count"] == 0
    assert dialog["created_at"] == dialog["updated_at"]
    assert client.get(f"/dialogs/{dialog['id']}").json() == {
        **dialog,
        "messages": [],
        "next_cursor": None,
    }


def test_create_bound_to_a_prompt_at_a_version_or_label(
    client: httpx.Client, project: dict, make_prompt
) -> None:
    prompt = make_prompt(labels=["production"])
    client.put(f"/prompts/{prompt['id']}", json={"template": "v2 {{question}}"})
    for binding in ({}, {"version": 2}, {"label": "production"}, {"label": "latest"}):
        dialog = create_dialog(client, project, prompt_id=prompt["id"], **binding)
        assert dialog["prompt_id"] == prompt["id"]
        assert dialog["version"] == binding.get("version")
        assert dialog["label"] == binding.get("label")


@pytest.mark.parametrize(
    ("binding", "status", "code"),
    [
        ({"version": 3}, 404, "not_found"),
        ({"label": "staging"}, 404, "not_found"),
        ({"version": 1, "label": "production"}, 422, "validation_failed"),
        ({"version": 0}, 422, "validation_failed"),
        ({"label": "no spaces"}, 422, "validation_failed"),
    ],
)
def test_a_bound_version_or_label_must_exist(
    client: httpx.Client, project: dict, make_prompt, binding: dict, status: int, code: str
) -> None:
    prompt = make_prompt(labels=["production"])
    response = client.post(
        "/dialogs", json={"project_id": project["id"], "prompt_id": prompt["id"], **binding}
    )
    assert response.status_code == status
    assert response.json()["error"]["code"] == code


def test_a_bound_prompt_must_exist_in_the_same_project(
    client: httpx.Client, project: dict, make_prompt, database: Database
) -> None:
    unknown = client.post("/dialogs", json={"project_id": project["id"], "prompt_id": MISSING_ID})
    assert unknown.status_code == 404
    assert unknown.json()["error"]["details"]["kind"] == "prompt"
    other_project = client.post("/projects", json={"name": "Other"}).json()
    prompt_id = make_prompt()["id"]
    elsewhere = client.post(
        "/dialogs", json={"project_id": other_project["id"], "prompt_id": prompt_id}
    )
    # Exactly as a missing prompt: the other project's prompt is not revealed.
    assert elsewhere.status_code == 404
    assert elsewhere.text == unknown.text.replace(MISSING_ID, prompt_id)
    assert database.dialogs.count_documents({}) == 0


def test_a_version_or_label_needs_a_prompt(client: httpx.Client, project: dict) -> None:
    response = client.post("/dialogs", json={"project_id": project["id"], "version": 1})
    assert response.status_code == 422


@pytest.mark.parametrize("project_id", [MISSING_ID, "not-an-id"])
def test_create_in_a_missing_project_is_404(client: httpx.Client, project_id: str) -> None:
    response = client.post("/dialogs", json={"project_id": project_id})
    assert response.status_code == 404
    assert response.json()["error"]["details"]["kind"] == "project"


@pytest.mark.parametrize(
    "body",
    [
        {"title": "x" * 101},
        {"title": ""},
        {"owner": "me"},
        {"title": {"$ne": ""}},
    ],
)
def test_invalid_bodies_are_422(client: httpx.Client, project: dict, body: dict) -> None:
    response = client.post("/dialogs", json={"project_id": project["id"], **body})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"][0] == "body"


def test_list_needs_a_project_and_shows_latest_activity_first(
    client: httpx.Client, project: dict
) -> None:
    assert client.get("/dialogs").status_code == 422
    oldest, middle, _ = (create_dialog(client, project, title=t) for t in ("a", "b", "c"))
    listed = client.get("/dialogs", params={"project_id": project["id"]}).json()
    assert [d["title"] for d in listed["items"]] == ["c", "b", "a"]
    assert listed["total"] == 3

    write_turns(client, oldest, 1)
    client.put(f"/dialogs/{middle['id']}", json={"title": "b2"})
    first_page = client.get("/dialogs", params={"project_id": project["id"], "limit": 2}).json()
    assert [d["title"] for d in first_page["items"]] == ["a", "b2"]
    assert first_page["items"][0]["message_count"] == 2
    rest = client.get(
        "/dialogs",
        params={"project_id": project["id"], "limit": 2, "cursor": first_page["next_cursor"]},
    ).json()
    assert [d["title"] for d in rest["items"]] == ["c"]
    assert rest["next_cursor"] is None


def test_list_of_another_or_unknown_project_is_empty(client: httpx.Client, project: dict) -> None:
    create_dialog(client, project)
    other = client.post("/projects", json={"name": "Other"}).json()
    for project_id in (other["id"], MISSING_ID, "not-an-id"):
        listed = client.get("/dialogs", params={"project_id": project_id}).json()
        assert (listed["items"], listed["total"]) == ([], 0)


def test_messages_page_oldest_first(client: httpx.Client, project: dict) -> None:
    dialog = create_dialog(client, project)
    write_turns(client, dialog, 3)
    first = client.get(f"/dialogs/{dialog['id']}", params={"limit": 4}).json()
    assert [m["content"] for m in first["messages"]] == ["q0", "a0", "q1", "a1"]
    assert [m["role"] for m in first["messages"]] == ["user", "assistant"] * 2
    assert first["message_count"] == 6
    second = client.get(
        f"/dialogs/{dialog['id']}", params={"limit": 4, "cursor": first["next_cursor"]}
    ).json()
    assert [m["content"] for m in second["messages"]] == ["q2", "a2"]
    assert second["next_cursor"] is None
    message = second["messages"][1]
    assert set(message) == {
        "id",
        "dialog_id",
        "turn_id",
        "role",
        "content",
        "reasoning",
        "status",
        "created_at",
        "usage",
    }
    assert message["dialog_id"] == dialog["id"]


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 201}, {"cursor": "garbage"}])
def test_bad_message_paging_is_422(client: httpx.Client, project: dict, params: dict) -> None:
    dialog = create_dialog(client, project)
    assert client.get(f"/dialogs/{dialog['id']}", params=params).status_code == 422


def test_recent_messages_are_the_newest_in_time_order(client: httpx.Client, project: dict) -> None:
    dialog = create_dialog(client, project)
    write_turns(client, dialog, 3)
    prompts = PromptService(ProjectService())
    service = DialogService(ProjectService(), prompts)

    def recent(limit: int) -> list[str]:
        found, messages, record = service.get_for_turn(dialog["id"], limit, prompts.prompts)
        assert (found.id, record) == (dialog["id"], None)
        return [message.content for message in messages]

    assert recent(3) == ["a1", "q2", "a2"]
    assert recent(100) == ["q0", "a0", "q1", "a1", "q2", "a2"]
    assert recent(0) == []
    for missing in (MISSING_ID, "not-an-id"):
        with pytest.raises(NotFound):
            service.get_for_turn(missing, 5, prompts.prompts)
    assert service.get(dialog["id"]).message_count == 6


@pytest.mark.parametrize("dialog_id", [MISSING_ID, "not-an-id"])
def test_unknown_dialogs_are_404_on_every_route(client: httpx.Client, dialog_id: str) -> None:
    assert client.get(f"/dialogs/{dialog_id}").status_code == 404
    assert client.put(f"/dialogs/{dialog_id}", json={"title": "x"}).status_code == 404
    assert client.delete(f"/dialogs/{dialog_id}").status_code == 404


def test_update_title_and_binding(client: httpx.Client, project: dict, make_prompt) -> None:
    prompt = make_prompt(labels=["production"])
    client.put(f"/prompts/{prompt['id']}", json={"template": "v2 {{question}}"})
    dialog = create_dialog(client, project, title="Old")

    renamed = client.put(f"/dialogs/{dialog['id']}", json={"title": "New"})
    assert renamed.status_code == 200
    assert renamed.json()["title"] == "New"
    assert renamed.json()["updated_at"] > dialog["updated_at"]

    bound = client.put(
        f"/dialogs/{dialog['id']}", json={"prompt_id": prompt["id"], "label": "production"}
    ).json()
    assert (bound["prompt_id"], bound["version"], bound["label"]) == (
        prompt["id"],
        None,
        "production",
    )
    pinned = client.put(f"/dialogs/{dialog['id']}", json={"version": 2}).json()
    assert (pinned["prompt_id"], pinned["version"], pinned["label"]) == (prompt["id"], 2, None)
    assert client.put(f"/dialogs/{dialog['id']}", json={"version": 3}).status_code == 404

    unbound = client.put(f"/dialogs/{dialog['id']}", json={"prompt_id": None}).json()
    assert (unbound["prompt_id"], unbound["version"], unbound["label"]) == (None, None, None)
    assert unbound["title"] == "New"
    assert client.get(f"/dialogs/{dialog['id']}").json()["prompt_id"] is None


def test_update_refuses_invalid_bindings(client: httpx.Client, project: dict, make_prompt) -> None:
    dialog = create_dialog(client, project)
    assert client.put(f"/dialogs/{dialog['id']}", json={"label": "production"}).status_code == 422
    assert (
        client.put(f"/dialogs/{dialog['id']}", json={"prompt_id": None, "version": 1}).status_code
        == 422
    )
    other = client.post("/projects", json={"name": "Other"}).json()
    foreign = client.post(
        "/prompts",
        json={"project_id": other["id"], "name": "p", "type": "text", "template": "x"},
    ).json()
    refused = client.put(f"/dialogs/{dialog['id']}", json={"prompt_id": foreign["id"]})
    assert refused.status_code == 404
    assert refused.json()["error"]["details"] == {"kind": "prompt", "id": foreign["id"]}
    assert client.put(f"/dialogs/{dialog['id']}", json={"prompt_id": MISSING_ID}).status_code == 404
    assert client.put(f"/dialogs/{dialog['id']}", json={"owner": "me"}).status_code == 422
    assert client.get(f"/dialogs/{dialog['id']}").json()["prompt_id"] is None


def test_a_turn_reads_the_bound_prompt_record_as_it_is_now(
    client: httpx.Client, project: dict, make_prompt
) -> None:
    prompt = make_prompt(labels=["production"])
    dialog = create_dialog(client, project, prompt_id=prompt["id"])
    prompts = PromptService(ProjectService())
    service = DialogService(ProjectService(), prompts)
    _, _, record = service.get_for_turn(dialog["id"], 5, prompts.prompts)
    assert record is not None
    assert (record.id, record.labels["production"]) == (prompt["id"], 1)
    client.put(f"/prompts/{prompt['id']}", json={"template": "v2 {{question}}"})
    client.put(f"/prompts/{prompt['id']}/labels/production", json={"version": 2})
    _, _, moved = service.get_for_turn(dialog["id"], 5, prompts.prompts)
    assert moved is not None and moved.labels["production"] == 2
    assert client.delete(f"/prompts/{prompt['id']}").status_code == 204
    assert service.get_for_turn(dialog["id"], 5, prompts.prompts)[2] is None


def test_delete_removes_the_dialog_and_its_messages(
    client: httpx.Client, project: dict, database: Database
) -> None:
    kept, deleted = create_dialog(client, project), create_dialog(client, project)
    write_turns(client, kept, 1)
    write_turns(client, deleted, 2)
    assert client.delete(f"/dialogs/{deleted['id']}").status_code == 204
    assert client.get(f"/dialogs/{deleted['id']}").status_code == 404
    assert client.delete(f"/dialogs/{deleted['id']}").status_code == 404
    assert database.messages.count_documents({}) == 2
    assert client.get(f"/dialogs/{kept['id']}").json()["message_count"] == 2


def test_a_project_with_dialogs_is_deleted_only_with_cascade(
    client: httpx.Client, project: dict, database: Database
) -> None:
    dialog = create_dialog(client, project)
    write_turns(client, dialog, 1)
    other = client.post("/projects", json={"name": "Other"}).json()
    write_turns(client, create_dialog(client, other), 1)

    refused = client.delete(f"/projects/{project['id']}")
    assert refused.status_code == 409
    assert refused.json()["error"]["details"] == {"dialogs": 1}
    assert client.get(f"/dialogs/{dialog['id']}").status_code == 200

    cascade = client.delete(f"/projects/{project['id']}", params={"cascade": "true"})
    assert cascade.status_code == 204
    assert client.get(f"/dialogs/{dialog['id']}").status_code == 404
    assert database.dialogs.count_documents({}) == 1
    assert database.messages.count_documents({}) == 2


def test_cascade_counts_prompts_and_dialogs(
    client: httpx.Client, project: dict, make_prompt
) -> None:
    prompt = make_prompt()
    create_dialog(client, project, prompt_id=prompt["id"])
    refused = client.delete(f"/projects/{project['id']}")
    assert refused.json()["error"]["details"] == {"prompts": 1, "dialogs": 1}
    assert client.delete(f"/projects/{project['id']}?cascade=true").status_code == 204
    assert client.get(f"/prompts/{prompt['id']}").status_code == 404
