"""The isolation matrix: every route of every function, called with every kind of credential,
answers what the access rules say, and a call that is refused changes nothing stored.

The example table names one valid request per route against a seeded project. The refused
combinations (401, 403, 404) all run on one seed, each compared with the database as it was
before; the allowed ones run per credential on a fresh seed, deleting routes last (the deepest
paths first, the project itself at the very end), and must answer the route's own status.
Both queues are stand-ins that take events and deliver nothing, so no call leaves work running
behind the test's back.
"""

import json
import logging
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, get_args

import httpx
import pytest
from bson import ObjectId
from pydantic import SecretStr
from pymongo.database import Database

from devtools.fake_deepseek import FakeDeepSeek
from devtools.fake_oidc import FakeOidcIssuer
from devtools.gateway import function_names, load_router
from shared.access.models import ROLES_WITH, Permission, Role
from shared.access.policy import Access, AccessKind, callers_project
from shared.http.routing import Route
from shared.projects.service import ProjectService
from shared.queues.signatures import SIGNATURE_HEADER, sign_data
from shared.settings import get_settings
from tests.conftest import TEST_ADMIN_KEY, TEST_SIGNING_KEY, bearer, configure
from tests.test_dead_letters import post_dead_turn
from tests.test_executions import fake
from tests.test_history_publishers import StubGateway
from tests.test_history_writer import make_turn

MISSING_ID = "6b0731e5942f52642075caa9"
# The seeded prompt's name, as a model name or a by-name lookup gives it.
PROMPT_NAME = "seeded-prompt"
# Written into every seeded resource: a refused call's answer never carries it.
MARK = "seeded-isolation-mark"
OBJECT_ID = re.compile(r"\b[0-9a-f]{24}\b")
# What a read may change: when a key was last used. `users` holds the display claims a
# sign-in stores, whatever the call then turns out to be.
CHANGED_BY_READS = {"api_keys": {"last_used_at"}}
SKIPPED_COLLECTIONS = {"users"}

RouteKey = tuple[str, str, str]  # function, method, path


@dataclass
class Seed:
    """A project with one of everything, and the ids a route's path parameters name."""

    project: str
    prompt: str
    prompt_name: str
    dataset: str
    spare_dataset: str
    case: str
    dialog: str
    execution: str
    evaluation: str
    spare_key: str
    other_project: str
    dead_letter: str

    def path_values(self) -> dict[str, str]:
        return {
            "project_id": self.project,
            "prompt_id": self.prompt,
            "name": self.prompt_name,
            "model": f"{self.prompt_name}@staging",
            "dataset_id": self.dataset,
            "case_id": self.case,
            "dialog_id": self.dialog,
            "execution_id": self.execution,
            "evaluation_id": self.evaluation,
            "key_id": self.spare_key,
            "dead_letter_id": self.dead_letter,
            "user_id": "carol",
            "label": "staging",
            "number": "1",
        }

    def ids(self) -> list[str]:
        """Every id and name a request may give of the seed."""
        return list(vars(self).values())


@dataclass
class Call:
    """A request beyond the seed's path values: other path values, a query and a JSON body."""

    path: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] | None = None
    json: Any = None


@dataclass(frozen=True)
class Example:
    # What the caller's role must allow there (None: any signed-in caller may call it); the
    # route must declare the same, so changing who may call a route is changed here too.
    permission: Permission | None
    build: Callable[[Seed], Call] = lambda seeded: Call()
    # Project API keys work only inside their project: they are refused this whatever their role.
    keys_refused: bool = False
    # Only the operators' admin key may: every other caller is refused (403).
    admin_only: bool = False
    # For apps: only a project key whose role has the permission, acting in the key's own
    # project; the admin key and users' tokens are refused (403). Another project's key names
    # the seeded prompt in its own project, where it looks missing (404)...
    key_only: bool = False
    # ...unless the route names nothing of the seed (the model list): then it is served its own
    # project's answer.
    any_projects_key: bool = False


