"""Protected labels need an owner; every label change is kept with who made it; every version
records its creator."""

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import pytest
from bson import ObjectId
from pymongo.database import Database

from tests.conftest import ADMIN_HEADERS
from tests.test_datasets import create_dataset

MISSING_ID = "6b0731e5942f52642075caa9"
ADMIN = {"kind": "admin", "id": "admin", "name": "admin key"}


def move(
    client: httpx.Client, prompt: dict, label: str, version: int, headers: dict | None = None
) -> httpx.Response:
    return client.put(
        f"/prompts/{prompt['id']}/labels/{label}", json={"version": version}, headers=headers
    )


def history(client: httpx.Client, prompt: dict, label: str, **params: object) -> dict:
    response = client.get(f"/prompts/{prompt['id']}/labels/{label}/history", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def changes(client: httpx.Client, prompt: dict, label: str) -> list[tuple]:
    """The label's history as (from, to, actor kind), newest first."""
    items = history(client, prompt, label)["items"]
    return [(i["from_version"], i["to_version"], i["by"]["kind"]) for i in items]


def with_versions(client: httpx.Client, make_prompt, count: int, **fields: object) -> dict:
    prompt = make_prompt(**fields)
    for number in range(2, count + 1):
        updated = client.put(
            f"/prompts/{prompt['id']}", json={"template": f"v{number} {{{{question}}}}"}
        )
        assert updated.status_code == 200, updated.text
    return prompt


def key_id(client: httpx.Client, project: dict, name: str) -> str:
    keys = client.get(f"/projects/{project['id']}/keys").json()["items"]
    return next(key["id"] for key in keys if key["name"] == name)


def test_an_editor_cannot_move_or_remove_a_protected_label_and_nothing_changes(
    client: httpx.Client, project: dict, make_prompt, key_headers, database: Database
) -> None:
    prompt = with_versions(client, make_prompt, 2, labels=["production"])
    editor = key_headers(project, "editor")
    before = client.get(f"/prompts/{prompt['id']}").json()

    refused = move(client, prompt, "production", 2, editor)
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "forbidden"
    assert "'production' is protected" in error["message"]
    assert error["details"] == {"label": "production", "required_role": "owner"}
    removal = client.delete(f"/prompts/{prompt['id']}/labels/production", headers=editor)
    assert (removal.status_code, removal.json()["error"]["code"]) == (403, "forbidden")

    after = client.get(f"/prompts/{prompt['id']}").json()
    assert after["labels"] == {"production": 1, "latest": 2}
    assert after["updated_at"] == before["updated_at"]
    assert changes(client, prompt, "production") == [(None, 1, "admin")]
    assert database.prompts.find_one({"_id": ObjectId(prompt["id"])})["pending_label_moves"] == []
    # The same editor moves an unprotected label freely.
    assert move(client, prompt, "staging", 2, editor).status_code == 200


def test_an_owner_moves_a_protected_label_and_its_gate_still_applies(
    client: httpx.Client, project: dict, make_prompt, key_headers
) -> None:
    prompt = with_versions(client, make_prompt, 3, labels=["production"])
    owner, editor = key_headers(project, "owner"), key_headers(project, "editor")
    moved = move(client, prompt, "production", 2, owner)
    assert moved.status_code == 200, moved.text
    assert moved.json()["labels"]["production"] == 2

    dataset = create_dataset(client, project, cases=[{"variables": {"question": "a"}}])
    gate = client.put(
        f"/prompts/{prompt['id']}/gates/production",
        json={"dataset_id": dataset["id"], "min_pass_rate": 0.5},
    )
    assert gate.status_code == 200, gate.text
    gated = move(client, prompt, "production", 3, owner)
    assert (gated.status_code, gated.json()["error"]["code"]) == (409, "gate_run_missing")
    # An editor is refused for the label's protection before the gate is asked.
    assert move(client, prompt, "production", 3, editor).status_code == 403
    assert client.get(f"/prompts/{prompt['id']}").json()["labels"]["production"] == 2
    assert changes(client, prompt, "production") == [(1, 2, "key"), (None, 1, "admin")]


def test_a_project_chooses_its_protected_labels(
    client: httpx.Client, project: dict, make_prompt, key_headers
) -> None:
    updated = client.put(f"/projects/{project['id']}", json={"protected_labels": ["stable"]})
    assert updated.status_code == 200, updated.text
    prompt = with_versions(client, make_prompt, 2, labels=["stable", "production"])
    editor = key_headers(project, "editor")
    assert move(client, prompt, "production", 2, editor).status_code == 200
    assert move(client, prompt, "stable", 2, editor).status_code == 403
    removal = client.delete(f"/prompts/{prompt['id']}/labels/stable", headers=editor)
    assert removal.status_code == 403
    assert client.get(f"/prompts/{prompt['id']}").json()["labels"]["stable"] == 1


def test_creating_a_prompt_with_a_protected_label_needs_an_owner(
    client: httpx.Client, project: dict, key_headers, database: Database
) -> None:
    body = {
        "project_id": project["id"],
        "name": "greeter",
        "type": "text",
        "template": "Hi {{name}}",
        "labels": ["staging", "production"],
    }
    refused = client.post("/prompts", json=body, headers=key_headers(project, "editor"))
    assert refused.status_code == 403
    assert refused.json()["error"]["details"]["label"] == "production"
    assert database.prompts.count_documents({"name": "greeter"}) == 0
    assert database.label_moves.count_documents({}) == 0

    created = client.post("/prompts", json=body, headers=key_headers(project, "owner"))
    assert created.status_code == 201, created.text
    prompt = created.json()
    assert changes(client, prompt, "production") == [(None, 1, "key")]
    assert changes(client, prompt, "staging") == [(None, 1, "key")]


def test_history_is_newest_first_by_page_and_names_who_moved(
    client: httpx.Client, project: dict, make_prompt, key_headers, user_headers
) -> None:
    prompt = with_versions(client, make_prompt, 3, labels=["staging"])
    editor = key_headers(project, "editor")
    member = client.put(f"/projects/{project['id']}/members/alice", json={"role": "editor"})
    assert member.status_code == 200, member.text
    alice = user_headers("alice", name="Alice")
    assert move(client, prompt, "staging", 2, editor).status_code == 200
    assert move(client, prompt, "staging", 3, alice).status_code == 200
    # A move to where the label already points changes nothing, so it is not kept.
    assert move(client, prompt, "staging", 3, alice).status_code == 200
    assert move(client, prompt, "staging", 1).status_code == 200

    first = history(client, prompt, "staging", limit=2)
    assert first["total"] == 4
    assert [(i["from_version"], i["to_version"]) for i in first["items"]] == [(3, 1), (2, 3)]
    assert [i["by"] for i in first["items"]] == [
        ADMIN,
        {"kind": "user", "id": "alice", "name": "Alice"},
    ]
    assert all(i["label"] == "staging" for i in first["items"])
    second = history(client, prompt, "staging", limit=2, cursor=first["next_cursor"])
    assert second["next_cursor"] is None
    assert [(i["from_version"], i["to_version"]) for i in second["items"]] == [(1, 2), (None, 1)]
    assert second["items"][0]["by"] == {
        "kind": "key",
        "id": key_id(client, project, "editor key"),
        "name": "editor key",
    }
    times = [datetime.fromisoformat(i["at"]) for i in first["items"] + second["items"]]
    assert times == sorted(times, reverse=True)
    # Another label's history is its own.
    assert history(client, prompt, "production")["items"] == []


def test_concurrent_moves_each_record_where_the_label_really_was(
    client: httpx.Client, make_prompt, gateway_url: str
) -> None:
    prompt = with_versions(client, make_prompt, 4, labels=["staging"])

    def moved(index: int) -> int:
        with httpx.Client(base_url=gateway_url, timeout=30, headers=ADMIN_HEADERS) as http:
            return move(http, prompt, "staging", index % 4 + 1).status_code

    with ThreadPoolExecutor(8) as pool:
        assert set(pool.map(moved, range(16))) == {200}
    items = history(client, prompt, "staging", limit=100)["items"]
    # Newest first, each change starts where the one before it left the label.
    assert [i["from_version"] for i in items] == [i["to_version"] for i in items[1:]] + [None]
    assert all(i["from_version"] != i["to_version"] for i in items)
    final = client.get(f"/prompts/{prompt['id']}").json()["labels"]["staging"]
    assert items[0]["to_version"] == final


def test_a_removal_is_kept_with_no_version(
    client: httpx.Client, project: dict, make_prompt, key_headers
) -> None:
    prompt = make_prompt(labels=["staging"])
    editor = key_headers(project, "editor")
    assert (
        client.delete(f"/prompts/{prompt['id']}/labels/staging", headers=editor).status_code == 204
    )
    assert client.delete(f"/prompts/{prompt['id']}/labels/staging").status_code == 404
    assert changes(client, prompt, "staging") == [(1, None, "key"), (None, 1, "admin")]
    assert move(client, prompt, "staging", 1).status_code == 200
    assert changes(client, prompt, "staging")[0] == (None, 1, "admin")


def test_a_change_whose_writer_died_before_copying_it_is_read_once(
    client: httpx.Client, make_prompt, database: Database
) -> None:
    prompt = make_prompt()
    object_id = ObjectId(prompt["id"])
    # What a move leaves when its process dies after the update: the record still pending, and
    # possibly copied already.
    lost = {
        "_id": ObjectId(),
        "prompt_id": object_id,
        "label": "staging",
        "from_version": None,
        "to_version": 1,
        "by": ADMIN,
        "at": datetime.fromisoformat(prompt["created_at"]),
    }
    copied = {**lost, "_id": ObjectId()}
    database.label_moves.insert_one(dict(copied))
    database.prompts.update_one(
        {"_id": object_id}, {"$set": {"pending_label_moves": [lost, copied]}}
    )
    assert changes(client, prompt, "staging") == [(None, 1, "admin"), (None, 1, "admin")]
    assert database.label_moves.count_documents({"prompt_id": object_id}) == 2
    assert database.prompts.find_one({"_id": object_id})["pending_label_moves"] == []


@pytest.mark.parametrize(
    ("label", "status", "code"),
    [("bad.label", 422, "validation_failed"), ("latest", 409, "reserved_label")],
)
def test_history_of_a_label_that_cannot_have_one_is_refused(
    client: httpx.Client, make_prompt, label: str, status: int, code: str
) -> None:
    prompt = make_prompt()
    response = client.get(f"/prompts/{prompt['id']}/labels/{label}/history")
    assert (response.status_code, response.json()["error"]["code"]) == (status, code)


def test_history_is_read_only_by_the_prompts_project(
    client: httpx.Client, project: dict, make_prompt, key_headers
) -> None:
    prompt = make_prompt(labels=["staging"])
    other = client.post("/projects", json={"name": "Other"}).json()
    outsider = key_headers(other, "owner")
    url = f"/prompts/{prompt['id']}/labels/staging/history"
    assert client.get(url, headers=outsider).status_code == 404
    assert client.get(url, headers=key_headers(project, "runner")).status_code == 403
    assert client.get(url, headers=key_headers(project, "viewer")).status_code == 200
    assert client.get(f"/prompts/{MISSING_ID}/labels/staging/history").status_code == 404
    bad_cursor = client.get(url, params={"cursor": "nope"})
    assert bad_cursor.status_code == 422


def test_versions_and_prompts_record_who_created_them(
    client: httpx.Client, project: dict, key_headers, user_headers
) -> None:
    editor = key_headers(project, "editor")
    body = {"project_id": project["id"], "name": "n", "type": "text", "template": "Hi {{x}}"}
    created = client.post("/prompts", json=body, headers=editor)
    assert created.status_code == 201, created.text
    prompt = created.json()
    by_key = {"kind": "key", "id": key_id(client, project, "editor key"), "name": "editor key"}
    assert prompt["created_by"] == by_key
    assert prompt["version"]["created_by"] == by_key

    client.put(f"/projects/{project['id']}/members/bob", json={"role": "editor"})
    bob = user_headers("bob", email="bob@example.com")
    url = f"/prompts/{prompt['id']}"
    updated = client.put(url, json={"template": "Hello {{x}}"}, headers=bob)
    assert updated.status_code == 200, updated.text
    by_user = {"kind": "user", "id": "bob", "name": "bob@example.com"}
    assert updated.json()["version"]["created_by"] == by_user
    # An update that makes no version leaves the creators as they were.
    same = client.put(url, json={"template": "Hello {{x}}", "category": "c"})
    assert same.json()["version"]["created_by"] == by_user
    versions = client.get(f"{url}/versions").json()["items"]
    assert [v["created_by"] for v in versions] == [by_user, by_key]
    assert client.get(url).json()["created_by"] == by_key


def test_deleting_a_prompt_or_its_project_deletes_its_label_history(
    client: httpx.Client, project: dict, make_prompt, database: Database
) -> None:
    kept, deleted = make_prompt(labels=["staging"]), make_prompt(labels=["staging"])
    assert client.delete(f"/prompts/{deleted['id']}").status_code == 204
    assert database.label_moves.count_documents({"prompt_id": ObjectId(deleted["id"])}) == 0
    assert database.label_moves.count_documents({"prompt_id": ObjectId(kept["id"])}) == 1
    cascade = client.delete(f"/projects/{project['id']}", params={"cascade": "true"})
    assert cascade.status_code == 204, cascade.text
    assert database.label_moves.count_documents({"prompt_id": ObjectId(kept["id"])}) == 0
