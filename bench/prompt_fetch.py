"""`GET /prompts/{id}?label=production`, the run-time hot path, against one `prompts` process.

Prints requests/s and p50/p99 latency for a full fetch (200) and a revalidation (304), at
concurrency 1 and 16, with the embedded MongoDB (SecantusDB). Run: `make bench` or
`uv run python -m bench.prompt_fetch [--requests N]`.
"""

import argparse
import os

import httpx

from bench.harness import HEADER, load, running_function
from devtools.embedded_mongo import EmbeddedMongo
from shared.access.callers import Caller
from shared.access.models import Actor
from shared.projects.models import ProjectCreate
from shared.projects.service import ProjectService
from shared.prompts.models import PromptCreate
from shared.prompts.service import PromptService
from shared.settings import get_settings


def seed_prompt() -> str:
    """A prompt with a production label among a few dozen others, as a real project has."""
    project = ProjectService().create(ProjectCreate(name="bench"))
    prompt_id = ""
    for index in range(30):
        prompt = PromptService(ProjectService()).create(
            PromptCreate(
                project_id=project.id,
                name=f"prompt-{index}",
                type="chat",
                messages=[
                    {"role": "system", "content": "You are {{persona}}. " * 20},
                    {"role": "user", "content": "{{question}}"},
                ],
                config={"model": "deepseek-v4-flash", "temperature": 0.3},
                labels=["production"],
            ),
            Caller(Actor(kind="admin", id="admin", name="bench")),
        )
        prompt_id = prompt.id
    return prompt_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="requests per scenario")
    parser.add_argument("--max-seconds", type=float, default=20, help="time cap per scenario")
    arguments = parser.parse_args()

    with EmbeddedMongo(":memory:") as mongo:
        env = {"MONGODB_URI": mongo.uri, "MONGODB_DB": "bench_prompt_fetch"}
        os.environ.update(env)
        get_settings.cache_clear()
        prompt_id = seed_prompt()
        with running_function("prompts", env) as base_url:
            url = f"{base_url}/{prompt_id}?label=production"
            etag = httpx.get(url).headers["ETag"]
            print(f"prompts function (gunicorn, {os.cpu_count()} cores), SecantusDB in memory")
            print(HEADER)
            for concurrency in (1, 16):
                load(url, concurrency=concurrency, total=200, max_seconds=5)  # warm-up
                full = load(
                    url,
                    concurrency=concurrency,
                    total=arguments.requests,
                    max_seconds=arguments.max_seconds,
                )
                print(full.row(f"fetch ?label=production   c={concurrency}"))
                revalidation = load(
                    url,
                    concurrency=concurrency,
                    total=arguments.requests,
                    max_seconds=arguments.max_seconds,
                    headers={"If-None-Match": etag},
                    expect_status=304,
                )
                print(revalidation.row(f"revalidate (304)           c={concurrency}"))


if __name__ == "__main__":
    main()