# One valid request per route that needs a caller. A new route fails
# `test_every_route_has_an_example` until it is added here.
EXAMPLES: dict[RouteKey, Example] = {
    ("projects", "GET", "/"): Example(None),
    ("projects", "POST", "/"): Example(
        None, lambda s: Call(json={"name": "Another"}), keys_refused=True
    ),
    ("projects", "GET", "/{project_id}"): Example(Permission.READ),
    ("projects", "PUT", "/{project_id}"): Example(
        Permission.OWN, lambda s: Call(json={"description": "Changed"})
    ),
    ("projects", "DELETE", "/{project_id}"): Example(
        Permission.OWN, lambda s: Call(params={"cascade": "true"})
    ),
    ("projects", "GET", "/{project_id}/members"): Example(Permission.READ),
    ("projects", "PUT", "/{project_id}/members/{user_id}"): Example(
        Permission.OWN, lambda s: Call(path={"user_id": "dave"}, json={"role": "viewer"})
    ),
    ("projects", "DELETE", "/{project_id}/members/{user_id}"): Example(Permission.OWN),
    ("projects", "POST", "/{project_id}/keys"): Example(
        Permission.OWN, lambda s: Call(json={"name": "ci", "role": "viewer"})
    ),
    ("projects", "GET", "/{project_id}/keys"): Example(Permission.OWN),
    ("projects", "DELETE", "/{project_id}/keys/{key_id}"): Example(Permission.OWN),
    ("projects", "GET", "/{project_id}/usage"): Example(Permission.READ),
    ("prompts", "GET", "/"): Example(
        Permission.FETCH_PROMPTS, lambda s: Call(params={"project_id": s.project})
    ),
    ("prompts", "POST", "/"): Example(
        Permission.EDIT,
        lambda s: Call(
            json={"project_id": s.project, "name": "greeting", "type": "text", "template": "Hi"}
        ),
    ),
    ("prompts", "GET", "/{prompt_id}"): Example(
        Permission.FETCH_PROMPTS, lambda s: Call(params={"label": "staging"})
    ),
    # The project given; a project key may leave it out (tests/test_prompt_lookup.py).
    ("prompts", "GET", "/by-name/{name}"): Example(
        Permission.FETCH_PROMPTS,
        lambda s: Call(params={"project_id": s.project, "label": "staging"}),
    ),
    ("prompts", "POST", "/{prompt_id}/render"): Example(
        Permission.FETCH_PROMPTS, lambda s: Call(json={"variables": {"question": "why?"}})
    ),
    ("prompts", "PUT", "/{prompt_id}"): Example(
        Permission.EDIT, lambda s: Call(json={"template": "Say {{question}}"})
    ),
    ("prompts", "DELETE", "/{prompt_id}"): Example(Permission.OWN),
    ("prompts", "GET", "/{prompt_id}/versions"): Example(Permission.READ),
    ("prompts", "GET", "/{prompt_id}/versions/{number}"): Example(Permission.FETCH_PROMPTS),
    ("prompts", "GET", "/{prompt_id}/diff"): Example(
        Permission.READ, lambda s: Call(params={"from": 1, "to": 2})
    ),
    ("prompts", "PUT", "/{prompt_id}/labels/{label}"): Example(
        Permission.EDIT, lambda s: Call(json={"version": 2})
    ),
    ("prompts", "DELETE", "/{prompt_id}/labels/{label}"): Example(Permission.EDIT),
    ("prompts", "GET", "/{prompt_id}/labels/{label}/history"): Example(Permission.READ),
    ("prompts", "GET", "/{prompt_id}/gates"): Example(Permission.READ),
    ("prompts", "PUT", "/{prompt_id}/gates/{label}"): Example(
        Permission.OWN,
        lambda s: Call(
            path={"label": "release"}, json={"dataset_id": s.dataset, "min_pass_rate": 1}
        ),
    ),
    ("prompts", "DELETE", "/{prompt_id}/gates/{label}"): Example(
        Permission.OWN, lambda s: Call(path={"label": "release"})
    ),
    ("datasets", "GET", "/"): Example(
        Permission.READ, lambda s: Call(params={"project_id": s.project})
    ),
    ("datasets", "POST", "/"): Example(
        Permission.EDIT, lambda s: Call(json={"project_id": s.project, "name": "more"})
    ),
    ("datasets", "GET", "/{dataset_id}"): Example(Permission.READ),
    ("datasets", "PUT", "/{dataset_id}"): Example(
        Permission.EDIT, lambda s: Call(json={"description": "Changed"})
    ),
    # A dataset no gate relies on: an editor may not remove the gate first.
    ("datasets", "DELETE", "/{dataset_id}"): Example(
        Permission.EDIT, lambda s: Call(path={"dataset_id": s.spare_dataset})
    ),
    ("datasets", "POST", "/{dataset_id}/cases"): Example(
        Permission.EDIT, lambda s: Call(json=[{"variables": {"question": "how?"}}])
    ),
    ("datasets", "PUT", "/{dataset_id}/cases/{case_id}"): Example(
        Permission.EDIT, lambda s: Call(json={"expected": "Because."})
    ),
    ("datasets", "DELETE", "/{dataset_id}/cases/{case_id}"): Example(Permission.EDIT),
    ("dialogs", "GET", "/"): Example(
        Permission.READ_DIALOGS, lambda s: Call(params={"project_id": s.project})
    ),
    ("dialogs", "POST", "/"): Example(
        Permission.MANAGE_DIALOGS,
        lambda s: Call(json={"project_id": s.project, "prompt_id": s.prompt, "label": "staging"}),
    ),
    ("dialogs", "GET", "/{dialog_id}"): Example(Permission.READ_DIALOGS),
    ("dialogs", "PUT", "/{dialog_id}"): Example(
        Permission.MANAGE_DIALOGS, lambda s: Call(json={"title": "Renamed"})
    ),
    ("dialogs", "DELETE", "/{dialog_id}"): Example(Permission.MANAGE_DIALOGS),
    ("executions", "POST", "/"): Example(
        Permission.RUN,
        lambda s: Call(json={"prompt_id": s.prompt, "variables": {"question": "why?"}}),
    ),
    ("executions", "GET", "/"): Example(
        Permission.READ, lambda s: Call(params={"project_id": s.project})
    ),
    ("executions", "GET", "/stats"): Example(
        Permission.READ, lambda s: Call(params={"prompt_id": s.prompt})
    ),
    ("executions", "GET", "/{execution_id}"): Example(Permission.READ),
    ("evaluations", "POST", "/"): Example(
        Permission.EDIT,
        lambda s: Call(json={"prompt_id": s.prompt, "dataset_id": s.dataset, "targets": [{}]}),
    ),
    ("evaluations", "GET", "/"): Example(
        Permission.READ, lambda s: Call(params={"project_id": s.project})
    ),
    ("evaluations", "GET", "/{evaluation_id}"): Example(Permission.READ),
    # Before cancel: only a queued or running run can be resumed.
    ("evaluations", "POST", "/{evaluation_id}/resume"): Example(Permission.EDIT),
    ("evaluations", "POST", "/{evaluation_id}/cancel"): Example(Permission.EDIT),
    ("evaluations", "GET", "/{evaluation_id}/compare"): Example(Permission.READ),
    ("chat", "POST", "/"): Example(
        Permission.RUN,
        lambda s: Call(
            json={"dialog_id": s.dialog, "input": "Hello", "variables": {"question": "hi"}}
        ),
    ),
    # Dead letters hold every project's events: for operators only.
    ("dead-letters", "GET", "/"): Example(
        None,
        lambda s: Call(params={"type": "com.better-assistant.turn.completed"}),
        admin_only=True,
    ),
    ("dead-letters", "GET", "/{dead_letter_id}"): Example(None, admin_only=True),
    ("dead-letters", "POST", "/{dead_letter_id}/replay"): Example(None, admin_only=True),
    ("dead-letters", "DELETE", "/{dead_letter_id}"): Example(None, admin_only=True),
    # OpenAI's API, for apps: a prompt is named as a model (`name@label`), or by the Responses
    # API's retired `prompt` (here by name and version number).
    ("openai", "GET", "/v1/models"): Example(Permission.RUN, key_only=True, any_projects_key=True),
    ("openai", "GET", "/v1/models/{model}"): Example(Permission.RUN, key_only=True),
    ("openai", "POST", "/v1/chat/completions"): Example(
        Permission.RUN,
        lambda s: Call(
            json={
                "model": f"{s.prompt_name}@staging",
                "messages": [{"role": "user", "content": "Hello"}],
                "variables": {"question": "why?"},
            }
        ),
        key_only=True,
    ),
    ("openai", "POST", "/v1/responses"): Example(
        Permission.RUN,
        lambda s: Call(
            json={
                "prompt": {"id": s.prompt_name, "version": "1", "variables": {"question": "why?"}},
                "input": "Hello",
            }
        ),
        key_only=True,
    ),
}


