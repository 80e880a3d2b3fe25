"""Real components on loopback: SecantusDB (or TEST_MONGODB_URI), the dev gateway over HTTP."""

import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import PyMongoError

from devtools.embedded_mongo import EmbeddedMongo, free_port
from devtools.fake_deepseek import FakeDeepSeek, Scenario
from devtools.fake_oidc import FakeOidcIssuer
from devtools.gateway import build_gateway
from shared.settings import get_settings


def exit_unless_reachable(uri: str) -> None:
    """Stop the session at once, in one line, when the database at `uri` does not answer a
    ping: every test would otherwise wait for it and fail, one after the other."""
    # A timeout the URI sets itself is kept; the keyword would override it.
    timeout = (
        {} if "serverselectiontimeoutms=" in uri.lower() else {"serverSelectionTimeoutMS": 5000}
    )
    try:
        with MongoClient(uri, **timeout) as client:
            client.admin.command("ping")
    except PyMongoError as exc:
        shown = re.sub(r"//([^/@:]*):[^/@]*@", r"//\1:***@", uri)
        reason = str(exc).split(", Timeout: ")[0].splitlines()[0]
        pytest.exit(
            f"TEST_MONGODB_URI {shown} is unreachable: {reason}",
            returncode=pytest.ExitCode.USAGE_ERROR,
        )


@pytest.fixture(scope="session")
def mongo_uri() -> Iterator[str]:
    """A real MongoDB when TEST_MONGODB_URI is set, else an in-memory SecantusDB process."""
    external = os.environ.get("TEST_MONGODB_URI")
    if external:
        exit_unless_reachable(external)
        yield external
        return
    with EmbeddedMongo(":memory:") as server:
        yield server.uri


# Queue events are signed with it; the tests that play the queue sign with it too.
TEST_SIGNING_KEY = "test-signing-key"
# The operators' key every test client sends unless a test says otherwise.
TEST_ADMIN_KEY = "test-admin-key"
ADMIN_HEADERS = {"Authorization": f"Bearer {TEST_ADMIN_KEY}"}


def configure(monkeypatch: pytest.MonkeyPatch, **variables: str) -> None:
    """Set environment variables for this test and make the settings read them again."""
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def fake_deepseek() -> Iterator[FakeDeepSeek]:
    """The OpenAI/DeepSeek-compatible fake every test's DeepSeek settings point at."""
    with FakeDeepSeek() as server:
        yield server


@pytest.fixture(scope="session")
def oidc() -> Iterator[FakeOidcIssuer]:
    """The OpenID Connect issuer every test's OIDC settings trust."""
    with FakeOidcIssuer() as issuer:
        yield issuer


@pytest.fixture(scope="session")
def event_spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests' undelivered events are kept: never the machine's own spool, whose turns a
    test's replay would take for its own (and remove)."""
    return tmp_path_factory.mktemp("spool")


@pytest.fixture(autouse=True)
def environment(
    mongo_uri: str, fake_deepseek: FakeDeepSeek, oidc: FakeOidcIssuer, event_spool: Path
) -> Iterator[str]:
    """Each test gets a fresh database and its own environment, restored afterwards."""
    saved = dict(os.environ)
    database = f"test_{uuid.uuid4().hex[:12]}"
    os.environ.update(
        {
            "MONGODB_URI": mongo_uri,
            "MONGODB_DB": database,
            "CORS_ORIGINS": "*",
            "DEEPSEEK_BASE_URL": fake_deepseek.base_url,
            "DEEPSEEK_API_KEY": "test-key",
            "DEEPSEEK_RETRY_BACKOFF_S": "0.01",
            "EVENT_SIGNING_KEY": TEST_SIGNING_KEY,
            "ADMIN_API_KEY": TEST_ADMIN_KEY,
            "OIDC_ISSUER": oidc.issuer,
            "OIDC_AUDIENCE": oidc.audience,
            "EVENT_SPOOL_DIR": str(event_spool),
        }
    )
    fake_deepseek.default_scenario = Scenario()
    fake_deepseek.clear()
    get_settings.cache_clear()
    yield database
    os.environ.clear()
    os.environ.update(saved)
    get_settings.cache_clear()
    with MongoClient(mongo_uri, serverSelectionTimeoutMS=2000) as client:
        client.drop_database(database)


class ServerThread:
    """An ASGI app served by uvicorn on 127.0.0.1 from a background thread."""

    def __init__(self, app: object) -> None:
        self.port = free_port()
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "ServerThread":
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="session")
def gateway_url() -> Iterator[str]:
    with ServerThread(build_gateway()) as server:
        yield server.url


@pytest.fixture
def client(gateway_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=gateway_url, timeout=30, headers=ADMIN_HEADERS) as http:
        yield http


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


@pytest.fixture
def user_headers(oidc: FakeOidcIssuer):
    """Headers carrying a fresh access token for a user: `user_headers("alice")`."""

    def headers(subject: str, **claims: object) -> dict[str, str]:
        return bearer(oidc.mint(subject, **claims))

    return headers


@pytest.fixture
def key_headers(client: httpx.Client):
    """Headers carrying a new API key of a project with a role: `key_headers(project, "runner")`."""

    def headers(project: dict, role: str, **fields: object) -> dict[str, str]:
        body = {"name": f"{role} key", "role": role, **fields}
        response = client.post(f"/projects/{project['id']}/keys", json=body)
        assert response.status_code == 201, response.text
        return bearer(response.json()["key"])

    return headers


@pytest.fixture
def project(client: httpx.Client) -> dict:
    response = client.post("/projects", json={"name": "Support bot", "description": "Helpdesk"})
    assert response.status_code == 201, response.text
    return response.json()


@pytest.fixture
def make_prompt(client: httpx.Client, project: dict):
    """Create a prompt in the test project; keyword arguments override the defaults."""

    def create(**fields: object) -> dict:
        body = {
            "project_id": project["id"],
            "name": f"prompt-{uuid.uuid4().hex[:6]}",
            "type": "text",
            "template": "Answer {{question}} politely.",
            **fields,
        }
        response = client.post("/prompts", json=body)
        assert response.status_code == 201, response.text
        return response.json()

    return create


@pytest.fixture
def database(mongo_uri: str, environment: str) -> Iterator[Database]:
    """The test's database, for asserting on what was stored."""
    with MongoClient(mongo_uri, serverSelectionTimeoutMS=2000, tz_aware=True) as mongo:
        yield mongo[environment]


@pytest.fixture(scope="session")
def moto_url() -> Iterator[str]:
    from moto.server import ThreadedMotoServer  # only the SQS tests pay for importing moto

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def sqs(moto_url: str, monkeypatch: pytest.MonkeyPatch):
    """An SQS client on the moto server, with the environment boto3 reads pointed at it."""
    configure(
        monkeypatch,
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ENDPOINT_URL_SQS=moto_url,
    )
    import boto3

    return boto3.session.Session().client("sqs")
