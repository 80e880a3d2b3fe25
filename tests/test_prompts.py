"""Prompts with immutable versions, labels, diffs and the cacheable run-time fetch."""

import httpx
from pymongo.database import Database

CHAT_MESSAGES = [
    {"role": "system", "content": "You are {{persona}}."},
    {"role": "user", "content": "{{question}}"},
]


def test_create_text_prompt_renders_the_contract(client: httpx.Client, project: dict) -> None:
    response = client.post(
        "/prompts",
        json={
            "project_id": project["id"],
            "name": "greeting",
            "type": "text",
            "template": "Hello {{ name }}, you asked {{topic}}. Again: {{name}}",
            "category": "support",
            "tags": ["faq", "faq", "en"],
            "config": {"model": "deepseek-v4-flash", "temperature": 0.3},
            "commit_message": "first cut",
            "labels": ["production"],
        },
    )
    assert response.status_code == 201
    prompt = response.json()
    assert prompt["project_id"] == project["id"]
    assert prompt["tags"] == ["faq", "en"]
    assert prompt["labels"] == {"production": 1, "latest": 1}
    assert prompt["latest_version"] == 1
    version = prompt["version"]
    assert version["version"] == 1
    assert version["variables"] == ["name", "topic"]
    assert version["config"] == {"model": "deepseek-v4-flash", "temperature": 0.3}
    assert version["commit_message"] == "first cut"
    assert set(prompt) >= {"id", "name", "category", "created_at", "updated_at"}


def test_create_chat_prompt_derives_variables_from_every_message(make_prompt) -> None:
    prompt = make_prompt(type="chat", template=None, messages=CHAT_MESSAGES)
    assert prompt["version"]["type"] == "chat"
    assert prompt["version"]["messages"] == CHAT_MESSAGES
    assert prompt["version"]["variables"] == ["persona", "question"]


def test_content_must_match_the_type(client: httpx.Client, project: dict) -> None:
    base = {"project_id": project["id"], "name": "p"}
    bad_bodies = [
        {**base, "type": "text"},
        {**base, "type": "chat", "template": "x"},
        {**base, "type": "text", "template": "x", "messages": CHAT_MESSAGES},
        {**base, "type": "chat", "messages": []},
        {**base, "type": "chat", "messages": [{"role": "robot", "content": "x"}]},
        {**base, "type": "voice", "template": "x"},
        {**base, "type": "text", "template": "Broken {{ 1 + 1 }}"},
    ]
    for body in bad_bodies:
        response = client.post("/prompts", json=body)
        assert response.status_code == 422, body
    assert client.get("/prompts", params={"project_id": project["id"]}).json()["total"] == 0


def test_config_is_validated_for_type_and_range(client: httpx.Client, project: dict) -> None:
    base = {"project_id": project["id"], "name": "p", "type": "text", "template": "x"}
    for config in (
        {"temperature": 3},
        {"temperature": "hot"},
        {"top_p": 0},
        {"max_tokens": 0},
        {"response_format": {"type": "xml"}},
        {"unknown_knob": 1},
        {"model": {"$ne": ""}},
    ):
        response = client.post("/prompts", json={**base, "config": config})
        assert response.status_code == 422, config
        assert response.json()["error"]["details"][0]["loc"][:2] == ["body", "config"]


def test_name_is_unique_within_a_project_only(client: httpx.Client, make_prompt) -> None:
    make_prompt(name="shared-name")
    other_project = client.post("/projects", json={"name": "Second"}).json()
    duplicate = client.post(
        "/prompts",
        json={
            "project_id": other_project["id"],
            "name": "shared-name",
            "type": "text",
            "template": "x",
        },
    )
    assert duplicate.status_code == 201
    conflict = client.post(
        "/prompts",
        json={
            "project_id": duplicate.json()["project_id"],
            "name": "shared-name",
            "type": "text",
            "template": "y",
        },
    )
    assert conflict.status_code == 409


def test_create_in_a_missing_project_is_404(client: httpx.Client) -> None:
    response = client.post(
        "/prompts",
        json={
            "project_id": "6b0731e5942f52642075caa9",
            "name": "p",
            "type": "text",
            "template": "x",
        },
    )
    assert response.status_code == 404