def all_routes() -> dict[RouteKey, Route]:
    return {
        (name, route.method, route.path): route
        for name in function_names()
        for route in load_router(name).routes
    }


ROUTES = all_routes()


def url(key: RouteKey, values: dict[str, str]) -> str:
    function, _, path = key
    return f"/{function}{path.format(**values)}".rstrip("/")


# --- credentials ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Credential:
    name: str
    headers: dict[str, str]
    # None: not a caller we know (no credentials, or refused ones).
    role: Role | None = None
    in_seeded_project: bool = False
    is_key: bool = False
    is_admin: bool = False


CALLERS = [
    "the admin key",
    "another project's owner key",
    "a user of another project",
    *(f"{role} key" for role in Role),
    *(f"{role} user" for role in Role),
]


def expected_refusal(key: RouteKey, credential: Credential) -> int | None:
    """The status the rules give this call (401, 403 or 404); None when it is allowed."""
    example = EXAMPLES[key]
    if credential.role is None:
        return 401
    if example.admin_only:
        return None if credential.is_admin else 403
    if example.key_only:
        assert example.permission is not None
        if not credential.is_key or credential.role not in ROLES_WITH[example.permission]:
            return 403
        return None if credential.in_seeded_project or example.any_projects_key else 404
    if example.permission is None:
        return 403 if credential.is_key and example.keys_refused else None
    if not credential.in_seeded_project:
        return 404
    return None if credential.role in ROLES_WITH[example.permission] else 403


# --- seeding ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stranger() -> Iterator[FakeOidcIssuer]:
    """An OpenID Connect issuer this deployment does not trust."""
    with FakeOidcIssuer() as issuer:
        yield issuer


