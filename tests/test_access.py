"""Access control: who the caller is (admin key, project API key, user token) and what their
role in a project lets them do; another project's resources look exactly like missing ones."""

import hashlib
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from pymongo.database import Database

from devtools.embedded_mongo import free_port
from devtools.fake_oidc import FakeOidcIssuer
from shared.access.callers import KEY_CACHE_S
from shared.access.models import Role
from shared.access.service import AccessService
from tests.conftest import bearer, configure


def test_a_request_without_credentials_is_401_with_a_bearer_challenge(
    client: httpx.Client, project: dict
) -> None:
    for headers in ({"Authorization": ""}, {"Authorization": "Basic dXNlcjpwdw=="}):
        response = client.get(f"/projects/{project['id']}", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"] == "Bearer"
        assert response.json()["error"]["code"] == "unauthenticated"


def test_health_and_readiness_stay_open(client: httpx.Client) -> None:
    assert client.get("/prompts/healthz", headers={"Authorization": ""}).status_code == 200
    assert client.get("/prompts/readyz", headers={"Authorization": ""}).status_code == 200


@pytest.mark.parametrize(
    "credential", ["nonsense", "ba_not-a-real-key", "a.b.c", "test-admin-key-but-longer"]
)
def test_a_credential_we_never_issued_is_401(client: httpx.Client, credential: str) -> None:
    response = client.get("/projects", headers=bearer(credential))
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_credentials"
    assert credential not in response.text


def test_every_configured_admin_key_works_so_it_can_be_rotated(
    client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, ADMIN_API_KEY="new-admin-key, old-admin-key")
    for key in ("new-admin-key", "old-admin-key"):
        assert client.get("/projects", headers=bearer(key)).status_code == 200
    assert client.get("/projects").status_code == 401  # the test key is no longer configured


def test_a_key_is_shown_once_and_stored_only_as_its_hash(
    client: httpx.Client, project: dict, database: Database
) -> None:
    created = client.post(
        f"/projects/{project['id']}/keys", json={"name": "billing app", "role": "runner"}
    )
    assert created.status_code == 201
    key = created.json()
    secret = key["key"]
    assert secret.startswith("ba_") and len(secret) > 40
    assert key["prefix"] == secret[: len(key["prefix"])] and len(key["prefix"]) < 12
    assert key["last_used_at"] is None and key["created_by"]["kind"] == "admin"
    listed = client.get(f"/projects/{project['id']}/keys").json()["items"]
    assert [item["id"] for item in listed] == [key["id"]]
    assert "key" not in listed[0]
    stored = database.api_keys.find_one({})
    assert stored["hash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in str(stored)


def test_a_key_works_in_its_project_and_records_when_it_was_used(
    client: httpx.Client, project: dict, key_headers, make_prompt
) -> None:
    prompt = make_prompt()
    headers = key_headers(project, "runner")
    assert client.get(f"/prompts/{prompt['id']}", headers=headers).status_code == 200
    listed = client.get(f"/projects/{project['id']}/keys").json()["items"]
    assert listed[0]["last_used_at"] is not None


def test_a_revoked_key_is_refused_within_the_cache_time(
    client: httpx.Client, project: dict, make_prompt
) -> None:
    prompt = make_prompt()
    created = client.post(
        f"/projects/{project['id']}/keys", json={"name": "leaked", "role": "runner"}
    ).json()
    headers = bearer(created["key"])
    assert client.get(f"/prompts/{prompt['id']}", headers=headers).status_code == 200
    revoked = client.delete(f"/projects/{project['id']}/keys/{created['id']}")
    assert revoked.status_code == 204
    assert client.get(f"/projects/{project['id']}/keys").json()["items"] == []
    deadline = time.monotonic() + KEY_CACHE_S + 5
    while client.get(f"/prompts/{prompt['id']}", headers=headers).status_code == 200:
        assert time.monotonic() < deadline, "a revoked key still works"
        time.sleep(0.2)
    refused = client.get(f"/prompts/{prompt['id']}", headers=headers)
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "The API key has been revoked."
    again = client.delete(f"/projects/{project['id']}/keys/{created['id']}")
    assert again.status_code == 404


def test_an_expired_key_is_refused_and_a_key_cannot_expire_in_the_past(
    client: httpx.Client, project: dict, database: Database, make_prompt
) -> None:
    prompt = make_prompt()
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    response = client.post(
        f"/projects/{project['id']}/keys",
        json={"name": "old", "role": "viewer", "expires_at": past},
    )
    assert response.status_code == 422
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    created = client.post(
        f"/projects/{project['id']}/keys",
        json={"name": "temp", "role": "viewer", "expires_at": soon},
    ).json()
    database.api_keys.update_one(
        {}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}}
    )
    refused = client.get(f"/prompts/{prompt['id']}", headers=bearer(created["key"]))
    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "The API key has expired."


