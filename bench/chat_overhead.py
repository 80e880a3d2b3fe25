"""What the chat function adds on top of DeepSeek: N concurrent streams through `chat` versus the
same requests sent straight to the fake upstream (first token at 200 ms, 50 tokens 10 ms apart).

The chat function (functions-framework CLI, gunicorn + uvicorn worker, as in its image) is pinned
alone to core 0; the load generator, the fake upstream and MongoDB share core 1. Each chat request
reads the dialog's history, renders its prompt and publishes the turn (local queue -> MongoDB, in
the chat process). Prints time to first token and total time (p50/p99) for both paths, the
difference, requests/s, the chat processes' CPU ms per streamed request (the turns' history
writes, which finish after the streams, included) and their peak RSS; for scale, the CPU per
request of MongoDB during the chat run and of the fake upstream during the direct run.
Run: `uv run python -m bench.chat_overhead [--levels 1,10,100]`. Linux only (CPU affinity).
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from pymongo import MongoClient

from bench.harness import CLI, cpu_seconds, process_tree
from devtools.embedded_mongo import EmbeddedMongo, free_port
from devtools.gateway import FUNCTIONS_DIR, TARGET
from devtools.processes import wait_until_healthy

FUNCTION_CORE, LOAD_CORE = 0, 1
TOKENS, FIRST_TOKEN_MS, TOKEN_INTERVAL_MS = 50, 200, 10
HISTORY_TURNS = 3
# Runs `argv[1:]` pinned to the core in argv[0], so forked workers stay there too.
_PINNED = (
    "import os, sys; os.sched_setaffinity(0, {int(sys.argv[1])}); "
    "os.execv(sys.argv[2], sys.argv[2:])"
)


def spawn_pinned(core: int, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", _PINNED, str(core), *command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def peak_rss_mb(pids: list[int]) -> float:
    total_kb = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


@dataclass
class Sample:
    ttft_ms: float
    total_ms: float
    ok: bool


async def one_request(port: int, path: str, body: bytes, first_token_marker: bytes) -> Sample:
    """POST and read the streamed answer on a raw socket: the cheapest client Python allows."""
    started = time.perf_counter()
    ttft = None
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nAuthorization: Bearer bench\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    while chunk := await reader.read(65536):
        if ttft is None:
            received += chunk
            if first_token_marker in received:
                ttft = (time.perf_counter() - started) * 1000
        else:
            received = received[-512:] + chunk
    writer.close()
    total = (time.perf_counter() - started) * 1000
    ok = ttft is not None and (b"[DONE]" in received or b"event: done" in received)
    return Sample(ttft or float("nan"), total, ok)


async def run_load(
    port: int, path: str, bodies: list[bytes], marker: bytes, concurrency: int
) -> tuple[list[Sample], float]:
    queue = list(reversed(bodies))
    samples: list[Sample] = []

    async def worker() -> None:
        while queue:
            samples.append(await one_request(port, path, queue.pop(), marker))

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


def seed(mongo_uri: str, database: str, dialogs: int) -> tuple[str, list[str]]:
    """A project with a chat prompt and `dialogs` dialogs bound to it, each with some history."""
    os.environ.update(MONGODB_URI=mongo_uri, MONGODB_DB=database)
    from shared.db import utc_now
    from shared.dialogs.models import DialogCreate, TurnEvent
    from shared.dialogs.service import DialogService
    from shared.history.writer import HistoryWriter
    from shared.projects.models import ProjectCreate
    from shared.projects.service import ProjectService
    from shared.prompts.models import PromptCreate
    from shared.prompts.service import PromptService

    project = ProjectService().create(ProjectCreate(name="bench"))
    prompt = PromptService().create(
        PromptCreate(
            project_id=project.id,
            name="assistant",
            type="chat",
            messages=[
                {"role": "system", "content": "You are {{persona}}, helping with {{topic}}."}
            ],
            labels=["production"],
        )
    )
    dialog_ids = []
    for index in range(dialogs):
        dialog = DialogService().create(
            DialogCreate(project_id=project.id, prompt_id=prompt.id, title=f"bench {index}")
        )
        for turn in range(HISTORY_TURNS):
            now = utc_now()
            HistoryWriter().write_turn(
                TurnEvent(
                    turn_id=f"seed{index}x{turn}",
                    dialog_id=dialog.id,
                    project_id=project.id,
                    user_content=f"Earlier question {turn} about invoices and refunds?",
                    user_at=now,
                    assistant_content="An earlier answer that explains the policy in detail. " * 3,
                    assistant_at=now,
                    status="ok",
                )
            )
        dialog_ids.append(dialog.id)
    return project.id, dialog_ids


DIRECT_BODY = json.dumps(
    {
        "model": "deepseek-v4-flash",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hello"}],
    }
).encode()
CHAT_VARIABLES = {"persona": "a support agent", "topic": "billing"}


def wait_for_history(mongo_uri: str, database: str, messages: int, timeout_s: float = 60) -> None:
    """Wait until `messages` messages are stored: the local queue writes each turn after its
    stream ends, in the chat process, and that work belongs to the requests just measured."""
    with MongoClient(mongo_uri) as client:
        collection = client[database]["messages"]
        deadline = time.monotonic() + timeout_s
        while collection.count_documents({}) < messages:
            if time.monotonic() > deadline:
                sys.exit(f"history not written within {timeout_s:g} s")
            time.sleep(0.05)


def chat_body(**fields: str) -> bytes:
    return json.dumps({**fields, "variables": CHAT_VARIABLES}).encode()


def summary(label: str, concurrency: int, samples: list[Sample], seconds: float) -> dict:
    ttfts = [sample.ttft_ms for sample in samples if sample.ok]
    totals = [sample.total_ms for sample in samples if sample.ok]
    return {
        "streams": concurrency,
        "path": label,
        "ttft50": percentile(ttfts, 0.5),
        "ttft99": percentile(ttfts, 0.99),
        "total50": percentile(totals, 0.5),
        "total99": percentile(totals, 0.99),
        "rps": len(samples) / seconds,
        "errors": sum(not sample.ok for sample in samples),
    }


def print_level(
    direct: dict, chat: dict, cpu_ms: float, mongo_ms: float, upstream_ms: float
) -> None:
    for row in (direct, chat):
        print(
            f"{row['streams']:>7} {row['path']:<7} {row['ttft50']:>9.1f} {row['ttft99']:>9.1f} "
            f"{row['total50']:>10.1f} {row['total99']:>10.1f} {row['rps']:>7.1f} {row['errors']:>6}"
        )
    added = {key: chat[key] - direct[key] for key in ("ttft50", "ttft99", "total50", "total99")}
    print(
        f"{chat['streams']:>7} {'added':<7} {added['ttft50']:>+9.1f} {added['ttft99']:>+9.1f} "
        f"{added['total50']:>+10.1f} {added['total99']:>+10.1f} "
        f"{chat['rps'] / direct['rps'] * 100:>6.0f}%  cpu {cpu_ms:.1f} ms/request "
        f"(MongoDB {mongo_ms:.1f}; the fake upstream, direct: {upstream_ms:.1f})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--levels", default="1,10,100")
    parser.add_argument("--requests-per-stream", type=int, default=3)
    parser.add_argument(
        "--min-requests",
        type=int,
        default=20,
        help="at least this many requests per level (a few streams alone measure too little)",
    )
    arguments = parser.parse_args()
    levels = [int(level) for level in arguments.levels.split(",")]
    counts = {
        level: max(level * arguments.requests_per_stream, arguments.min_requests)
        for level in levels
    }
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs two cores")
    os.sched_setaffinity(0, {LOAD_CORE})

    with EmbeddedMongo(":memory:") as mongo:
        assert mongo.process is not None
        os.sched_setaffinity(mongo.process.pid, {LOAD_CORE})
        upstream_port, chat_port = free_port(), free_port()
        fake_command = [
            sys.executable, "-m", "devtools.fake_deepseek", "--port", str(upstream_port),
            "--first-token-ms", str(FIRST_TOKEN_MS), "--tokens", str(TOKENS),
            "--token-interval-ms", str(TOKEN_INTERVAL_MS),
        ]  # fmt: skip
        upstream = spawn_pinned(LOAD_CORE, fake_command, dict(os.environ))
        project_id, dialog_ids = seed(mongo.uri, "bench_chat", max(counts.values()))
        chat_env = {
            **os.environ,
            "MONGODB_URI": mongo.uri,
            "MONGODB_DB": "bench_chat",
            "DEEPSEEK_BASE_URL": f"http://127.0.0.1:{upstream_port}",
            "DEEPSEEK_API_KEY": "bench",
            "HISTORY_QUEUE": "local",
            "PORT": str(chat_port),
        }
        chat_source = str(FUNCTIONS_DIR / "chat" / "main.py")
        chat = spawn_pinned(
            FUNCTION_CORE, [str(CLI), "--source", chat_source, "--target", TARGET], chat_env
        )
        try:
            wait_until_healthy(f"http://127.0.0.1:{chat_port}", chat)
            # The fake upstream has no health route; a models listing shows it is up.
            models = f"http://127.0.0.1:{upstream_port}/models"
            auth = {"Authorization": "Bearer bench"}
            httpx.get(models, headers=auth, timeout=10).raise_for_status()
            chat_pids = process_tree(chat.pid)
            warm_up = [chat_body(project_id=project_id, input="warm up") for _ in range(20)]
            asyncio.run(run_load(chat_port, "/", warm_up, b"event: content", 5))
            # Two messages per turn: the seeded history, then each request's turn.
            stored = 2 * (len(dialog_ids) * HISTORY_TURNS + len(warm_up))
            wait_for_history(mongo.uri, "bench_chat", stored)
            idle_before = cpu_seconds(chat_pids)
            time.sleep(2)
            idle_ms_per_s = (cpu_seconds(chat_pids) - idle_before) * 1000 / 2
            print(f"chat processes idle: {idle_ms_per_s:.0f} ms CPU per second")
            print(f"chat pinned to core {FUNCTION_CORE}; load, upstream, MongoDB on {LOAD_CORE}")
            print(f"upstream: first token {FIRST_TOKEN_MS} ms, {TOKENS} tokens")
            print(
                f"{'streams':>7} {'path':<7} {'ttft p50':>9} {'ttft p99':>9} {'total p50':>10} "
                f"{'total p99':>10} {'req/s':>7} {'errors':>6}"
            )
            mongo_pids = process_tree(mongo.process.pid)
            for concurrency in levels:
                count = counts[concurrency]
                bodies = [
                    chat_body(dialog_id=dialog_ids[index], input="What about my refund?")
                    for index in range(count)
                ]
                direct_load = [DIRECT_BODY] * count
                upstream_before = cpu_seconds([upstream.pid])
                direct, direct_s = asyncio.run(
                    run_load(
                        upstream_port, "/chat/completions", direct_load, b'"content":"', concurrency
                    )
                )
                # For scale: what the fake upstream, which only writes ready-made frames, spends
                # per stream. Few streams cost more each: every token wakes an idle process.
                upstream_ms = (cpu_seconds([upstream.pid]) - upstream_before) * 1000 / count
                cpu_before, mongo_before = cpu_seconds(chat_pids), cpu_seconds(mongo_pids)
                through, chat_s = asyncio.run(
                    run_load(chat_port, "/", bodies, b"event: content", concurrency)
                )
                # The turns are written after their streams end; their CPU counts too.
                stored += 2 * count
                wait_for_history(mongo.uri, "bench_chat", stored)
                cpu_ms = (cpu_seconds(chat_pids) - cpu_before) * 1000 / count
                mongo_ms = (cpu_seconds(mongo_pids) - mongo_before) * 1000 / count
                print_level(
                    summary("direct", concurrency, direct, direct_s),
                    summary("chat", concurrency, through, chat_s),
                    cpu_ms,
                    mongo_ms,
                    upstream_ms,
                )
            worker_rss = peak_rss_mb(chat_pids[1:])
            print(
                f"peak RSS: worker {worker_rss:.0f} MB, with gunicorn's master "
                f"{peak_rss_mb(chat_pids):.0f} MB"
            )
        finally:
            for process in (chat, upstream):
                process.terminate()
                process.wait(timeout=10)


if __name__ == "__main__":
    main()