@pytest.fixture
def queues(monkeypatch: pytest.MonkeyPatch) -> Iterator[StubGateway]:
    """Both queues take every event and deliver none: chat turns and evaluation cells stay
    queued, so nothing writes behind a call's back."""
    with StubGateway([202]) as gateway:
        configure(
            monkeypatch,
            HISTORY_QUEUE="openfaas",
            HISTORY_QUEUE_URL=gateway.url,
            EVALUATION_QUEUE="openfaas",
            EVALUATION_QUEUE_URL=gateway.url,
        )
        yield gateway


@pytest.fixture
def anonymous(gateway_url: str) -> Iterator[httpx.Client]:
    """A client that sends no credentials of its own."""
    with httpx.Client(base_url=gateway_url, timeout=30) as http:
        yield http


def created(response: httpx.Response, status: int = 201) -> dict:
    assert response.status_code == status, response.text
    return response.json()


@pytest.fixture
def seeded(client: httpx.Client, queues: StubGateway) -> Seed:
    """A project holding a prompt (two versions, `staging` on v1, a gate on `release`), a
    dataset with a case and one without, a dialog, an execution, a queued evaluation run, a
    spare key and a member; and another project."""
    project = created(client.post("/projects", json={"name": "Seeded", "description": MARK}))
    pid = project["id"]
    prompt = created(
        client.post(
            "/prompts",
            json={
                "project_id": pid,
                "name": PROMPT_NAME,
                "type": "text",
                "template": f"Answer {{{{question}}}} ({MARK})",
                "labels": ["staging"],
            },
        )
    )
    template = f"Answer {{{{question}}}} briefly ({MARK})"
    created(client.put(f"/prompts/{prompt['id']}", json={"template": template}), 200)
    dataset = created(
        client.post(
            "/datasets",
            json={
                "project_id": pid,
                "name": "seeded",
                "description": MARK,
                "cases": [{"variables": {"question": MARK}}],
            },
        )
    )
    case = client.get(f"/datasets/{dataset['id']}").json()["cases"][0]
    spare_dataset = created(client.post("/datasets", json={"project_id": pid, "name": "spare"}))
    gate = {"dataset_id": dataset["id"], "min_pass_rate": 0.5}
    created(client.put(f"/prompts/{prompt['id']}/gates/release", json=gate), 200)
    dialog = created(
        client.post(
            "/dialogs",
            json={"project_id": pid, "prompt_id": prompt["id"], "label": "staging", "title": MARK},
        )
    )
    run = {"prompt_id": prompt["id"], "variables": {"question": MARK}}
    execution = created(client.post("/executions", json=run))
    evaluation = created(
        client.post(
            "/evaluations",
            json={
                "prompt_id": prompt["id"],
                "dataset_id": dataset["id"],
                "targets": [{"version": 1}, {"version": 2}],
            },
        ),
        202,
    )
    spare = created(client.post(f"/projects/{pid}/keys", json={"name": "spare", "role": "viewer"}))
    created(client.put(f"/projects/{pid}/members/carol", json={"role": "viewer"}), 200)
    other = created(client.post("/projects", json={"name": "Elsewhere"}))
    dead_turn = make_turn({"id": dialog["id"], "project_id": pid}, user_content=MARK)
    dead_letter = created(post_dead_turn(client, dead_turn), 200)
    return Seed(
        project=pid,
        prompt=prompt["id"],
        prompt_name=prompt["name"],
        dataset=dataset["id"],
        spare_dataset=spare_dataset["id"],
        case=case["id"],
        dialog=dialog["id"],
        execution=execution["id"],
        evaluation=evaluation["id"],
        spare_key=spare["id"],
        other_project=other["id"],
        dead_letter=dead_letter["id"],
    )


def new_key(client: httpx.Client, project_id: str, role: str, **fields: object) -> dict:
    body = {"name": f"{role} key", "role": role, **fields}
    return created(client.post(f"/projects/{project_id}/keys", json=body))


@pytest.fixture
def callers(
    client: httpx.Client,
    database: Database,
    seeded: Seed,
    oidc: FakeOidcIssuer,
    stranger: FakeOidcIssuer,
) -> dict[str, Credential]:
    """Every credential of the matrix, made for the seed (keys never used before the matrix,
    so none is cached)."""
    pid = seeded.project
    revoked = new_key(client, pid, "owner")
    assert client.delete(f"/projects/{pid}/keys/{revoked['id']}").status_code == 204
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    expired = new_key(client, pid, "owner", expires_at=soon)
    database.api_keys.update_one(
        {"_id": ObjectId(expired["id"])},
        {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}},
    )
    for role in Role:
        created(client.put(f"/projects/{pid}/members/{role}-user", json={"role": role}), 200)
    created(
        client.put(f"/projects/{seeded.other_project}/members/outsider", json={"role": "owner"}),
        200,
    )
    found = [
        Credential("the admin key", bearer(TEST_ADMIN_KEY), Role.OWNER, True, is_admin=True),
        Credential("no credentials", {}),
        Credential("revoked key", bearer(revoked["key"])),
        Credential("expired key", bearer(expired["key"])),
        Credential("expired token", bearer(oidc.mint("owner-user", expires_in_s=-60))),
        Credential("token of another issuer", bearer(stranger.mint("owner-user"))),
        Credential(
            "token for another audience", bearer(oidc.mint("owner-user", audience="elsewhere"))
        ),
        Credential(
            "another project's owner key",
            bearer(new_key(client, seeded.other_project, "owner")["key"]),
            role=Role.OWNER,
            is_key=True,
        ),
        Credential("a user of another project", bearer(oidc.mint("outsider")), role=Role.OWNER),
    ]
    for role in Role:
        key = new_key(client, pid, role)["key"]
        found.append(Credential(f"{role} key", bearer(key), role, True, is_key=True))
        found.append(Credential(f"{role} user", bearer(oidc.mint(f"{role}-user")), role, True))
    by_name = {credential.name: credential for credential in found}
    assert by_name.keys() >= set(CALLERS)
    return by_name