def test_another_projects_resources_look_exactly_like_missing_ones(
    client: httpx.Client, project: dict, key_headers, make_prompt
) -> None:
    prompt = make_prompt()
    other = client.post("/projects", json={"name": "Elsewhere"}).json()
    outsider = key_headers(other, "owner")
    missing = "6b0731e5942f52642075caa9"
    for path, absent in (
        (f"/prompts/{prompt['id']}", f"/prompts/{missing}"),
        (f"/projects/{project['id']}", f"/projects/{missing}"),
    ):
        seen = client.get(path, headers=outsider)
        unknown = client.get(absent, headers=outsider)
        assert seen.status_code == unknown.status_code == 404
        assert seen.json()["error"]["code"] == unknown.json()["error"]["code"]
        assert "politely" not in seen.text
    moved = client.put(
        f"/prompts/{prompt['id']}/labels/production", json={"version": 1}, headers=outsider
    )
    assert moved.status_code == 404
    deleted = client.delete(f"/projects/{project['id']}?cascade=true", headers=outsider)
    assert deleted.status_code == 404
    assert client.get(f"/prompts/{prompt['id']}").json()["labels"] == prompt["labels"]


def test_lists_show_only_the_callers_projects(
    client: httpx.Client, project: dict, key_headers, make_prompt
) -> None:
    make_prompt(name="ours")
    other = client.post("/projects", json={"name": "Elsewhere"}).json()
    client.post(
        "/prompts",
        json={"project_id": other["id"], "name": "theirs", "type": "text", "template": "x"},
    )
    viewer = key_headers(project, "viewer")
    names = [item["name"] for item in client.get("/prompts", headers=viewer).json()["items"]]
    assert names == ["ours"]
    projects = client.get("/projects", headers=viewer).json()["items"]
    assert [item["id"] for item in projects] == [project["id"]]
    asked = client.get("/prompts", params={"project_id": other["id"]}, headers=viewer)
    assert asked.status_code == 404
    assert len(client.get("/prompts").json()["items"]) == 2  # the admin sees both


def test_roles_allow_what_their_table_says(
    client: httpx.Client, project: dict, key_headers, make_prompt
) -> None:
    prompt = make_prompt(labels=["staging"])
    path = f"/prompts/{prompt['id']}"
    viewer, runner = key_headers(project, "viewer"), key_headers(project, "runner")
    editor, owner = key_headers(project, "editor"), key_headers(project, "owner")
    run = {"prompt_id": prompt["id"], "variables": {"question": "why?"}}
    assert client.get(path, headers=viewer).status_code == 200
    assert client.get(f"{path}/versions", headers=viewer).status_code == 200
    assert client.post("/executions", json=run, headers=viewer).status_code == 403
    assert client.post("/executions", json=run, headers=runner).status_code == 201
    assert client.get(path, headers=runner).status_code == 200
    refused = client.get("/executions", params={"prompt_id": prompt["id"]}, headers=runner)
    assert refused.status_code == 403
    assert refused.json()["error"] == {
        "code": "forbidden",
        "message": "Your role in this project (runner) does not allow this.",
        "details": {"role": "runner", "permission": "read"},
    }
    assert client.put(path, json={"category": "x"}, headers=runner).status_code == 403
    assert client.put(path, json={"category": "x"}, headers=editor).status_code == 200
    staging = f"{path}/labels/staging"
    assert client.put(staging, json={"version": 1}, headers=editor).status_code == 200
    keys = f"/projects/{project['id']}/keys"
    assert client.get(keys, headers=editor).status_code == 403
    assert client.get(keys, headers=owner).status_code == 200
    assert client.delete(path, headers=editor).status_code == 403
    assert client.delete(path, headers=owner).status_code == 204


