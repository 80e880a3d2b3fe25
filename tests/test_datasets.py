"""Datasets through the gateway: CRUD, cases in insertion order, bulk import all or nothing."""

import json

import httpx
import pytest
from pymongo.database import Database

MISSING_ID = "6b0731e5942f52642075caa9"
NDJSON = {"Content-Type": "application/x-ndjson"}


def create_dataset(client: httpx.Client, project: dict, **fields: object) -> dict:
    body = {"project_id": project["id"], "name": "refunds", **fields}
    response = client.post("/datasets", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def add_cases(client: httpx.Client, dataset: dict, cases: list[dict]) -> httpx.Response:
    return client.post(f"/datasets/{dataset['id']}/cases", json=cases)


def json_lines(*items: object) -> bytes:
    return "\n".join(i if isinstance(i, str) else json.dumps(i) for i in items).encode()


def test_create_renders_the_contract(client: httpx.Client, project: dict) -> None:
    dataset = create_dataset(client, project, name=" Refunds ", description="tier 1")
    assert set(dataset) == {
        "id",
        "project_id",
        "name",
        "description",
        "case_count",
        "created_at",
        "updated_at",
    }
    assert (dataset["project_id"], dataset["name"], dataset["description"]) == (
        project["id"],
        "Refunds",
        "tier 1",
    )
    assert dataset["case_count"] == 0
    assert client.get(f"/datasets/{dataset['id']}").json() == {
        **dataset,
        "cases": [],
        "next_cursor": None,
    }


def test_create_with_cases_stores_them_in_order(client: httpx.Client, project: dict) -> None:
    cases = [
        {
            "variables": {"question": "Where is my refund?", "order": {"id": 7, "items": [1, 2]}},
            "input": "Hi",
            "history": [
                {"role": "user", "content": "I ordered a lamp."},
                {"role": "assistant", "content": "How can I help?"},
            ],
            "expected": "Refunds take 5 days.",
            "assertions": [
                {"type": "contains", "value": "5 days", "case_insensitive": True},
                {"type": "json_schema", "schema": {"$defs": {"n": {"type": "number"}}}},
            ],
            "tags": ["refunds", "multi-turn"],
        },
        {"variables": {"question": "Second"}},
    ]
    dataset = create_dataset(client, project, cases=cases)
    assert dataset["case_count"] == 2
    stored = client.get(f"/datasets/{dataset['id']}").json()["cases"]
    assert [case["variables"]["question"] for case in stored] == ["Where is my refund?", "Second"]
    first = stored[0]
    assert set(first) == {
        "id",
        "dataset_id",
        "variables",
        "input",
        "history",
        "expected",
        "assertions",
        "tags",
        "created_at",
    }
    assert first["dataset_id"] == dataset["id"]
    assert {key: first[key] for key in cases[0]} == cases[0]
    assert stored[1]["assertions"] == stored[1]["history"] == stored[1]["tags"] == []
    assert (stored[1]["input"], stored[1]["expected"]) == (None, None)


def test_names_are_unique_within_a_project(client: httpx.Client, project: dict) -> None:
    create_dataset(client, project, name="golden")
    duplicate = client.post("/datasets", json={"project_id": project["id"], "name": "golden"})
    assert duplicate.status_code == 409
    assert duplicate.json()["error"]["code"] == "name_taken"
    other = client.post("/projects", json={"name": "Other"}).json()
    assert create_dataset(client, other, name="golden")["project_id"] == other["id"]


@pytest.mark.parametrize("project_id", [MISSING_ID, "not-an-id"])
def test_create_in_a_missing_project_is_404(
    client: httpx.Client, project_id: str, database: Database
) -> None:
    response = client.post("/datasets", json={"project_id": project_id, "name": "x"})
    assert response.status_code == 404
    assert response.json()["error"]["details"]["kind"] == "project"
    assert database.datasets.count_documents({}) == 0


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"name": ""}, ["body", "name"]),
        ({"name": "x" * 101}, ["body", "name"]),
        ({"owner": "me"}, ["body", "owner"]),
        ({"cases": [{"variables": {"$where": 1}}]}, ["body", "cases", 0, "variables"]),
        ({"cases": [{"variables": {"a": {"b.c": 1}}}]}, ["body", "cases", 0, "variables"]),
        ({"cases": [{"variables": {"big": 2**64}}]}, ["body", "cases", 0]),
        ({"cases": [{"history": [{"role": "system", "content": "x"}]}]}, ["body", "cases", 0]),
        ({"cases": [{"history": [{"role": "user", "content": "x"}] * 101}]}, ["body", "cases"]),
        ({"cases": [{"tags": ["x" * 51]}]}, ["body", "cases", 0, "tags", 0]),
        ({"cases": [{"assertions": [{"type": "nope"}]}]}, ["body", "cases", 0, "assertions"]),
        (
            {"cases": [{"assertions": [{"type": "json_schema", "schema": {"type": "nope"}}]}]},
            ["body", "cases", 0, "assertions", 0, "json_schema", "schema"],
        ),
        (
            {"cases": [{"assertions": [{"type": "regex", "pattern": "(unclosed"}]}]},
            ["body", "cases", 0, "assertions", 0, "regex", "pattern"],
        ),
    ],
)
def test_invalid_bodies_are_422_and_store_nothing(
    client: httpx.Client, project: dict, database: Database, body: dict, where: list
) -> None:
    response = client.post("/datasets", json={"project_id": project["id"], "name": "d", **body})
    assert response.status_code == 422, response.text
    locations = [detail["loc"] for detail in response.json()["error"]["details"]]
    assert any(location[: len(where)] == where for location in locations), locations
    assert database.datasets.count_documents({}) == 0
    assert database.dataset_cases.count_documents({}) == 0


