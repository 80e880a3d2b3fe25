"""`GET /prompts/{id}?label=production`, the run-time hot path, against one `prompts` process.

Prints requests/s and p50/p99 latency for a full fetch (200) and a revalidation (304), at
concurrency 1 and 16, with a project API key (a runner's, as an app in production sends), with the
embedded MongoDB (SecantusDB). With `--before DIR` (a checkout from before authentication, e.g.
`git worktree add /tmp/before aed1285`), it also measures what authentication adds: the same
fetch at concurrency 1 from that checkout's function without credentials, then from this one with
the admin key and with the runner key, in alternating rounds, and prints the median p50 and p99
of each next to their difference from the checkout without authentication.
Run: `make bench` or `uv run python -m bench.prompt_fetch [--requests N] [--before DIR]`.
"""

import argparse
import os
import statistics
from pathlib import Path

import httpx

from bench.harness import HEADER, load, running_function
from devtools.embedded_mongo import EmbeddedMongo
from shared.access.callers import Caller
from shared.access.models import Actor, ApiKeyCreate, Role
from shared.access.service import AccessService
from shared.projects.models import ProjectCreate
from shared.projects.service import ProjectService
from shared.prompts.models import PromptCreate
from shared.prompts.service import PromptService
from shared.settings import get_settings

ADMIN_KEY = "bench-admin-key"
ROUNDS = 3


def seed_prompt() -> tuple[str, str]:
    """A prompt with a production label among a few dozen others, as a real project has, and a
    runner key of its project."""
    project = ProjectService().create(ProjectCreate(name="bench"))
    operator = Caller(Actor(kind="admin", id="admin", name="bench"))
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
            operator,
        )
        prompt_id = prompt.id
    key = AccessService(ProjectService()).create_key(
        project.id, ApiKeyCreate(name="bench app", role=Role.RUNNER), operator
    )
    return prompt_id, key.key


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def throughput_table(url: str, headers: dict[str, str], arguments: argparse.Namespace) -> None:
    etag = httpx.get(url, headers=headers).headers["ETag"]
    print(HEADER)
    for concurrency in (1, 16):
        load(url, concurrency=concurrency, total=200, max_seconds=5, headers=headers)  # warm-up
        full = load(
            url,
            concurrency=concurrency,
            total=arguments.requests,
            max_seconds=arguments.max_seconds,
            headers=headers,
        )
        print(full.row(f"fetch ?label=production   c={concurrency}"))
        revalidation = load(
            url,
            concurrency=concurrency,
            total=arguments.requests,
            max_seconds=arguments.max_seconds,
            headers={**headers, "If-None-Match": etag},
            expect_status=304,
        )
        print(revalidation.row(f"revalidate (304)           c={concurrency}"))


def authentication_overhead(
    scenarios: dict[str, tuple[str, dict[str, str]]], arguments: argparse.Namespace
) -> None:
    """Each scenario's fetch at concurrency 1, in alternating rounds so a busy moment of the
    machine lands on all of them; medians of the rounds' p50 and p99."""
    p50s: dict[str, list[float]] = {name: [] for name in scenarios}
    p99s: dict[str, list[float]] = {name: [] for name in scenarios}
    for url, headers in scenarios.values():
        load(url, concurrency=1, total=200, max_seconds=5, headers=headers)  # warm-up
    for _ in range(ROUNDS):
        for name, (url, headers) in scenarios.items():
            result = load(
                url,
                concurrency=1,
                total=arguments.requests,
                max_seconds=arguments.max_seconds,
                headers=headers,
            )
            assert result.errors == 0, f"{name}: {result.errors} failed requests"
            p50s[name].append(result.percentile(0.5))
            p99s[name].append(result.percentile(0.99))
    baseline = next(iter(scenarios))
    base_p50, base_p99 = statistics.median(p50s[baseline]), statistics.median(p99s[baseline])
    print(
        f"{'fetch ?label=production, c=1':<44} {'p50 ms':>9} {'p99 ms':>9} {'+p50':>8} {'+p99':>8}"
    )
    for name in scenarios:
        p50, p99 = statistics.median(p50s[name]), statistics.median(p99s[name])
        print(f"{name:<44} {p50:>9.2f} {p99:>9.2f} {p50 - base_p50:>+8.2f} {p99 - base_p99:>+8.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=3000, help="requests per scenario")
    parser.add_argument("--max-seconds", type=float, default=20, help="time cap per scenario")
    parser.add_argument(
        "--before", type=Path, help="a checkout without authentication, to measure what it adds"
    )
    arguments = parser.parse_args()

    with EmbeddedMongo(":memory:") as mongo:
        env = {"MONGODB_URI": mongo.uri, "MONGODB_DB": "bench_prompt_fetch"}
        os.environ.update(env)
        get_settings.cache_clear()
        prompt_id, runner_key = seed_prompt()
        served = {**env, "ADMIN_API_KEY": ADMIN_KEY}
        path = f"/{prompt_id}?label=production"
        with running_function("prompts", served) as base_url:
            print(f"prompts function (gunicorn, {os.cpu_count()} cores), SecantusDB in memory")
            print("with a runner's project API key:")
            throughput_table(base_url + path, bearer(runner_key), arguments)
            if arguments.before is None:
                return
            with running_function("prompts", env, root=arguments.before) as before_url:
                print(f"\nwhat authentication adds ({ROUNDS} alternating rounds, medians):")
                authentication_overhead(
                    {
                        f"before ({arguments.before.name}), no credentials": (
                            before_url + path,
                            {},
                        ),
                        "admin key": (base_url + path, bearer(ADMIN_KEY)),
                        "runner key": (base_url + path, bearer(runner_key)),
                    },
                    arguments,
                )


if __name__ == "__main__":
    main()