def test_a_project_key_cannot_create_projects(
    client: httpx.Client, project: dict, key_headers
) -> None:
    response = client.post(
        "/projects", json={"name": "Mine"}, headers=key_headers(project, "owner")
    )
    assert response.status_code == 403


def test_a_user_who_creates_a_project_owns_it_and_shares_it_by_role(
    client: httpx.Client, user_headers
) -> None:
    alice = user_headers("alice", name="Alice", email="alice@example.com")
    bob = user_headers("bob", name="Bob")
    created = client.post("/projects", json={"name": "Alice's"}, headers=alice)
    assert created.status_code == 201
    project_id = created.json()["id"]
    assert client.get(f"/projects/{project_id}", headers=bob).status_code == 404
    assert client.get("/projects", headers=bob).json()["items"] == []
    added = client.put(
        f"/projects/{project_id}/members/bob", json={"role": "viewer"}, headers=alice
    )
    assert added.status_code == 200
    assert client.get(f"/projects/{project_id}", headers=bob).status_code == 200
    assert client.put(f"/projects/{project_id}", json={"name": "x"}, headers=bob).status_code == 403
    members = client.get(f"/projects/{project_id}/members", headers=bob).json()["items"]
    assert [(m["user_id"], m["role"], m["name"]) for m in members] == [
        ("alice", "owner", "Alice"),
        ("bob", "viewer", "Bob"),
    ]
    assert members[0]["email"] == "alice@example.com"


def test_the_last_owner_can_be_neither_removed_nor_demoted(
    client: httpx.Client, user_headers
) -> None:
    alice = user_headers("alice")
    project_id = client.post("/projects", json={"name": "Solo"}, headers=alice).json()["id"]
    members = f"/projects/{project_id}/members"
    assert client.delete(f"{members}/alice", headers=alice).status_code == 409
    demoted = client.put(f"{members}/alice", json={"role": "editor"}, headers=alice)
    assert demoted.status_code == 409 and demoted.json()["error"]["code"] == "last_owner"
    assert client.put(f"{members}/carol", json={"role": "owner"}, headers=alice).status_code == 200
    assert client.delete(f"{members}/alice", headers=alice).status_code == 204
    assert client.get(f"/projects/{project_id}", headers=alice).status_code == 404
    assert client.delete(f"{members}/nobody").status_code == 404


def test_project_creators_restricts_who_may_create_projects(
    client: httpx.Client, user_headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, PROJECT_CREATORS="alice")
    assert (
        client.post("/projects", json={"name": "A"}, headers=user_headers("alice")).status_code
        == 201
    )
    assert (
        client.post("/projects", json={"name": "B"}, headers=user_headers("bob")).status_code == 403
    )
    assert client.post("/projects", json={"name": "C"}).status_code == 201  # the admin key


def test_tokens_that_are_expired_foreign_or_for_another_audience_are_401(
    client: httpx.Client, oidc: FakeOidcIssuer
) -> None:
    with FakeOidcIssuer() as stranger:
        tokens = {
            "expired": oidc.mint("alice", expires_in_s=-60),
            "foreign": stranger.mint("alice"),
            "audience": oidc.mint("alice", audience="another-app"),
            "tampered": oidc.mint("alice")[:-4] + "AAAA",
        }
        for case, token in tokens.items():
            response = client.get("/projects", headers=bearer(token))
            assert response.status_code == 401, case
            assert response.headers["WWW-Authenticate"].startswith("Bearer"), case
    expired = client.get("/projects", headers=bearer(tokens["expired"]))
    assert expired.json()["error"]["message"] == "The access token has expired."


