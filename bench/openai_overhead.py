"""What the `openai` function adds on top of DeepSeek, next to a LiteLLM proxy doing the same job.

N concurrent streams through `POST /v1/chat/completions` naming a managed prompt
(`assistant@production`: a system message with two variables, then the caller's user message,
with a runner's project API key), versus the same rendered requests sent straight to the fake
upstream (first token at 200 ms, 50 tokens 10 ms apart), and versus a LiteLLM proxy (one uvicorn
worker, no database, a master key, its one model pointed at the fake upstream as an
OpenAI-compatible provider). The function (functions-framework CLI, as in its image) and LiteLLM
are pinned to core 0, loaded one at a time, in turn at each level; the load generator, the fake
upstream and MongoDB share core 1. CPU per request counts the target's processes from the first
request of a level until, for the function, its last execution record is finished (those writes
end after the streams and belong to them).

LiteLLM comes from PyPI: the bench installs it with uv into a virtualenv of its own under
`.bench-cache/` the first time (kept for later runs; delete the folder to install again).
`--litellm` names another requirement. MongoDB is an embedded SecantusDB unless `--mongodb-uri`
names a real one (a database of the bench's own there, dropped at the end).
Run: `uv run python -m bench.openai_overhead [--levels 1,10,100] [--requests-per-stream 3]
[--min-requests 20]`. Linux only (CPU affinity).
"""

import argparse
import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.harness import (
    FIRST_TOKEN_MS,
    FUNCTION_CORE,
    LOAD_CORE,
    TOKENS,
    LaterWrites,
    Load,
    Served,
    add_load_arguments,
    cpu_seconds,
    idle_cpu_ms_per_s,
    mongodb,
    peak_rss_mb,
    requests_per_level,
    run_load,
    spawn_pinned,
    start_fake_upstream,
)
from devtools.embedded_mongo import free_port
from devtools.gateway import FUNCTIONS_DIR
from devtools.processes import wait_until_healthy
from shared.access.callers import Caller
from shared.access.models import Actor, ApiKeyCreate, Role
from shared.access.service import AccessService
from shared.projects.models import ProjectCreate
from shared.projects.service import ProjectService
from shared.prompts.models import PromptCreate
from shared.prompts.service import PromptService
from shared.settings import get_settings

LITELLM = "litellm[proxy]==1.108.7"
CACHE = Path(__file__).resolve().parent.parent / ".bench-cache"
# LiteLLM imports for 20-30 s before it answers on this machine.
LITELLM_START_S = 240
INSTALL_S = 900
MODEL = "deepseek-v4-flash"
PROMPT = "assistant"
VARIABLES = {"persona": "a support agent", "topic": "billing"}
QUESTION = {"role": "user", "content": "What about my refund?"}
# The function renders its prompt into this system message; the other paths get it rendered.
RENDERED = {"role": "system", "content": "You are a support agent, helping with billing."}
UPSTREAM_KEY, LITELLM_KEY = "bench", "sk-bench"
# The first chunk with text: some servers send the role first with empty content.
FIRST_TOKEN = re.compile(rb'"content": ?"[^"]')

# The issue's targets, and what it measured of a LiteLLM worker on this harness.
ADDED_TTFT_MS = 3.0
CPU_SHARE_OF_LITELLM = 1 / 8
THROUGHPUT_SHARE, THROUGHPUT_STREAMS = 0.9, 100
RSS_MB = 150
ISSUE_LITELLM = "~28 ms added TTFT at one stream, ~95 ms CPU per request, ~10 streams/s at most"


def stream_body(model: str, messages: list[dict], **fields: object) -> bytes:
    return json.dumps(
        {
            "model": model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "messages": messages,
            **fields,
        }
    ).encode()


OPENAI_BODY = stream_body(f"{PROMPT}@production", [QUESTION], variables=VARIABLES)
DIRECT_BODY = stream_body(MODEL, [RENDERED, QUESTION])
# `bench.reference_relay`, for scale: the same stack (functions-framework, the openai SDK)
# relaying the answer and nothing else: no prompt, no record, no ledger.
RELAY_BODY = json.dumps({"input": QUESTION["content"]}).encode()
RELAY_TOKEN = re.compile(rb'"delta": ?"[^"]')


