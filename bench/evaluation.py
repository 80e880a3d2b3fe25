"""An evaluation run of 200 cells through the real `evaluations` function and its queue.

The fake DeepSeek answers every cell with a first token after 200 ms and 50 tokens 10 ms apart
(about 0.7 s a cell), so a run at concurrency 8 cannot take less than 200 x 0.7 s / 8 = 17.5 s.
Prints the run's wall time and cells/s next to that ideal, and the cells' own latencies.
The function runs alone under the functions-framework CLI with the local queue (as `make dev`),
so its cells run on its event loop; MongoDB is SecantusDB in memory. Everything is on 127.0.0.1.
Run: `uv run python -m bench.evaluation [--cells 200] [--concurrency 8]`.
"""

import argparse
import os
import statistics
import time

import httpx

from bench.harness import running_function
from devtools.embedded_mongo import EmbeddedMongo
from devtools.fake_deepseek import FakeDeepSeek, Scenario
from shared.access.callers import Caller
from shared.access.models import Actor
from shared.datasets.models import CaseCreate, DatasetCreate
from shared.datasets.service import DatasetService
from shared.projects.models import ProjectCreate
from shared.projects.service import ProjectService
from shared.prompts.models import PromptCreate
from shared.prompts.service import PromptService

# The most results the evaluations function returns in one read: the final read takes them all.
MAX_RESULTS = 1000
FIRST_TOKEN_S = 0.2
TOKENS = 50
TOKEN_INTERVAL_S = 0.01


def seed(cases: int) -> tuple[str, str]:
    """A prompt and a dataset of `cases` cases, each with two deterministic assertions."""
    project = ProjectService().create(ProjectCreate(name="bench"))
    prompt = PromptService(ProjectService()).create(
        PromptCreate(
            project_id=project.id,
            name="support",
            type="chat",
            messages=[
                {"role": "system", "content": "You answer {{product}} questions briefly."},
                {"role": "user", "content": "{{question}}"},
            ],
        ),
        Caller(Actor(kind="admin", id="admin", name="bench")),
    )
    dataset = DatasetService(ProjectService()).create(
        DatasetCreate(
            project_id=project.id,
            name="regression",
            cases=[
                CaseCreate(
                    variables={"product": "lamp", "question": f"Question {index}?"},
                    assertions=[
                        {"type": "contains", "value": "tok49"},
                        {"type": "length", "min": 10},
                    ],
                )
                for index in range(cases)
            ],
        )
    )
    return prompt.id, dataset.id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=200, help="cases in the run (one target)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--max-seconds", type=float, default=300, help="give up after this")
    arguments = parser.parse_args()
    if arguments.cells > MAX_RESULTS:
        parser.error(f"--cells is at most {MAX_RESULTS}, the results one read returns")

    scenario = Scenario(
        tokens=TOKENS,
        reasoning=None,
        first_token_delay_s=FIRST_TOKEN_S,
        token_interval_s=TOKEN_INTERVAL_S,
    )
    with EmbeddedMongo(":memory:") as mongo, FakeDeepSeek() as upstream:
        upstream.default_scenario = scenario
        env = {
            "MONGODB_URI": mongo.uri,
            "MONGODB_DB": "bench_evaluation",
            "DEEPSEEK_BASE_URL": upstream.base_url,
            "DEEPSEEK_API_KEY": "bench",
            "EVALUATION_QUEUE": "local",
            "EVALUATION_MAX_CONCURRENCY": str(arguments.concurrency),
            "LOG_LEVEL": "WARNING",
            "ADMIN_API_KEY": "bench",
        }
        os.environ.update(env)  # for the seeding here and the function started below
        prompt_id, dataset_id = seed(arguments.cells)
        with (
            running_function("evaluations") as base_url,
            httpx.Client(timeout=30, headers={"Authorization": "Bearer bench"}) as http,
        ):
            started = time.perf_counter()
            response = http.post(
                f"{base_url}/",
                json={
                    "prompt_id": prompt_id,
                    "dataset_id": dataset_id,
                    "targets": [{}],
                    "concurrency": arguments.concurrency,
                },
            )
            response.raise_for_status()
            accepted_ms = (time.perf_counter() - started) * 1000
            run_id = response.json()["id"]
            deadline = started + arguments.max_seconds
            # Polled as a dashboard would (one result row), then read whole once finished.
            while True:
                run = http.get(f"{base_url}/{run_id}", params={"limit": 1}).json()
                if run["status"] in ("completed", "cancelled") or time.perf_counter() > deadline:
                    break
                time.sleep(0.25)
            wall_s = time.perf_counter() - started
            run = http.get(f"{base_url}/{run_id}", params={"limit": MAX_RESULTS}).json()

    cells = run["progress"]["total"]
    ideal_s = cells * (FIRST_TOKEN_S + TOKENS * TOKEN_INTERVAL_S) / arguments.concurrency
    latencies = [
        result["latency_ms"]
        for row in run["results"]
        for result in row["targets"][0]["runs"]
        if result["latency_ms"]
    ]
    print(
        f"evaluation: {cells} cells, concurrency {arguments.concurrency}, upstream "
        f"{FIRST_TOKEN_S * 1000:.0f} ms to first token + {TOKENS} tokens "
        f"{TOKEN_INTERVAL_S * 1000:.0f} ms apart"
    )
    print(f"status {run['status']}; progress {run['progress']}")
    print(f"202 answered in {accepted_ms:.0f} ms")
    print(f"{'':<10} {'wall s':>8} {'cells/s':>8}")
    print(f"{'measured':<10} {wall_s:>8.2f} {cells / wall_s:>8.2f}")
    print(f"{'ideal':<10} {ideal_s:>8.2f} {cells / ideal_s:>8.2f}")
    print(f"efficiency {ideal_s / wall_s:.1%} of ideal")
    if latencies:
        cell_ideal_ms = 1000 * (FIRST_TOKEN_S + TOKENS * TOKEN_INTERVAL_S)
        print(
            f"cell latency p50 {statistics.median(latencies):.0f} ms, "
            f"max {max(latencies):.0f} ms (ideal {cell_ideal_ms:.0f} ms)"
        )


if __name__ == "__main__":
    main()