def snapshot(database: Database) -> dict[str, list[dict]]:
    """Every stored document, but for what a read legitimately changes."""
    state = {}
    for name in sorted(set(database.list_collection_names()) - SKIPPED_COLLECTIONS):
        ignored = CHANGED_BY_READS.get(name, set())
        documents = database[name].find({}, sort=[("_id", 1)])
        state[name] = [{k: v for k, v in doc.items() if k not in ignored} for doc in documents]
    return state


def send(
    http: httpx.Client, key: RouteKey, request: Call, seeded: Seed, headers: dict
) -> httpx.Response:
    values = {**seeded.path_values(), **request.path}
    return http.request(
        key[1], url(key, values), params=request.params, json=request.json, headers=headers
    )


def as_missing(request: Call, seeded: Seed) -> tuple[Call, Seed]:
    """The same call with every seeded id replaced by one that names nothing."""
    text = json.dumps([request.path, request.params, request.json])
    for identifier in seeded.ids():
        text = text.replace(identifier, MISSING_ID)
    path, params, body = json.loads(text)
    missing = Seed(**{name: MISSING_ID for name in Seed.__dataclass_fields__})
    return Call(path, params, body), missing


def error_of(response: httpx.Response, *names: str) -> dict:
    """The error as a client sees it, with ids blanked out, and the names given (a model name
    comes back in the message as the caller sent it) blanked as ids are."""
    text = json.dumps(response.json()["error"])
    for name in names:
        text = text.replace(name, MISSING_ID)
    return json.loads(OBJECT_ID.sub("<id>", text))


# The function that speaks OpenAI's API refuses in OpenAI's error shape and codes, which its
# SDKs turn into AuthenticationError, PermissionDeniedError and NotFoundError.
OPENAI_ERROR_FIELDS = {"message", "type", "param", "code"}
OPENAI_REFUSAL_CODES = {401: "invalid_api_key", 403: "permission_denied", 404: "model_not_found"}


def refusal_code(key: RouteKey, credential: Credential, status: int) -> str:
    """The error code the function answers a refusal with."""
    if key[0] == "openai":
        return OPENAI_REFUSAL_CODES[status]
    return {
        401: "unauthenticated" if not credential.headers else "invalid_credentials",
        403: "forbidden",
        404: "not_found",
    }[status]


def refusal_problems(
    key: RouteKey, credential: Credential, status: int, response: httpx.Response
) -> list[str]:
    """How a refused call's answer differs from what the rules say."""
    if response.status_code != status:
        return [f"{response.status_code} instead of {status}: {response.text[:300]}"]
    problems = []
    error = response.json()["error"]
    wanted = refusal_code(key, credential, status)
    if error["code"] != wanted:
        problems.append(f"code {error['code']}, not {wanted}")
    if key[0] == "openai" and error.keys() != OPENAI_ERROR_FIELDS:
        problems.append(f"not OpenAI's error shape: {sorted(error)}")
    if status == 401 and not response.headers.get("WWW-Authenticate", "").startswith("Bearer"):
        problems.append("no Bearer challenge")
    if MARK in response.text:
        problems.append("the answer carries the seeded data")
    return problems


def test_refused_calls_answer_by_the_rules_and_change_nothing(
    anonymous: httpx.Client,
    database: Database,
    seeded: Seed,
    callers: dict[str, Credential],
) -> None:
    """Every (route, credential) the rules refuse: 401 for no or bad credentials, 404 exactly
    as for a missing resource when the caller is not in the project, 403 for a role without
    the permission; the database is compared before and after each."""
    failures = []
    refusals: Counter[int] = Counter()
    stored = snapshot(database)
    for key, example in EXAMPLES.items():
        request = example.build(seeded)
        for credential in callers.values():
            status = expected_refusal(key, credential)
            if status is None:
                continue
            refusals[status] += 1
            response = send(anonymous, key, request, seeded, credential.headers)
            problems = refusal_problems(key, credential, status, response)
            if status == 404 and not problems:
                missing_request, missing = as_missing(request, seeded)
                absent = send(anonymous, key, missing_request, missing, credential.headers)
                named = error_of(response, seeded.prompt_name)
                if (absent.status_code, error_of(absent)) != (404, named):
                    problems.append(f"differs from a missing resource's {absent.text[:300]}")
            # Nothing changes between refused calls, so one's "after" is the next one's "before".
            before, stored = stored, snapshot(database)
            if stored != before:
                problems.append("the database changed")
            failures += [f"{' '.join(key)} with {credential.name}: {p}" for p in problems]
    assert not failures, "\n".join(failures)
    assert refusals.keys() == {401, 403, 404}


