"""What the newcomer reaches for first: a prompt fetched by its name, and a run previewed
(`POST /prompts/{id}/render`) exactly as `POST /executions` would send it, without running it."""

from urllib.parse import quote

import httpx
import pytest
from pymongo.database import Database

from devtools.fake_deepseek import FakeDeepSeek
from shared.settings import get_settings

CHAT = [
    {"role": "system", "content": "You are a {{tone}} support agent."},
    {"role": "user", "content": "{{question}}"},
]


def by_name(name: str) -> str:
    return f"/prompts/by-name/{quote(name, safe='')}"


def error_of(response: httpx.Response) -> dict:
    return response.json()["error"]


@pytest.fixture
def other_project(client: httpx.Client) -> dict:
    response = client.post("/projects", json={"name": "Elsewhere"})
    assert response.status_code == 201, response.text
    return response.json()


# --- by name ---------------------------------------------------------------------------------


def test_by_name_answers_exactly_as_by_id(client: httpx.Client, project: dict, make_prompt) -> None:
    prompt = make_prompt(name="refund-answer", labels=["production"])
    client.put(f"/prompts/{prompt['id']}", json={"template": "Second {{question}}"})
    scope = {"project_id": project["id"]}
    for selector in ({}, {"label": "production"}, {"label": "latest"}, {"version": 2}):
        named = client.get(by_name("refund-answer"), params={**scope, **selector})
        direct = client.get(f"/prompts/{prompt['id']}", params=selector)
        assert named.status_code == direct.status_code == 200, named.text
        assert named.json() == direct.json()
        assert named.headers["ETag"] == direct.headers["ETag"]
        assert named.headers["Cache-Control"] == "no-cache"
    production = client.get(by_name("refund-answer"), params={**scope, "label": "production"})
    assert production.json()["version"]["version"] == 1
    etag = client.get(f"/prompts/{prompt['id']}", params={"label": "production"}).headers["ETag"]
    cached = client.get(
        by_name("refund-answer"),
        params={**scope, "label": "production"},
        headers={"If-None-Match": etag},
    )
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["ETag"] == etag
    for selector, status in (({"version": 3}, 404), ({"label": "staging"}, 404)):
        response = client.get(by_name("refund-answer"), params={**scope, **selector})
        assert response.status_code == status, selector
    both = client.get(by_name("refund-answer"), params={**scope, "version": 1, "label": "latest"})
    assert both.status_code == 422


def test_a_project_key_implies_its_project(
    client: httpx.Client, project: dict, make_prompt, key_headers
) -> None:
    prompt = make_prompt(name="refund-answer", labels=["production"])
    runner = key_headers(project, "runner")
    implied = client.get(by_name("refund-answer"), params={"label": "production"}, headers=runner)
    assert implied.status_code == 200, implied.text
    assert implied.json() == client.get(f"/prompts/{prompt['id']}").json()
    named = client.get(
        by_name("refund-answer"), params={"project_id": project["id"]}, headers=runner
    )
    assert named.status_code == 200


def test_others_must_name_the_project(
    client: httpx.Client, project: dict, make_prompt, user_headers
) -> None:
    """The admin key and users can be in many projects: without `project_id`, a clear 422."""
    make_prompt(name="refund-answer")
    client.put(f"/projects/{project['id']}/members/alice", json={"role": "viewer"})
    alice = user_headers("alice")
    for headers in ({}, alice):
        response = client.get(by_name("refund-answer"), headers=headers)
        assert response.status_code == 422, response.text
        assert error_of(response)["details"][0]["loc"] == ["query", "project_id"]
        assert "project_id" in error_of(response)["message"]
    member = client.get(
        by_name("refund-answer"), params={"project_id": project["id"]}, headers=alice
    )
    assert member.status_code == 200