def test_list_needs_a_project_and_pages_newest_first(client: httpx.Client, project: dict) -> None:
    assert client.get("/datasets").status_code == 422
    for name in ("a", "b", "c"):
        create_dataset(client, project, name=name)
    first = client.get("/datasets", params={"project_id": project["id"], "limit": 2}).json()
    assert [d["name"] for d in first["items"]] == ["c", "b"]
    assert first["total"] == 3
    rest = client.get(
        "/datasets",
        params={"project_id": project["id"], "limit": 2, "cursor": first["next_cursor"]},
    ).json()
    assert [d["name"] for d in rest["items"]] == ["a"]
    assert rest["next_cursor"] is None
    other = client.post("/projects", json={"name": "Other"}).json()
    for project_id in (other["id"], MISSING_ID, "not-an-id"):
        listed = client.get("/datasets", params={"project_id": project_id}).json()
        assert (listed["items"], listed["total"]) == ([], 0)


def test_update_renames_and_describes(client: httpx.Client, project: dict) -> None:
    dataset = create_dataset(client, project, name="old")
    create_dataset(client, project, name="taken")
    renamed = client.put(f"/datasets/{dataset['id']}", json={"name": "new", "description": "d"})
    assert renamed.status_code == 200
    assert (renamed.json()["name"], renamed.json()["description"]) == ("new", "d")
    assert renamed.json()["updated_at"] > dataset["updated_at"]
    clash = client.put(f"/datasets/{dataset['id']}", json={"name": "taken"})
    assert clash.status_code == 409
    assert client.put(f"/datasets/{dataset['id']}", json={"case_count": 9}).status_code == 422
    assert client.get(f"/datasets/{dataset['id']}").json()["name"] == "new"


@pytest.mark.parametrize("dataset_id", [MISSING_ID, "not-an-id"])
def test_unknown_datasets_are_404_on_every_route(client: httpx.Client, dataset_id: str) -> None:
    base = f"/datasets/{dataset_id}"
    assert client.get(base).status_code == 404
    assert client.put(base, json={"name": "x"}).status_code == 404
    assert client.delete(base).status_code == 404
    assert client.post(f"{base}/cases", json=[{}]).status_code == 404
    assert client.put(f"{base}/cases/{MISSING_ID}", json={"input": "x"}).status_code == 404
    assert client.delete(f"{base}/cases/{MISSING_ID}").status_code == 404


def test_cases_page_in_insertion_order(client: httpx.Client, project: dict) -> None:
    dataset = create_dataset(client, project)
    add_cases(client, dataset, [{"input": f"a{i}"} for i in range(3)])
    add_cases(client, dataset, [{"input": f"b{i}"} for i in range(2)])
    seen, cursor = [], None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get(f"/datasets/{dataset['id']}", params=params).json()
        seen += [case["input"] for case in page["cases"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == ["a0", "a1", "a2", "b0", "b1"]
    default = client.get(f"/datasets/{dataset['id']}").json()
    assert len(default["cases"]) == 5 and default["case_count"] == 5


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 1001}, {"cursor": "garbage"}])
def test_bad_case_paging_is_422(client: httpx.Client, project: dict, params: dict) -> None:
    dataset = create_dataset(client, project)
    assert client.get(f"/datasets/{dataset['id']}", params=params).status_code == 422