def test_latest_cannot_be_set_by_hand(client: httpx.Client, project: dict, make_prompt) -> None:
    response = client.post(
        "/prompts",
        json={
            "project_id": project["id"],
            "name": "p",
            "type": "text",
            "template": "x",
            "labels": ["latest"],
        },
    )
    assert response.status_code == 422
    prompt = make_prompt()
    moved = client.put(f"/prompts/{prompt['id']}/labels/latest", json={"version": 1})
    assert moved.status_code == 409
    assert moved.json()["error"]["code"] == "reserved_label"


def test_content_update_creates_the_next_version(client: httpx.Client, make_prompt) -> None:
    prompt = make_prompt(labels=["production"])
    response = client.put(
        f"/prompts/{prompt['id']}",
        json={"template": "Answer {{question}} in {{language}}.", "commit_message": "i18n"},
    )
    assert response.status_code == 200
    updated = response.json()
    assert updated["created_version"] is True
    assert updated["latest_version"] == 2
    assert updated["version"]["version"] == 2
    assert updated["version"]["variables"] == ["question", "language"]
    assert updated["version"]["commit_message"] == "i18n"
    assert updated["labels"] == {"production": 1, "latest": 2}
    first = client.get(f"/prompts/{prompt['id']}/versions/1").json()
    assert first["template"] == prompt["version"]["template"]


def test_metadata_update_keeps_the_version(client: httpx.Client, make_prompt) -> None:
    prompt = make_prompt()
    response = client.put(
        f"/prompts/{prompt['id']}", json={"name": "renamed", "tags": ["a"], "category": "c"}
    )
    updated = response.json()
    assert updated["created_version"] is False
    assert updated["latest_version"] == 1
    assert (updated["name"], updated["tags"], updated["category"]) == ("renamed", ["a"], "c")


def test_identical_content_creates_nothing_and_says_so(client: httpx.Client, make_prompt) -> None:
    prompt = make_prompt(config={"temperature": 0.5})
    response = client.put(
        f"/prompts/{prompt['id']}",
        json={"template": prompt["version"]["template"], "config": {"temperature": 0.5}},
    )
    assert response.json()["created_version"] is False
    assert response.json()["latest_version"] == 1
    versions = client.get(f"/prompts/{prompt['id']}/versions").json()["items"]
    assert len(versions) == 1


def test_config_update_merges_and_null_removes(client: httpx.Client, make_prompt) -> None:
    prompt = make_prompt(config={"model": "deepseek-v4-flash", "temperature": 0.5})
    response = client.put(
        f"/prompts/{prompt['id']}", json={"config": {"temperature": None, "max_tokens": 200}}
    )
    version = response.json()["version"]
    assert version["config"] == {"model": "deepseek-v4-flash", "max_tokens": 200}
    assert version["template"] == prompt["version"]["template"]


def test_switching_type_needs_matching_content(client: httpx.Client, make_prompt) -> None:
    prompt = make_prompt()
    refused = client.put(f"/prompts/{prompt['id']}", json={"type": "chat"})
    assert refused.status_code == 422
    switched = client.put(
        f"/prompts/{prompt['id']}", json={"type": "chat", "messages": CHAT_MESSAGES}
    ).json()
    assert switched["version"]["type"] == "chat"
    assert switched["version"]["template"] is None


def test_an_update_that_fails_changes_nothing(client: httpx.Client, make_prompt) -> None:
    prompt = make_prompt(tags=["billing"])
    refused = client.put(
        f"/prompts/{prompt['id']}", json={"name": "renamed", "tags": ["x"], "type": "chat"}
    )
    assert refused.status_code == 422
    kept = client.get(f"/prompts/{prompt['id']}").json()
    assert (kept["name"], kept["tags"], kept["updated_at"]) == (
        prompt["name"],
        ["billing"],
        prompt["updated_at"],
    )
    assert kept["latest_version"] == 1