def test_a_name_of_another_project_is_missing(
    client: httpx.Client,
    project: dict,
    other_project: dict,
    make_prompt,
    key_headers,
    user_headers,
) -> None:
    """Another project's prompt by name answers as a name nobody uses, whoever asks and however
    the project is named (implied by a key, or given): nothing tells that it exists."""
    secret = {"project_id": other_project["id"], "type": "text", "template": "Hidden"}
    assert client.post("/prompts", json={**secret, "name": "theirs"}).status_code == 201
    make_prompt(name="ours")
    runner = key_headers(project, "runner")
    client.put(f"/projects/{project['id']}/members/alice", json={"role": "owner"})
    alice = user_headers("alice")
    ours, theirs = {"project_id": project["id"]}, {"project_id": other_project["id"]}
    for headers, params in ((runner, {}), (runner, ours), (runner, theirs), (alice, theirs)):
        named = client.get(by_name("theirs"), params=params, headers=headers)
        unknown = client.get(by_name("unused"), params=params, headers=headers)
        assert named.status_code == unknown.status_code == 404, named.text
        assert named.text == unknown.text.replace("unused", "theirs")
        assert "Hidden" not in named.text
    # The admin key reaches every project: a name is looked up in the project it names.
    missing = client.get(by_name("theirs"), params=ours)
    assert missing.status_code == 404
    assert error_of(missing)["details"] == {"kind": "prompt", "id": "theirs"}
    assert client.get(by_name("theirs"), params=theirs).status_code == 200
    assert client.get(by_name("ours"), headers=runner).status_code == 200


@pytest.mark.parametrize(
    "name",
    [
        "Refund answer",
        "réponse remboursement ✓",
        "客服 回答",
        "support/refunds",
        "versions",
        "gates",
        "render",
        "by-name",
        "a?b#c%d",
    ],
)
def test_names_with_spaces_unicode_and_route_words(
    client: httpx.Client, project: dict, make_prompt, name: str
) -> None:
    """Names arrive URL-encoded and are matched exactly; `/` is sent as `%2F`; names that are
    also route words (`versions`, `gates`) are still names under `/by-name/`."""
    prompt = make_prompt(name=name)
    response = client.get(by_name(name), params={"project_id": project["id"]})
    assert response.status_code == 200, response.text
    assert response.json()["id"] == prompt["id"]
    assert response.json()["name"] == name


# --- render preview ----------------------------------------------------------------------------


def render(client: httpx.Client, prompt: dict, **body: object) -> httpx.Response:
    return client.post(f"/prompts/{prompt['id']}/render", json=body)


def execute(client: httpx.Client, prompt: dict, **body: object) -> dict:
    response = client.post("/executions", json={"prompt_id": prompt["id"], **body})
    assert response.status_code == 201, response.text
    return response.json()


def assert_sends_what_a_run_sends(
    client: httpx.Client, fake_deepseek: FakeDeepSeek, prompt: dict, **body: object
) -> dict:
    """The preview of these fields equals the record of a run with them and DeepSeek's request."""
    preview = render(client, prompt, **body)
    assert preview.status_code == 200, preview.text
    shown = preview.json()
    record = execute(client, prompt, **body)
    for field in ("prompt_id", "prompt_version", "label", "model", "params", "messages"):
        assert shown[field] == record[field], field
    sent = fake_deepseek.chat_requests()[-1].body
    assert sent["model"] == shown["model"]
    assert sent["messages"] == shown["messages"]
    for key, value in shown["params"].items():
        assert sent[key] == value, key
    return shown


def test_render_a_text_prompt_as_a_run_sends_it(
    client: httpx.Client, make_prompt, fake_deepseek: FakeDeepSeek
) -> None:
    prompt = make_prompt(template="Answer {{question}} politely.", labels=["production"])
    shown = assert_sends_what_a_run_sends(
        client, fake_deepseek, prompt, variables={"question": "why"}
    )
    assert shown == {
        "prompt_id": prompt["id"],
        "prompt_version": 1,
        "label": "production",
        "model": get_settings().deepseek_model,
        "params": {"max_tokens": 8192},
        "messages": [{"role": "user", "content": "Answer why politely."}],
        "variables": {"used": ["question"], "filled": ["question"], "missing": [], "unused": []},
    }
    with_input = assert_sends_what_a_run_sends(
        client, fake_deepseek, prompt, variables={"question": "why"}, input="Where is it?"
    )
    assert with_input["messages"] == [
        {"role": "system", "content": "Answer why politely."},
        {"role": "user", "content": "Where is it?"},
    ]