def in_allowed_order(keys: list[RouteKey]) -> list[RouteKey]:
    """Table order, deleting routes last: the deepest paths first, the project at the end."""

    def order(key: RouteKey) -> tuple[int, int]:
        function, method, path = key
        if method != "DELETE":
            return (0, 0)
        if (function, path) == ("projects", "/{project_id}"):
            return (2, 0)
        return (1, -path.count("/"))

    return sorted(keys, key=order)


@pytest.mark.parametrize("caller", CALLERS)
def test_allowed_calls_pass_access_and_succeed(
    anonymous: httpx.Client,
    seeded: Seed,
    callers: dict[str, Credential],
    caller: str,
) -> None:
    """Every route the rules let this caller call answers its own success status, on a seed of
    its own (deleting routes last, so each finds what it deletes)."""
    credential = callers[caller]
    allowed = [key for key in EXAMPLES if expected_refusal(key, credential) is None]
    failures = []
    for key in in_allowed_order(allowed):
        response = send(anonymous, key, EXAMPLES[key].build(seeded), seeded, credential.headers)
        if response.status_code != ROUTES[key].status:
            failures.append(f"{' '.join(key)}: {response.status_code} {response.text[:300]}")
    assert not failures, "\n".join(failures)
    assert allowed


# --- the route table -------------------------------------------------------------------------

# Open to anyone: health, readiness and the function's own OpenAPI document.
PUBLIC_ROUTES = {("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/openapi.json")}


def queued_cell(seeded: Seed, queues: StubGateway) -> Any:
    """A cell of the seeded run, as the evaluation queue was handed it."""
    cells = [json.loads(body) for _, _, body in queues.requests if b"cell_id" in body]
    return next(cell for cell in cells if cell["evaluation_id"] == seeded.evaluation)


def seeded_turn(seeded: Seed, queues: StubGateway) -> Any:
    return make_turn({"id": seeded.dialog, "project_id": seeded.project})


# The event each route that takes signed events takes, built for the seed.
SIGNED_EVENTS: dict[RouteKey, Callable[[Seed, StubGateway], Any]] = {
    ("evaluation-worker", "POST", "/"): queued_cell,
    ("history-writer", "POST", "/"): seeded_turn,
    ("dead-letters", "POST", "/"): seeded_turn,
}
# The CloudEvents attributes a route needs besides the signature (a dead letter's type and id).
EVENT_ATTRIBUTES: dict[RouteKey, Callable[[Any], dict[str, str]]] = {
    ("dead-letters", "POST", "/"): lambda turn: {
        "ce-id": turn["turn_id"],
        "ce-type": "com.better-assistant.turn.completed",
    },
}


def test_every_route_declares_who_may_call_it() -> None:
    """Only health, readiness and the function's document are open; only the queue-triggered
    functions take signed events; a project route names its permission and how its project is
    found, an app's route its permission in the calling key's own project."""
    for key, route in ROUTES.items():
        access = route.access
        assert isinstance(access, Access) and access.kind in get_args(AccessKind), key
        if access.kind == "project":
            assert access.permission in ROLES_WITH and access.locate is not None, key
        elif access.kind == "project_key":
            # The key's own project is the target: a request cannot name another.
            assert access.permission in ROLES_WITH and access.locate is callers_project, key
        else:
            assert access.permission is None and access.locate is None, key
        assert (access.kind == "public") == ((key[1], key[2]) in PUBLIC_ROUTES), key
    signed = {key for key, route in ROUTES.items() if route.access.kind == "signed_event"}
    assert signed == SIGNED_EVENTS.keys()


def test_every_route_has_an_example() -> None:
    """The matrix covers the route tables exactly: a new route needs an example here, and an
    example of a route that is gone is removed; who may call each is what the table says."""
    needs_caller = {key for key, route in ROUTES.items() if route.access.needs_caller}
    assert sorted(needs_caller - EXAMPLES.keys()) == [], "routes without an example"
    assert sorted(EXAMPLES.keys() - needs_caller) == [], "examples of no such route"
    for key, example in EXAMPLES.items():
        access = ROUTES[key].access
        kind = "admin" if example.admin_only else "signed_in"
        kind = kind if example.permission is None else "project"
        kind = "project_key" if example.key_only else kind
        assert (access.kind, access.permission) == (kind, example.permission), key