def test_a_page_holds_up_to_a_thousand_cases(client: httpx.Client, project: dict) -> None:
    dataset = create_dataset(client, project, cases=[{"input": str(i)} for i in range(1001)])
    first = client.get(f"/datasets/{dataset['id']}", params={"limit": 1000}).json()
    assert len(first["cases"]) == 1000
    assert [case["input"] for case in first["cases"][:3]] == ["0", "1", "2"]
    default = client.get(f"/datasets/{dataset['id']}").json()
    assert len(default["cases"]) == 100
    last = client.get(
        f"/datasets/{dataset['id']}", params={"limit": 1000, "cursor": first["next_cursor"]}
    ).json()
    assert [case["input"] for case in last["cases"]] == ["1000"]


def test_case_count_follows_adds_updates_and_deletes(
    client: httpx.Client, project: dict, database: Database
) -> None:
    dataset = create_dataset(client, project, cases=[{"input": "one"}])
    added = add_cases(client, dataset, [{"input": "two"}, {"input": "three"}])
    assert added.status_code == 201
    assert added.json()["case_count"] == 3
    assert [case["input"] for case in added.json()["items"]] == ["two", "three"]
    two, three = added.json()["items"]

    updated = client.put(
        f"/datasets/{dataset['id']}/cases/{two['id']}",
        json={"expected": "2", "tags": ["numbers"], "input": None},
    )
    assert updated.status_code == 200
    assert updated.json() == {**two, "expected": "2", "tags": ["numbers"], "input": None}
    unchanged = client.put(f"/datasets/{dataset['id']}/cases/{two['id']}", json={})
    assert unchanged.json() == updated.json()
    assert client.get(f"/datasets/{dataset['id']}").json()["case_count"] == 3

    assert client.delete(f"/datasets/{dataset['id']}/cases/{three['id']}").status_code == 204
    assert client.delete(f"/datasets/{dataset['id']}/cases/{three['id']}").status_code == 404
    after = client.get(f"/datasets/{dataset['id']}").json()
    assert after["case_count"] == 2 == database.dataset_cases.count_documents({})
    assert [case["input"] for case in after["cases"]] == ["one", None]


def test_case_routes_refuse_other_datasets_cases_and_bad_values(
    client: httpx.Client, project: dict
) -> None:
    dataset = create_dataset(client, project, name="a", cases=[{"input": "mine"}])
    other = create_dataset(client, project, name="b", cases=[{"input": "theirs"}])
    foreign = client.get(f"/datasets/{other['id']}").json()["cases"][0]["id"]
    base = f"/datasets/{dataset['id']}/cases"
    for case_id in (foreign, MISSING_ID, "not-an-id"):
        assert client.put(f"{base}/{case_id}", json={"input": "x"}).status_code == 404
        assert client.delete(f"{base}/{case_id}").status_code == 404
    mine = client.get(f"/datasets/{dataset['id']}").json()["cases"][0]["id"]
    for body in ({"history": None}, {"variables": {"$gt": 1}}, {"owner": "me"}):
        assert client.put(f"{base}/{mine}", json=body).status_code == 422
    assert client.get(f"/datasets/{other['id']}").json()["cases"][0]["input"] == "theirs"


def test_delete_removes_the_dataset_and_its_cases(
    client: httpx.Client, project: dict, database: Database
) -> None:
    kept = create_dataset(client, project, name="kept", cases=[{"input": "k"}])
    deleted = create_dataset(client, project, name="gone", cases=[{}, {}])
    assert client.delete(f"/datasets/{deleted['id']}").status_code == 204
    assert client.get(f"/datasets/{deleted['id']}").status_code == 404
    assert database.dataset_cases.count_documents({}) == 1
    assert client.get(f"/datasets/{kept['id']}").json()["case_count"] == 1


def test_a_project_with_datasets_is_deleted_only_with_cascade(
    client: httpx.Client, project: dict, database: Database
) -> None:
    dataset = create_dataset(client, project, cases=[{}, {}])
    other = client.post("/projects", json={"name": "Other"}).json()
    create_dataset(client, other, cases=[{}])

    refused = client.delete(f"/projects/{project['id']}")
    assert refused.status_code == 409
    assert refused.json()["error"]["details"] == {"datasets": 1}
    assert client.get(f"/datasets/{dataset['id']}").status_code == 200

    assert client.delete(f"/projects/{project['id']}?cascade=true").status_code == 204
    assert client.get(f"/datasets/{dataset['id']}").status_code == 404
    assert database.datasets.count_documents({}) == 1
    assert database.dataset_cases.count_documents({}) == 1