def test_the_signing_keys_are_fetched_once_not_per_request(
    client: httpx.Client, oidc: FakeOidcIssuer, user_headers
) -> None:
    client.get("/projects", headers=user_headers("alice"))
    fetched = oidc.jwks_requests
    for _ in range(5):
        assert client.get("/projects", headers=user_headers("alice")).status_code == 200
    assert oidc.jwks_requests == fetched


def test_tokens_are_refused_when_no_provider_is_configured(
    client: httpx.Client, user_headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = user_headers("alice")
    monkeypatch.delenv("OIDC_ISSUER")
    configure(monkeypatch)
    assert client.get("/projects", headers=headers).status_code == 401


def test_an_unreachable_identity_provider_is_a_503_not_a_401(
    client: httpx.Client, user_headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, OIDC_JWKS_URL=f"http://127.0.0.1:{free_port()}/jwks.json")
    response = client.get("/projects", headers=user_headers("alice"))
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "identity_provider_unavailable"


def test_deleting_a_project_forgets_its_keys_members_and_usage(
    client: httpx.Client, project: dict, key_headers, user_headers, make_prompt, database: Database
) -> None:
    prompt = make_prompt()
    runner = key_headers(project, "runner")
    run = {"prompt_id": prompt["id"], "variables": {"question": "why?"}}
    assert client.post("/executions", json=run, headers=runner).status_code == 201
    members = f"/projects/{project['id']}/members"
    assert client.put(f"{members}/dora", json={"role": "viewer"}).status_code == 200
    assert database.usage_ledger.count_documents({}) > 0
    assert client.delete(f"/projects/{project['id']}?cascade=true").status_code == 204
    for collection in ("api_keys", "members", "usage_ledger"):
        assert database[collection].count_documents({}) == 0, collection
    assert client.get("/prompts", headers=user_headers("dora")).json()["items"] == []


def test_keys_and_members_need_a_project_that_exists_even_for_the_admin_key(
    client: httpx.Client, database: Database
) -> None:
    missing = "/projects/6b0731e5942f52642075caa9"
    assert client.post(f"{missing}/keys", json={"name": "n", "role": "viewer"}).status_code == 404
    assert client.get(f"{missing}/keys").status_code == 404
    assert client.put(f"{missing}/members/alice", json={"role": "owner"}).status_code == 404
    assert client.get(f"{missing}/members").status_code == 404
    assert database.api_keys.count_documents({}) == database.members.count_documents({}) == 0


def test_an_expiry_without_a_time_zone_is_refused(client: httpx.Client, project: dict) -> None:
    body = {"name": "n", "role": "viewer", "expires_at": "2031-01-01T00:00:00"}
    response = client.post(f"/projects/{project['id']}/keys", json=body)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["loc"] == ["body", "expires_at"]


def test_two_owners_demoting_each_other_at_once_leave_an_owner(
    client: httpx.Client, user_headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both demotions pass the last-owner check before either writes: the second one to land
    is undone (409), so the project keeps an owner."""
    alice = user_headers("alice")
    project_id = client.post("/projects", json={"name": "Pair"}, headers=alice).json()["id"]
    members = f"/projects/{project_id}/members"
    assert client.put(f"{members}/bob", json={"role": "owner"}).status_code == 200
    checked = AccessService._refuse_last_owner

    def bob_demoted_meanwhile(
        service: AccessService, project_id: str, issuer: str, user_id: str
    ) -> bool:
        was_owner = checked(service, project_id, issuer, user_id)
        service.members.put(project_id, issuer, "bob", Role.VIEWER)
        return was_owner

    monkeypatch.setattr(AccessService, "_refuse_last_owner", bob_demoted_meanwhile)
    response = client.put(f"{members}/alice", json={"role": "viewer"})
    assert response.status_code == 409
    assert response.json()["error"]["code"] == "last_owner"
    roles = {m["user_id"]: m["role"] for m in client.get(members).json()["items"]}
    assert roles == {"alice": "owner", "bob": "viewer"}