def test_health_readiness_and_documents_answer_without_credentials(anonymous: httpx.Client) -> None:
    public = [key for key, route in ROUTES.items() if route.access.kind == "public"]
    assert len(public) == len(PUBLIC_ROUTES) * len(function_names())
    for key in public:
        response = anonymous.get(url(key, {}))
        assert response.status_code == 200, (key, response.text)


@pytest.mark.parametrize("key", list(SIGNED_EVENTS), ids=lambda key: key[0])
def test_unsigned_and_forged_events_are_refused_and_write_nothing(
    anonymous: httpx.Client,
    database: Database,
    seeded: Seed,
    queues: StubGateway,
    key: RouteKey,
) -> None:
    """Through the gateway: no signature, another key's, a mangled one, or a bearer credential
    instead of a signature are all 401 and change nothing; the same event signed is taken."""
    event = SIGNED_EVENTS[key](seeded, queues)
    attributes = EVENT_ATTRIBUTES[key](event) if key in EVENT_ATTRIBUTES else {}
    signature = sign_data(event, get_settings().event_signing_keys)
    refusals = {
        "unsigned": {},
        "signed with another key": {SIGNATURE_HEADER: sign_data(event, [SecretStr("not-ours")])},
        "mangled": {SIGNATURE_HEADER: signature[::-1]},
        "admin key, no signature": bearer(TEST_ADMIN_KEY),
    }
    stored = snapshot(database)
    for case, headers in refusals.items():
        response = anonymous.post(url(key, {}), json=event, headers=attributes | headers)
        assert response.status_code == 401, (case, response.text)
        assert snapshot(database) == stored, case
    taken = anonymous.post(
        url(key, {}), json=event, headers=attributes | {SIGNATURE_HEADER: signature}
    )
    assert taken.status_code == 200, taken.text
    assert snapshot(database) != stored


# --- lists and references across projects ---------------------------------------------------


def test_lists_without_a_project_show_only_the_callers_projects(
    anonymous: httpx.Client,
    database: Database,
    seeded: Seed,
    callers: dict[str, Credential],
) -> None:
    lists = [key for key, e in EXAMPLES.items() if key[1:] == ("GET", "/") and not e.admin_only]
    for name in ("another project's owner key", "a user of another project"):
        for key in lists:
            response = anonymous.get(url(key, {}), headers=callers[name].headers)
            assert response.status_code in (200, 422), (name, key, response.text)
            if response.status_code == 200:
                assert seeded.project not in response.text and MARK not in response.text
    viewer = anonymous.get("/executions", headers=callers["viewer key"].headers)
    assert [item["id"] for item in viewer.json()["items"]] == [seeded.execution]


def test_the_model_list_is_the_calling_keys_project(
    client: httpx.Client, anonymous: httpx.Client, seeded: Seed, callers: dict[str, Credential]
) -> None:
    """OpenAI's model list names the prompts of the key's own project: the seeded prompt is
    listed to a key of the seeded project, never to another project's, which sees its own."""
    own = {"project_id": seeded.other_project, "name": "own", "type": "text", "template": "Hi"}
    created(client.post("/prompts", json=own))

    def models(caller: str) -> set[str]:
        response = anonymous.get("/v1/models", headers=callers[caller].headers)
        assert response.status_code == 200, response.text
        assert seeded.project not in response.text and MARK not in response.text
        return {model["id"] for model in response.json()["data"]}

    seeded_names = {seeded.prompt_name, f"{seeded.prompt_name}@staging"}
    assert seeded_names <= models("runner key") and "own" not in models("runner key")
    elsewhere = models("another project's owner key")
    assert "own" in elsewhere
    assert [name for name in elsewhere if name.partition("@")[0] == seeded.prompt_name] == []