def test_get_chooses_latest_version_or_label(client: httpx.Client, make_prompt) -> None:
    prompt = make_prompt(labels=["production"])
    client.put(f"/prompts/{prompt['id']}", json={"template": "second {{question}}"})
    client.put(f"/prompts/{prompt['id']}", json={"template": "third {{question}}"})
    url = f"/prompts/{prompt['id']}"
    assert client.get(url).json()["version"]["version"] == 3
    assert client.get(url, params={"label": "latest"}).json()["version"]["version"] == 3
    assert client.get(url, params={"label": "production"}).json()["version"]["version"] == 1
    assert client.get(url, params={"version": 2}).json()["version"]["template"].startswith("second")
    assert client.get(url).json()["labels"] == {"production": 1, "latest": 3}
    assert client.get(url, params={"version": 4}).status_code == 404
    assert client.get(url, params={"label": "staging"}).status_code == 404
    assert client.get(url, params={"version": 1, "label": "production"}).status_code == 422
    assert client.get(url, params={"version": "one"}).status_code == 422


def test_etag_revalidation_answers_304_until_something_changes(
    client: httpx.Client, make_prompt
) -> None:
    prompt = make_prompt(labels=["production"])
    url = f"/prompts/{prompt['id']}"
    first = client.get(url, params={"label": "production"})
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "no-cache"

    cached = client.get(url, params={"label": "production"}, headers={"If-None-Match": etag})
    assert cached.status_code == 304
    assert cached.content == b""
    assert cached.headers["ETag"] == etag
    weak = client.get(url, params={"label": "production"}, headers={"If-None-Match": f"W/{etag}"})
    assert weak.status_code == 304

    client.put(f"/prompts/{prompt['id']}", json={"template": "new {{question}}"})
    client.put(f"{url}/labels/production", json={"version": 2})
    moved = client.get(url, params={"label": "production"}, headers={"If-None-Match": etag})
    assert moved.status_code == 200
    assert moved.headers["ETag"] != etag
    assert moved.json()["version"]["version"] == 2

    etag = moved.headers["ETag"]
    client.put(url, json={"tags": ["changed"]})
    renamed = client.get(url, params={"label": "production"}, headers={"If-None-Match": etag})
    assert renamed.status_code == 200
    assert renamed.json()["tags"] == ["changed"]


def test_labels_move_and_are_removed(client: httpx.Client, make_prompt) -> None:
    prompt = make_prompt()
    url = f"/prompts/{prompt['id']}"
    client.put(url, json={"template": "v2 {{question}}"})
    moved = client.put(f"{url}/labels/staging", json={"version": 2})
    assert moved.status_code == 200
    assert moved.json()["labels"]["staging"] == 2
    assert moved.json()["version"]["version"] == 2
    assert client.put(f"{url}/labels/staging", json={"version": 1}).json()["labels"]["staging"] == 1
    assert client.put(f"{url}/labels/staging", json={"version": 9}).status_code == 404
    assert client.put(f"{url}/labels/staging", json={"version": 0}).status_code == 422
    assert client.put(f"{url}/labels/bad.label", json={"version": 1}).status_code == 422
    assert client.get(url).json()["labels"] == {"staging": 1, "latest": 2}

    assert client.delete(f"{url}/labels/staging").status_code == 204
    assert client.delete(f"{url}/labels/staging").status_code == 404
    assert client.get(url, params={"label": "staging"}).status_code == 404


def test_list_filters_by_category_tag_label_name_and_search(
    client: httpx.Client, project: dict, make_prompt
) -> None:
    make_prompt(name="Refund policy", category="billing", tags=["money"], labels=["production"])
    make_prompt(name="Refund apology", category="billing", tags=["tone"])
    make_prompt(name="Greeting", category="general", tags=["tone"])

    def names(**params: str) -> list[str]:
        query = {"project_id": project["id"], **params}
        response = client.get("/prompts", params=query)
        assert response.status_code == 200
        return sorted(item["name"] for item in response.json()["items"])

    assert names() == ["Greeting", "Refund apology", "Refund policy"]
    assert names(category="billing") == ["Refund apology", "Refund policy"]
    assert names(tag="tone") == ["Greeting", "Refund apology"]
    assert names(label="production") == ["Refund policy"]
    assert names(name="Greeting") == ["Greeting"]
    assert names(q="refund") == ["Refund apology", "Refund policy"]
    assert names(q="refund", tag="tone") == ["Refund apology"]
    assert names(q=".*") == []
    assert names(label="latest") == ["Greeting", "Refund apology", "Refund policy"]