def test_render_a_chat_prompt_with_input_and_history(
    client: httpx.Client, make_prompt, fake_deepseek: FakeDeepSeek
) -> None:
    prompt = make_prompt(
        type="chat",
        template=None,
        messages=[
            {"role": "system", "content": "You are a {{tone}} agent."},
            {"role": "user", "content": "Question: {{input}}"},
        ],
        config={"model": "deepseek-v4-flash", "temperature": 0.3},
    )
    history = [
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi, how can I help?"},
    ]
    shown = assert_sends_what_a_run_sends(
        client,
        fake_deepseek,
        prompt,
        variables={"tone": "calm"},
        input="Where is my refund?",
        history=history,
    )
    assert shown["model"] == "deepseek-v4-flash"
    assert shown["params"] == {"temperature": 0.3, "max_tokens": 8192}
    assert shown["label"] == "latest"
    assert shown["messages"] == [
        {"role": "system", "content": "You are a calm agent."},
        *history,
        {"role": "user", "content": "Question: Where is my refund?"},
    ]
    assert shown["variables"] == {
        "used": ["tone", "input"],
        "filled": ["tone", "input"],
        "missing": [],
        "unused": [],
    }


def test_render_chooses_the_version_a_run_would(client: httpx.Client, make_prompt) -> None:
    """Neither version nor label: production, else the latest; or the one named."""
    prompt = make_prompt(template="First {{question}}", labels=["staging"])
    client.put(f"/prompts/{prompt['id']}", json={"template": "Second {{question}}"})
    variables = {"question": "q"}

    def rendered(**body: object) -> tuple[int, str | None, str]:
        shown = render(client, prompt, variables=variables, **body).json()
        return shown["prompt_version"], shown["label"], shown["messages"][0]["content"]

    assert rendered() == (2, "latest", "Second q")
    assert rendered(label="staging") == (1, "staging", "First q")
    assert rendered(version=1) == (1, None, "First q")
    client.put(f"/prompts/{prompt['id']}/labels/production", json={"version": 1})
    assert rendered() == (1, "production", "First q")
    assert render(client, prompt, version=3).status_code == 404
    assert render(client, prompt, label="nope").status_code == 404
    assert render(client, prompt, version=1, label="staging").status_code == 422


def test_render_applies_the_config_override_and_the_projects_cap(
    client: httpx.Client, project: dict, make_prompt, fake_deepseek: FakeDeepSeek
) -> None:
    limits = {"limits": {"max_output_tokens": 100}}
    assert client.put(f"/projects/{project['id']}", json=limits).status_code == 200
    prompt = make_prompt(config={"model": "deepseek-v4-flash", "temperature": 0.3})
    variables = {"question": "q"}
    capped = render(client, prompt, variables=variables).json()
    assert capped["params"] == {"temperature": 0.3, "max_tokens": 100}
    override = {"temperature": None, "top_p": 0.5, "max_tokens": 60, "model": "deepseek-chat"}
    shown = assert_sends_what_a_run_sends(
        client, fake_deepseek, prompt, variables=variables, config=override
    )
    assert shown["model"] == "deepseek-chat"
    assert shown["params"] == {"top_p": 0.5, "max_tokens": 60}
    too_many = render(client, prompt, variables=variables, config={"max_tokens": 101})
    assert too_many.status_code == 422
    assert error_of(too_many)["details"][0]["loc"] == ["body", "config", "max_tokens"]
    refused = client.post(
        "/executions",
        json={"prompt_id": prompt["id"], "variables": variables, "config": {"max_tokens": 101}},
    )
    assert (refused.status_code, error_of(refused)) == (422, error_of(too_many))
    assert render(client, prompt, config={"temperature": 9}).status_code == 422