def test_another_projects_resources_named_from_ones_own_look_missing(
    client: httpx.Client, anonymous: httpx.Client, database: Database, seeded: Seed
) -> None:
    """An owner of another project names the seeded prompt, dataset, case or key next to its
    own project's resources (in a body, or below its own resource in a path; the prompt by its
    id as OpenAI's model, too): the answer is the one a missing id gets, and nothing is stored."""
    theirs = seeded.other_project
    owner = bearer(new_key(client, theirs, "owner")["key"])
    prompt = {"project_id": theirs, "name": "own", "type": "text", "template": "{{question}}"}
    own_prompt = created(client.post("/prompts", json=prompt))["id"]
    own_dialog = created(client.post("/dialogs", json={"project_id": theirs}))["id"]
    own_dataset = created(client.post("/datasets", json={"project_id": theirs, "name": "own"}))
    cases = f"/datasets/{own_dataset['id']}/cases"
    calls = [
        ("POST", "/dialogs", {"project_id": theirs, "prompt_id": seeded.prompt}),
        ("PUT", f"/dialogs/{own_dialog}", {"prompt_id": seeded.prompt}),
        ("POST", "/chat", {"project_id": theirs, "prompt_id": seeded.prompt, "input": "Hi"}),
        (
            "POST",
            "/evaluations",
            {"prompt_id": own_prompt, "dataset_id": seeded.dataset, "targets": [{}]},
        ),
        (
            "PUT",
            f"/prompts/{own_prompt}/gates/release",
            {"dataset_id": seeded.dataset, "min_pass_rate": 0.5},
        ),
        ("PUT", f"{cases}/{seeded.case}", {"expected": "Changed"}),
        ("DELETE", f"{cases}/{seeded.case}", None),
        ("DELETE", f"/projects/{theirs}/keys/{seeded.spare_key}", None),
        ("GET", f"/v1/models/{seeded.prompt}", None),
        (
            "POST",
            "/v1/chat/completions",
            {"model": seeded.prompt, "messages": [{"role": "user", "content": "Hi"}]},
        ),
        ("POST", "/v1/responses", {"prompt": {"id": seeded.prompt, "version": "1"}}),
    ]
    stored = snapshot(database)
    for method, path, body in calls:
        named = anonymous.request(method, path, json=body, headers=owner)
        text = json.dumps([path, body])
        for identifier in (seeded.prompt, seeded.dataset, seeded.case, seeded.spare_key):
            text = text.replace(identifier, MISSING_ID)
        missing_path, missing_body = json.loads(text)
        absent = anonymous.request(method, missing_path, json=missing_body, headers=owner)
        assert named.status_code == absent.status_code == 404, (path, named.text)
        assert error_of(named) == error_of(absent), path
        assert snapshot(database) == stored, path


# --- secrets ---------------------------------------------------------------------------------

DEEPSEEK_SECRET = "sk-isolation-deepseek-secret"


def test_secrets_reach_neither_logs_nor_answers(
    client: httpx.Client,
    anonymous: httpx.Client,
    seeded: Seed,
    oidc: FakeOidcIssuer,
    fake_deepseek: FakeDeepSeek,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With every logger at DEBUG: calls with a key, the admin key and a token, succeeding and
    failing (401s, DeepSeek errors, a broken stream, an unexpected exception) log no key,
    token, signing key or DeepSeek key, and answer none back; a key is listed by its prefix."""
    configure(monkeypatch, DEEPSEEK_API_KEY=DEEPSEEK_SECRET)
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="better_assistant")
    issued = new_key(client, seeded.project, "owner")
    revoked = new_key(client, seeded.project, "owner")
    assert client.delete(f"/projects/{seeded.project}/keys/{revoked['id']}").status_code == 204
    member = client.put(f"/projects/{seeded.project}/members/owner-user", json={"role": "owner"})
    assert member.status_code == 200
    token, expired = oidc.mint("owner-user"), oidc.mint("owner-user", expires_in_s=-60)
    unknown_key = "ba_" + "x" * 43
    key, user, admin = bearer(issued["key"]), bearer(token), bearer(TEST_ADMIN_KEY)

    def execute(headers: dict[str, str], user_input: str, **fields: object) -> httpx.Response:
        body = {"prompt_id": seeded.prompt, "variables": {"question": "q"}, **fields}
        return anonymous.post("/executions", json={**body, "input": user_input}, headers=headers)

    def fail(*_: object) -> None:
        raise RuntimeError("the service failed")

    turn = {"dialog_id": seeded.dialog, "input": "Hi", "variables": {"question": "q"}}
    answers = [
        anonymous.get(f"/prompts/{seeded.prompt}", headers=key),
        execute(key, "Hello"),
        execute(user, fake(status=401)),
        execute(admin, fake(status=500)),
        execute(key, fake(cut_after_chunks=1, tokens=4), stream=True),
        anonymous.post("/chat", json=turn, headers=user),
        anonymous.get(f"/projects/{seeded.project}/keys", headers=admin),
        *(
            anonymous.get("/projects", headers=bearer(refused))
            for refused in (revoked["key"], expired, unknown_key, TEST_ADMIN_KEY + "x")
        ),
    ]
    monkeypatch.setattr(ProjectService, "get", fail)
    answers.append(anonymous.get(f"/projects/{seeded.project}", headers=key))

    sent = {record.headers.get("authorization") for record in fake_deepseek.chat_requests()}
    assert f"Bearer {DEEPSEEK_SECRET}" in sent  # the key was in use
    statuses = [answer.status_code for answer in answers]
    assert statuses == [200, 201, 502, 503, 200, 200, 200, 401, 401, 401, 401, 500]
    assert "unhandled error" in caplog.text and "the service failed" in caplog.text
    secrets = [issued["key"], revoked["key"], token, expired, unknown_key]
    for secret in [*secrets, TEST_ADMIN_KEY, TEST_SIGNING_KEY, DEEPSEEK_SECRET]:
        assert secret not in caplog.text
        for answer in answers:
            assert secret not in answer.text and secret not in str(answer.headers)
    listed = answers[6].json()["items"]
    assert issued["prefix"] in [item["prefix"] for item in listed]