def test_json_schema_assertions_round_trip_through_storage(
    client: httpx.Client, project: dict, database: Database
) -> None:
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "type": "object"}
    dataset = create_dataset(client, project)
    spec = {"type": "json_schema", "schema": schema}
    added = add_cases(client, dataset, [{"assertions": [spec]}]).json()["items"][0]
    assert added["assertions"] == [spec]
    assert client.get(f"/datasets/{dataset['id']}").json()["cases"][0]["assertions"] == [spec]
    assert isinstance(database.dataset_cases.find_one()["assertions"][0]["schema"], str)


class TestImport:
    def test_json_lines_are_imported_in_order(self, client: httpx.Client, project: dict) -> None:
        dataset = create_dataset(client, project)
        body = json_lines({"input": "first"}, "", {"input": "second", "tags": ["t"]}) + b"\r\n"
        response = client.post(f"/datasets/{dataset['id']}/cases", content=body, headers=NDJSON)
        assert response.status_code == 201, response.text
        assert [case["input"] for case in response.json()["items"]] == ["first", "second"]
        assert response.json()["case_count"] == 2

    def test_a_malformed_line_is_422_naming_it_and_nothing_is_imported(
        self, client: httpx.Client, project: dict, database: Database
    ) -> None:
        dataset = create_dataset(client, project)
        body = json_lines(
            {"input": "ok"},
            '{"input": "cut',
            {"input": "ok"},
            {"variables": {"$ne": 1}},
            {"input": 5},
        )
        response = client.post(f"/datasets/{dataset['id']}/cases", content=body, headers=NDJSON)
        assert response.status_code == 422
        error = response.json()["error"]
        assert "2, 4, 5" in error["message"]
        assert [detail["loc"][:3] for detail in error["details"]] == [
            ["body", "line", 2],
            ["body", "line", 4],
            ["body", "line", 5],
        ]
        assert error["details"][0]["type"] == "json_invalid"
        assert error["details"][1]["loc"][3] == "variables"
        assert error["details"][2]["loc"][3] == "input"
        assert database.dataset_cases.count_documents({}) == 0
        assert client.get(f"/datasets/{dataset['id']}").json()["case_count"] == 0

    def test_an_invalid_case_in_a_json_list_is_422_and_nothing_is_imported(
        self, client: httpx.Client, project: dict, database: Database
    ) -> None:
        dataset = create_dataset(client, project)
        response = add_cases(client, dataset, [{"input": "ok"}, {"tags": "not-a-list"}])
        assert response.status_code == 422
        assert response.json()["error"]["details"][0]["loc"] == ["body", 1, "tags"]
        assert database.dataset_cases.count_documents({}) == 0

    @pytest.mark.parametrize(
        ("content", "headers", "status"),
        [
            (b'{"input": "x"}', {"Content-Type": "application/json"}, 422),
            (b"[]", {"Content-Type": "application/json"}, 422),
            (b"\n\n", NDJSON, 422),
            (b"", NDJSON, 400),
            (b"\xff\xfe", NDJSON, 400),
            (b"[{]", {"Content-Type": "application/json"}, 400),
            (b"[]", {"Content-Type": "text/csv"}, 415),
        ],
    )
    def test_bodies_that_are_not_cases_are_refused(
        self, client: httpx.Client, project: dict, content: bytes, headers: dict, status: int
    ) -> None:
        dataset = create_dataset(client, project)
        url = f"/datasets/{dataset['id']}/cases"
        assert client.post(url, content=content, headers=headers).status_code == status

    def test_at_most_ten_thousand_cases_per_request(
        self, client: httpx.Client, project: dict, database: Database
    ) -> None:
        dataset = create_dataset(client, project)
        url = f"/datasets/{dataset['id']}/cases"
        too_many = client.post(url, content=b"{}\n" * 10_001, headers=NDJSON)
        assert too_many.status_code == 422
        assert too_many.json()["error"]["code"] == "too_many_cases"
        assert database.dataset_cases.count_documents({}) == 0
        most = client.post(url, content=b"{}\n" * 10_000, headers=NDJSON)
        assert most.status_code == 201
        assert most.json()["case_count"] == 10_000