def litellm_executable(requirement: str) -> Path:
    """LiteLLM's proxy command, from a virtualenv of the bench's own, installed with uv the
    first time (a folder without its `installed` mark is an interrupted install: redone)."""
    folder = CACHE / re.sub(r"[^A-Za-z0-9.]+", "-", requirement).strip("-")
    executable, installed = folder / "bin" / "litellm", folder / "installed"
    if installed.exists():
        print(f"{requirement}: already installed in {folder}")
        return executable
    uv = shutil.which("uv")
    if uv is None:
        sys.exit("needs uv on PATH to install LiteLLM (make uv)")
    shutil.rmtree(folder, ignore_errors=True)
    started = time.monotonic()
    for command in (
        [uv, "venv", "--quiet", "--python", sys.executable, str(folder)],
        [uv, "pip", "install", "--quiet", "--python", str(folder / "bin" / "python"), requirement],
    ):
        subprocess.run(command, check=True, timeout=INSTALL_S)
    installed.touch()
    print(f"{requirement}: installed from PyPI in {time.monotonic() - started:.1f} s into {folder}")
    return executable


def start_litellm(executable: Path, upstream_port: int, scratch: Path) -> Served:
    """One LiteLLM proxy worker on the function core, its one model the fake upstream."""
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"http://127.0.0.1:{upstream_port}",
                    "api_key": UPSTREAM_KEY,
                },
            }
        ],
        "general_settings": {"master_key": LITELLM_KEY},
        # Older versions send usage telemetry unless this is off.
        "litellm_settings": {"telemetry": False},
    }
    # YAML reads JSON.
    (scratch / "litellm.yaml").write_text(json.dumps(config))
    env = {
        **os.environ,
        "LITELLM_LOG": "ERROR",
        # The model price list ships with the package; no fetch from GitHub at start.
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_DONT_SHOW_FEEDBACK_BOX": "true",
        "DISABLE_ADMIN_UI": "true",
    }
    env.pop("DATABASE_URL", None)
    port = free_port()
    command = [
        str(executable), "--config", str(scratch / "litellm.yaml"), "--host", "127.0.0.1",
        "--port", str(port), "--num_workers", "1",
    ]  # fmt: skip
    served = Served(spawn_pinned(FUNCTION_CORE, command, env), port)
    try:
        wait_until_healthy(
            f"http://127.0.0.1:{port}",
            served.process,
            timeout=LITELLM_START_S,
            path="/health/liveliness",
        )
    except BaseException:
        served.stop()
        raise
    return served


def seed(mongo_uri: str, database: str) -> str:
    """A project with the prompt the bench names, and a runner's key of that project."""
    os.environ.update(MONGODB_URI=mongo_uri, MONGODB_DB=database)
    get_settings.cache_clear()
    operator = Caller(Actor(kind="admin", id="admin", name="bench"))
    project = ProjectService().create(ProjectCreate(name="bench"))
    PromptService(ProjectService()).create(
        PromptCreate(
            project_id=project.id,
            name=PROMPT,
            type="chat",
            messages=[
                {"role": "system", "content": "You are {{persona}}, helping with {{topic}}."}
            ],
            config={"model": MODEL},
            labels=["production"],
        ),
        operator,
    )
    key = AccessService(ProjectService()).create_key(
        project.id, ApiKeyCreate(name="bench app", role=Role.RUNNER), operator
    )
    return key.key


@dataclass
class Target:
    """What one level sends to one server, and that server's processes."""

    name: str
    server: Served
    path: str
    body: bytes
    token: str
    records: LaterWrites | None = None
    first_token: re.Pattern[bytes] = FIRST_TOKEN

    def measure(self, concurrency: int, count: int, max_seconds: float) -> tuple[dict, float]:
        load = Load(
            self.name,
            concurrency,
            self.path,
            [self.body] * count,
            self.first_token,
            self.token,
            max_seconds,
        )
        settle = None if self.records is None else self.records.wait
        return load.measure(self.server.port, self.server.pids, settle=settle)


HEADER = (
    f"{'streams':>7} {'target':<7} {'ttft p50':>9} {'ttft p99':>9} {'added p50':>10} "
    f"{'added p99':>10} {'req/s':>7} {'share':>6} {'cpu ms/req':>11} {'errors':>6}"
)


