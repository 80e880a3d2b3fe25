"""Concurrent updates of one prompt get distinct, consecutive version numbers."""

from concurrent.futures import ThreadPoolExecutor

import httpx
from pymongo.database import Database

from shared.access.models import Actor
from shared.projects.service import ProjectService
from shared.prompts.models import PromptUpdate
from shared.prompts.service import PromptService
from tests.conftest import ADMIN_HEADERS

WRITERS = 12
WRITER = Actor(kind="admin", id="admin", name="test")


def test_concurrent_http_updates_number_versions_without_gaps_or_duplicates(
    gateway_url: str, make_prompt, database: Database
) -> None:
    prompt = make_prompt()

    def update(index: int) -> dict:
        with httpx.Client(base_url=gateway_url, timeout=30, headers=ADMIN_HEADERS) as http:
            response = http.put(
                f"/prompts/{prompt['id']}", json={"template": f"writer {index} {{{{question}}}}"}
            )
            assert response.status_code == 200, response.text
            return response.json()

    with ThreadPoolExecutor(WRITERS) as pool:
        results = list(pool.map(update, range(WRITERS)))

    numbers = sorted(result["version"]["version"] for result in results)
    assert numbers == list(range(2, WRITERS + 2))
    assert all(result["created_version"] for result in results)
    stored = sorted(doc["version"] for doc in database.prompt_versions.find())
    assert stored == list(range(1, WRITERS + 2))
    assert database.prompts.find_one()["latest_version"] == WRITERS + 1


def test_concurrent_service_updates_with_identical_content_create_one_version(
    make_prompt,
) -> None:
    prompt = make_prompt()
    change = PromptUpdate(template="everyone writes this {{question}}")

    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(
                lambda _: PromptService(ProjectService()).update(prompt["id"], change, WRITER),
                range(8),
            )
        )

    assert sum(result.created_version for result in results) == 1
    assert {result.version.version for result in results} == {2}
