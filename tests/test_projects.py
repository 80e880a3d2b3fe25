"""Projects: the CRUD contract the frontend codes against."""

import httpx
from pymongo.database import Database


def test_create_then_get_returns_the_same_project(client: httpx.Client) -> None:
    created = client.post("/projects", json={"name": "  Sales  ", "description": "Leads"})
    assert created.status_code == 201
    project = created.json()
    assert project["name"] == "Sales"
    assert set(project) == {
        "id",
        "name",
        "description",
        "protected_labels",
        "limits",
        "created_at",
        "updated_at",
    }
    assert project["protected_labels"] == ["production"]
    assert project["limits"] == {
        "monthly_budget_usd": None,
        "max_output_tokens": 8192,
        "requests_per_minute": None,
    }
    fetched = client.get(f"/projects/{project['id']}")
    assert fetched.status_code == 200
    assert fetched.json() == project


def test_description_is_optional(client: httpx.Client) -> None:
    assert client.post("/projects", json={"name": "Bare"}).json()["description"] == ""


def test_name_must_be_unique(client: httpx.Client, project: dict) -> None:
    response = client.post("/projects", json={"name": project["name"]})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "name_taken"


def test_name_length_is_validated(client: httpx.Client) -> None:
    for name in ("", "   ", "x" * 101):
        response = client.post("/projects", json={"name": name})
        assert response.status_code == 422, name
        assert response.json()["error"]["details"][0]["loc"] == ["body", "name"]
    assert client.post("/projects", json={"name": "x" * 100}).status_code == 201


def test_partial_update_changes_only_given_fields(client: httpx.Client, project: dict) -> None:
    response = client.put(f"/projects/{project['id']}", json={"description": "New"})
    assert response.status_code == 200
    updated = response.json()
    assert updated["name"] == project["name"]
    assert updated["description"] == "New"
    assert updated["updated_at"] >= project["updated_at"]
    assert client.get(f"/projects/{project['id']}").json()["description"] == "New"


def test_rename_to_a_taken_name_conflicts_and_changes_nothing(
    client: httpx.Client, project: dict
) -> None:
    other = client.post("/projects", json={"name": "Other"}).json()
    response = client.put(f"/projects/{other['id']}", json={"name": project["name"]})
    assert response.status_code == 409
    assert client.get(f"/projects/{other['id']}").json()["name"] == "Other"


def test_unknown_and_malformed_ids_are_404(client: httpx.Client) -> None:
    for project_id in ("6b0731e5942f52642075caa9", "not-an-id"):
        assert client.get(f"/projects/{project_id}").status_code == 404
        assert client.put(f"/projects/{project_id}", json={"name": "x"}).status_code == 404
        assert client.delete(f"/projects/{project_id}").status_code == 404


def test_list_is_newest_first_with_cursor_pagination(client: httpx.Client) -> None:
    names = [f"project {index}" for index in range(7)]
    for name in names:
        assert client.post("/projects", json={"name": name}).status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = client.get("/projects", params=params).json()
        assert page["total"] == 7
        seen += [item["name"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(names))


def test_list_supports_page_numbers(client: httpx.Client) -> None:
    for index in range(5):
        client.post("/projects", json={"name": f"p{index}"})
    second = client.get("/projects", params={"limit": 2, "page": 2}).json()
    assert [item["name"] for item in second["items"]] == ["p2", "p1"]
    assert second["total"] == 5
    assert second["page"] == 2


def test_list_rejects_bad_paging_parameters(client: httpx.Client) -> None:
    assert client.get("/projects", params={"limit": 0}).status_code == 422
    assert client.get("/projects", params={"limit": 101}).status_code == 422
    response = client.get("/projects", params={"cursor": "garbage!"})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == ["query", "cursor"]


def test_delete_removes_the_project(client: httpx.Client, project: dict) -> None:
    assert client.delete(f"/projects/{project['id']}").status_code == 204
    assert client.get(f"/projects/{project['id']}").status_code == 404


def test_delete_with_prompts_needs_cascade(
    client: httpx.Client, project: dict, make_prompt, database: Database
) -> None:
    prompt = make_prompt()
    client.put(f"/prompts/{prompt['id']}", json={"template": "v2 {{question}}"})
    refused = client.delete(f"/projects/{project['id']}")
    assert refused.status_code == 409
    assert refused.json()["error"]["details"] == {"prompts": 1}
    assert client.get(f"/prompts/{prompt['id']}").status_code == 200

    assert (
        client.delete(f"/projects/{project['id']}", params={"cascade": "true"}).status_code == 204
    )
    assert client.get(f"/projects/{project['id']}").status_code == 404
    assert client.get(f"/prompts/{prompt['id']}").status_code == 404
    assert database.prompts.count_documents({}) == 0
    assert database.prompt_versions.count_documents({}) == 0


def test_an_owner_sets_protected_labels_and_limits(client: httpx.Client, project: dict) -> None:
    changes = {
        "protected_labels": ["production", "canary"],
        "limits": {"monthly_budget_usd": 25.5, "requests_per_minute": 60},
    }
    response = client.put(f"/projects/{project['id']}", json=changes)
    assert response.status_code == 200
    stored = client.get(f"/projects/{project['id']}").json()
    assert stored["protected_labels"] == ["production", "canary"]
    assert stored["limits"] == {
        "monthly_budget_usd": 25.5,
        "max_output_tokens": 8192,
        "requests_per_minute": 60,
    }
    for bad in ({"limits": {"max_output_tokens": 0}}, {"protected_labels": ["no spaces"]}):
        assert client.put(f"/projects/{project['id']}", json=bad).status_code == 422
    assert client.get(f"/projects/{project['id']}").json() == stored


def test_limits_change_only_where_given(client: httpx.Client, project: dict) -> None:
    path = f"/projects/{project['id']}"
    first = {"limits": {"monthly_budget_usd": 50, "max_output_tokens": 1000}}
    assert client.put(path, json=first).status_code == 200
    assert client.put(path, json={"limits": {"requests_per_minute": 60}}).status_code == 200
    assert client.get(path).json()["limits"] == {
        "monthly_budget_usd": 50,
        "max_output_tokens": 1000,
        "requests_per_minute": 60,
    }
    assert client.put(path, json={"limits": {"monthly_budget_usd": None}}).status_code == 200
    assert client.get(path).json()["limits"]["monthly_budget_usd"] is None
    assert client.get(path).json()["limits"]["max_output_tokens"] == 1000