def print_row(row: dict, direct: dict, cpu_ms: float, note: str = "") -> None:
    """One target at one level; its TTFT and throughput next to the direct requests'."""
    if row is direct:
        added = f"{'':>10} {'':>10}"
        cpu = f"{'':>11}"
    else:
        added = (
            f"{row['ttft50'] - direct['ttft50']:>+10.1f} {row['ttft99'] - direct['ttft99']:>+10.1f}"
        )
        cpu = f"{cpu_ms:>11.1f}"
    print(
        f"{row['streams']:>7} {row['path']:<7} {row['ttft50']:>9.1f} {row['ttft99']:>9.1f} "
        f"{added} {row['rps']:>7.1f} {row['rps'] / direct['rps']:>6.0%} {cpu} "
        f"{row['errors']:>6}{note}"
    )


def verdict(passed: bool | None) -> str:
    return {True: "PASS", False: "FAIL", None: "n/a "}[passed]


def print_targets(
    rows: dict[tuple[int, str], tuple[dict, float]], rss_mb: float, with_master_mb: float
) -> None:
    """The issue's targets next to this run's figures."""
    levels = sorted({level for level, _ in rows})
    print(f"\ntargets (issue #15; it measured LiteLLM here at {ISSUE_LITELLM}):")

    def added_ttft(level: int, name: str) -> float:
        return rows[level, name][0]["ttft50"] - rows[level, "direct"][0]["ttft50"]

    if 1 in levels:
        added = added_ttft(1, "openai")
        print(
            f"{verdict(added < ADDED_TTFT_MS)}  added TTFT p50 at one stream "
            f"< {ADDED_TTFT_MS:g} ms: {added:+.1f} ms (LiteLLM {added_ttft(1, 'litellm'):+.1f})"
        )
    else:
        print(f"{verdict(None)}  added TTFT p50 at one stream: not measured (no level 1)")
    shares = {
        level: rows[level, "openai"][1] / max(rows[level, "litellm"][1], 1e-9) for level in levels
    }
    figures = ", ".join(
        f"{level} stream{'s' * (level != 1)} {rows[level, 'openai'][1]:.1f} vs "
        f"{rows[level, 'litellm'][1]:.1f} "
        f"(1/{1 / share:.1f})"
        for level, share in shares.items()
    )
    print(
        f"{verdict(all(share <= CPU_SHARE_OF_LITELLM for share in shares.values()))}  CPU per "
        f"request <= 1/{1 / CPU_SHARE_OF_LITELLM:g} of LiteLLM's, ms: {figures}"
    )
    if THROUGHPUT_STREAMS in levels:
        direct = rows[THROUGHPUT_STREAMS, "direct"][0]["rps"]
        share = rows[THROUGHPUT_STREAMS, "openai"][0]["rps"] / direct
        litellm = rows[THROUGHPUT_STREAMS, "litellm"][0]["rps"] / direct
        print(
            f"{verdict(share >= THROUGHPUT_SHARE)}  requests/s at {THROUGHPUT_STREAMS} streams >= "
            f"{THROUGHPUT_SHARE:.0%} of direct: {share:.0%} (LiteLLM {litellm:.0%})"
        )
    else:
        print(f"{verdict(None)}  throughput at {THROUGHPUT_STREAMS} streams: not measured")
    print(
        f"{verdict(rss_mb < RSS_MB)}  peak RSS < {RSS_MB} MB: worker {rss_mb:.0f} MB "
        f"({with_master_mb:.0f} MB with gunicorn's master, which shares most of its pages)"
    )
    errors = sum(rows[level, "openai"][0]["errors"] for level in levels)
    print(f"{verdict(errors == 0)}  no errors: {errors} through the function")
    print("\nfor scale, the bare reference relay on the same stack, in this run:")
    for level in levels:
        row, cpu_ms = rows[level, "relay"]
        direct = rows[level, "direct"][0]
        print(
            f"      {level} stream{'s' * (level != 1)}: added TTFT p50 "
            f"{added_ttft(level, 'relay'):+.1f} ms, CPU {cpu_ms:.1f} ms per request, "
            f"{row['rps'] / direct['rps']:.0%} of direct"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_load_arguments(parser)
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=300,
        help="time cap per target and level: requests not sent by then count as errors",
    )
    parser.add_argument("--litellm", default=LITELLM, help="the pip requirement of LiteLLM")
    arguments = parser.parse_args()
    counts = requests_per_level(arguments)
    levels = list(counts)
    CACHE.mkdir(exist_ok=True)
    executable = litellm_executable(arguments.litellm)
    os.sched_setaffinity(0, {LOAD_CORE})

    with (
        mongodb(arguments.mongodb_uri, "bench_openai") as (mongo_uri, database, mongo_pids),
        tempfile.TemporaryDirectory(prefix="bench-openai-") as scratch,
    ):
        upstream = start_fake_upstream()
        served = [upstream]
        try:
            runner_key = seed(mongo_uri, database)
            env = {
                "MONGODB_URI": mongo_uri,
                "MONGODB_DB": database,
                "DEEPSEEK_BASE_URL": f"http://127.0.0.1:{upstream.port}",
                "DEEPSEEK_API_KEY": UPSTREAM_KEY,
            }
            function = Served.start(FUNCTIONS_DIR / "openai" / "main.py", env)
            served.append(function)
            litellm = start_litellm(executable, upstream.port, Path(scratch))
            served.append(litellm)
            relay = Served.start(Path(__file__).with_name("reference_relay.py"), env)
            served.append(relay)
            # The fake upstream has no health route; a models listing shows it is up.
            models = f"http://127.0.0.1:{upstream.port}/models"
            auth = {"Authorization": f"Bearer {UPSTREAM_KEY}"}
            httpx.get(models, headers=auth, timeout=10).raise_for_status()
            records = LaterWrites(
                mongo_uri, database, "executions", {"finished_at": {"$ne": None}}, per_request=1
            )
            targets = [
                Target("direct", upstream, "/chat/completions", DIRECT_BODY, UPSTREAM_KEY),
                Target(
                    "openai", function, "/v1/chat/completions", OPENAI_BODY, runner_key, records
                ),
                Target("litellm", litellm, "/v1/chat/completions", DIRECT_BODY, LITELLM_KEY),
                Target("relay", relay, "/", RELAY_BODY, UPSTREAM_KEY, first_token=RELAY_TOKEN),
            ]
            for target in targets[1:]:
                warm_up = [target.body] * 20
                asyncio.run(
                    run_load(
                        target.server.port,
                        target.path,
                        warm_up,
                        target.first_token,
                        5,
                        target.token,
                        120,
                    )
                )
            records.wait(20)
            idle = {target.name: idle_cpu_ms_per_s(target.server.pids) for target in targets[1:]}
            print(
                f"openai and LiteLLM pinned to core {FUNCTION_CORE}, loaded in turn; load, "
                f"upstream, MongoDB on {LOAD_CORE}. Idle CPU on core {FUNCTION_CORE}: "
                + ", ".join(f"{name} {ms:.1f} ms per second" for name, ms in idle.items())
            )
            print(f"MongoDB: {'embedded SecantusDB' if mongo_pids else arguments.mongodb_uri}")
            print(f"upstream: first token {FIRST_TOKEN_MS} ms, {TOKENS} tokens")
            print(HEADER)
            rows: dict[tuple[int, str], tuple[dict, float]] = {}
            for concurrency in levels:
                count = counts[concurrency]
                mongo_ms: dict[str, float] = {}
                for target in targets:
                    mongo_before = cpu_seconds(mongo_pids)
                    rows[concurrency, target.name] = target.measure(
                        concurrency, count, arguments.max_seconds
                    )
                    mongo_ms[target.name] = (cpu_seconds(mongo_pids) - mongo_before) * 1000 / count
                direct, upstream_ms = rows[concurrency, "direct"]
                notes = {
                    "direct": f"  (the fake upstream: {upstream_ms:.1f} ms CPU per request)",
                    "openai": f"  (MongoDB: {mongo_ms['openai']:.1f})" if mongo_pids else "",
                    "litellm": "",
                    "relay": "  (bench.reference_relay: the SDK's stream relayed, nothing stored)",
                }
                for target in targets:
                    row, cpu_ms = rows[concurrency, target.name]
                    print_row(row, direct, cpu_ms, notes[target.name])
            worker_rss = peak_rss_mb(function.pids[1:])
            litellm_rss = peak_rss_mb(litellm.pids)
            print(f"peak RSS: openai worker {worker_rss:.0f} MB, LiteLLM {litellm_rss:.0f} MB")
            print_targets(rows, worker_rss, peak_rss_mb(function.pids))
        finally:
            for server in reversed(served):
                server.stop()


if __name__ == "__main__":
    main()