def test_missing_variables_are_listed_and_kept_as_written(
    client: httpx.Client, make_prompt
) -> None:
    prompt = make_prompt(template="Hi {{ name }}, about {{topic}}: {{input}} \\{{literal}}")
    response = render(client, prompt, variables={"topic": "refunds", "extra": 1})
    assert response.status_code == 200, response.text
    shown = response.json()
    assert shown["messages"] == [
        {"role": "user", "content": "Hi {{ name }}, about refunds: {{input}} {{literal}}"}
    ]
    assert shown["variables"] == {
        "used": ["name", "topic", "input"],
        "filled": ["topic"],
        "missing": ["name", "input"],
        "unused": ["extra"],
    }
    filled = render(client, prompt, variables={"name": {"first": "Ada"}}, input="Help").json()
    assert filled["messages"][0]["content"].startswith('Hi {"first": "Ada"}, about {{topic}}: Help')
    assert filled["variables"]["missing"] == ["topic"]
    # A run refuses what the preview shows: its 422 names every missing variable.
    run = client.post(
        "/executions", json={"prompt_id": prompt["id"], "variables": {"topic": "refunds"}}
    )
    assert run.status_code == 422
    assert error_of(run)["details"] == {"missing": ["name", "input"]}


def test_render_of_another_projects_prompt_is_missing(
    client: httpx.Client, project: dict, other_project: dict, make_prompt, key_headers
) -> None:
    prompt = make_prompt()
    body = {"variables": {"question": "q"}}
    outsider = key_headers(other_project, "owner")
    named = client.post(f"/prompts/{prompt['id']}/render", json=body, headers=outsider)
    absent = client.post("/prompts/6b0731e5942f52642075caa9/render", json=body, headers=outsider)
    assert named.status_code == absent.status_code == 404
    assert error_of(named)["code"] == error_of(absent)["code"] == "not_found"
    runner = key_headers(project, "runner")
    allowed = client.post(f"/prompts/{prompt['id']}/render", json=body, headers=runner)
    assert allowed.status_code == 200, allowed.text


def test_render_calls_nothing_stores_nothing_and_is_not_metered(
    client: httpx.Client,
    project: dict,
    make_prompt,
    key_headers,
    database: Database,
    fake_deepseek: FakeDeepSeek,
) -> None:
    """No DeepSeek call, no execution record, no usage: a spent budget and a one-a-minute rate
    limit refuse runs, never previews."""
    prompt = make_prompt()
    runner = key_headers(project, "runner")
    limits = {"limits": {"monthly_budget_usd": 0, "requests_per_minute": 1}}
    assert client.put(f"/projects/{project['id']}", json=limits).status_code == 200
    fake_deepseek.clear()
    stored = {name: database[name].count_documents({}) for name in database.list_collection_names()}
    for _ in range(3):
        response = client.post(
            f"/prompts/{prompt['id']}/render", json={"variables": {"question": "q"}}, headers=runner
        )
        assert response.status_code == 200, response.text
    after = {name: database[name].count_documents({}) for name in database.list_collection_names()}
    assert after == stored
    assert database.executions.count_documents({}) == 0
    assert fake_deepseek.chat_requests() == []
    run = client.post(
        "/executions",
        json={"prompt_id": prompt["id"], "variables": {"question": "q"}},
        headers=runner,
    )
    assert run.status_code == 402


def test_a_name_ending_in_a_slash_is_not_taken_for_another(
    client: httpx.Client, project: dict, make_prompt
) -> None:
    plain, slashed = make_prompt(name="refunds"), make_prompt(name="refunds/")
    for prompt in (plain, slashed):
        response = client.get(by_name(prompt["name"]), params={"project_id": project["id"]})
        assert response.json()["id"] == prompt["id"]