def test_list_paginates_and_scopes_to_the_project(
    client: httpx.Client, project: dict, make_prompt
) -> None:
    for index in range(5):
        make_prompt(name=f"p{index}")
    other = client.post("/projects", json={"name": "Other"}).json()
    first = client.get("/prompts", params={"project_id": project["id"], "limit": 2}).json()
    assert [item["name"] for item in first["items"]] == ["p4", "p3"]
    assert first["total"] == 5
    second = client.get(
        "/prompts",
        params={"project_id": project["id"], "limit": 2, "cursor": first["next_cursor"]},
    ).json()
    assert [item["name"] for item in second["items"]] == ["p2", "p1"]
    assert client.get("/prompts", params={"project_id": other["id"]}).json()["items"] == []
    assert client.get("/prompts", params={"project_id": "nope"}).json()["total"] == 0


def test_versions_list_newest_first_with_paging(client: httpx.Client, make_prompt) -> None:
    prompt = make_prompt()
    for index in range(2, 6):
        client.put(f"/prompts/{prompt['id']}", json={"template": f"v{index} {{{{question}}}}"})
    url = f"/prompts/{prompt['id']}/versions"
    page = client.get(url, params={"limit": 3}).json()
    assert [item["version"] for item in page["items"]] == [5, 4, 3]
    rest = client.get(url, params={"limit": 3, "cursor": page["next_cursor"]}).json()
    assert [item["version"] for item in rest["items"]] == [2, 1]
    assert rest["next_cursor"] is None
    assert client.get(f"/prompts/{prompt['id']}/versions/3").json()["template"] == "v3 {{question}}"
    assert client.get(f"/prompts/{prompt['id']}/versions/9").status_code == 404
    assert client.get(f"/prompts/{prompt['id']}/versions/abc").status_code == 404
    assert client.get("/prompts/nope/versions").status_code == 404


def test_diff_shows_content_config_and_variables(client: httpx.Client, make_prompt) -> None:
    prompt = make_prompt(
        template="Line one\nAnswer {{question}}", config={"temperature": 0.2, "top_p": 0.9}
    )
    client.put(
        f"/prompts/{prompt['id']}",
        json={
            "template": "Line one\nAnswer {{question}} for {{user}}",
            "config": {"temperature": 0.7, "top_p": None, "max_tokens": 100},
        },
    )
    diff = client.get(f"/prompts/{prompt['id']}/diff", params={"from": 1, "to": 2}).json()
    assert diff["from_version"] == 1 and diff["to_version"] == 2
    assert "-Answer {{question}}\n+Answer {{question}} for {{user}}\n" in diff["content_diff"]
    assert " Line one\n" in diff["content_diff"]
    assert diff["config_changes"] == [
        {"field": "max_tokens", "from": None, "to": 100},
        {"field": "temperature", "from": 0.2, "to": 0.7},
        {"field": "top_p", "from": 0.9, "to": None},
    ]
    assert diff["variables_added"] == ["user"]
    assert diff["variables_removed"] == []
    assert diff["type_changed"] is False
    missing = client.get(f"/prompts/{prompt['id']}/diff", params={"from": 1, "to": 7})
    assert missing.status_code == 404
    assert client.get(f"/prompts/{prompt['id']}/diff", params={"from": 1}).status_code == 422


def test_diff_of_chat_messages_names_the_roles(client: httpx.Client, make_prompt) -> None:
    prompt = make_prompt(type="chat", template=None, messages=CHAT_MESSAGES)
    client.put(
        f"/prompts/{prompt['id']}",
        json={"messages": [CHAT_MESSAGES[0], {"role": "user", "content": "Q: {{question}}"}]},
    )
    diff = client.get(f"/prompts/{prompt['id']}/diff", params={"from": 1, "to": 2}).json()
    assert "[user]\n-{{question}}\n+Q: {{question}}\n" in diff["content_diff"]


def test_delete_removes_prompt_and_versions(
    client: httpx.Client, make_prompt, database: Database
) -> None:
    prompt = make_prompt()
    client.put(f"/prompts/{prompt['id']}", json={"template": "v2 {{question}}"})
    assert client.delete(f"/prompts/{prompt['id']}").status_code == 204
    assert client.get(f"/prompts/{prompt['id']}").status_code == 404
    assert client.delete(f"/prompts/{prompt['id']}").status_code == 404
    assert database.prompt_versions.count_documents({}) == 0
