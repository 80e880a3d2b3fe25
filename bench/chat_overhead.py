"""What the chat function adds on top of DeepSeek: N concurrent streams through `chat` versus the
same requests sent straight to the fake upstream (first token at 200 ms, 50 tokens 10 ms apart).

The chat function (functions-framework CLI, gunicorn + uvicorn worker, as in its image) is pinned
alone to core 0; the load generator, the fake upstream and MongoDB share core 1. Each chat request
reads the dialog's history, renders its prompt and publishes the turn (local queue -> MongoDB, in
the chat process). Prints time to first token and total time (p50/p99) for both paths, the
difference, requests/s, the chat processes' CPU ms per streamed request (the turns' history
writes, which finish after the streams, included) and their peak RSS; for scale, the CPU per
request of MongoDB during the chat run and of the fake upstream during the direct run.

For scale, the same requests also go through `bench.reference_relay` — the bare relay the issue
cites (SDK raw stream, no history, no storage) — served and pinned like the chat function: what
any relay on this stack costs on this machine.

MongoDB is an embedded SecantusDB (a Python server) unless `--mongodb-uri` names a real one; the
bench then uses a database of its own there and drops it at the end.
Run: `uv run python -m bench.chat_overhead [--levels 1,10,100] [--mongodb-uri URI]`. Linux only
(CPU affinity).
"""

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import httpx
from pymongo import MongoClient

from bench.harness import cpu_seconds, pin_to, process_tree, start_function, stop
from devtools.embedded_mongo import EmbeddedMongo, free_port
from devtools.gateway import FUNCTIONS_DIR

FUNCTION_CORE, LOAD_CORE = 0, 1
TOKENS, FIRST_TOKEN_MS, TOKEN_INTERVAL_MS = 50, 200, 10
HISTORY_TURNS = 3


def spawn_pinned(core: int, command: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pin_to(core),
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
    from shared.access.callers import Caller
    from shared.access.models import Actor
    from shared.db import utc_now
    from shared.dialogs.models import DialogCreate
    from shared.dialogs.service import DialogService
    from shared.projects.models import ProjectCreate
    from shared.projects.service import ProjectService
    from shared.prompts.models import PromptCreate
    from shared.prompts.service import PromptService
    from shared.workflows.history.models import TurnEvent
    from shared.workflows.history.writer import HistoryWriter

    project = ProjectService().create(ProjectCreate(name="bench"))
    prompt = PromptService(ProjectService()).create(
        PromptCreate(
            project_id=project.id,
            name="assistant",
            type="chat",
            messages=[
                {"role": "system", "content": "You are {{persona}}, helping with {{topic}}."}
            ],
            labels=["production"],
        ),
        Caller(Actor(kind="admin", id="admin", name="bench")),
    )
    dialog_ids = []
    for index in range(dialogs):
        dialog = DialogService(ProjectService(), PromptService(ProjectService())).create(
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
        "seconds": seconds,
        "errors": sum(not sample.ok for sample in samples),
    }


def print_row(row: dict) -> None:
    print(
        f"{row['streams']:>7} {row['path']:<7} {row['ttft50']:>9.1f} {row['ttft99']:>9.1f} "
        f"{row['total50']:>10.1f} {row['total99']:>10.1f} {row['rps']:>7.1f} {row['errors']:>6}"
    )


def print_added(direct: dict, through: dict, cpu_ms: float, note: str) -> None:
    """What going through a function adds to the direct requests, and its CPU per request."""
    added = {key: through[key] - direct[key] for key in ("ttft50", "ttft99", "total50", "total99")}
    print(
        f"{through['streams']:>7} {'+' + through['path']:<7} {added['ttft50']:>+9.1f} "
        f"{added['ttft99']:>+9.1f} {added['total50']:>+10.1f} {added['total99']:>+10.1f} "
        f"{through['rps'] / direct['rps'] * 100:>6.0f}%  cpu {cpu_ms:.1f} ms/request{note}"
    )


@dataclass
class Load:
    """One level's requests, sent to one path and measured."""

    label: str
    concurrency: int
    path: str
    bodies: list[bytes]
    marker: bytes = b'"content":"'

    def measure(
        self, port: int, pids: list[int], settle: Callable[[], None] | None = None
    ) -> tuple[dict, float]:
        """The summary row, and the CPU ms per request the processes spent (until `settle`
        returns: work a request leaves behind counts too)."""
        before = cpu_seconds(pids)
        samples, seconds = asyncio.run(
            run_load(port, self.path, self.bodies, self.marker, self.concurrency)
        )
        if settle is not None:
            settle()
        cpu_ms = (cpu_seconds(pids) - before) * 1000 / len(self.bodies)
        return summary(self.label, self.concurrency, samples, seconds), cpu_ms


def idle_cpu_ms_per_s(pids: list[int], seconds: float = 5) -> float:
    """CPU the idle processes spend per second, to the nanosecond (their live threads')."""

    def nanoseconds() -> int:
        return sum(
            int((task / "schedstat").read_text().split()[0])
            for pid in pids
            for task in Path(f"/proc/{pid}/task").iterdir()
        )

    before = nanoseconds()
    time.sleep(seconds)
    return (nanoseconds() - before) / 1e6 / seconds


@dataclass
class Served:
    """A function under the functions-framework CLI (gunicorn + uvicorn worker, as in its
    image), pinned alone to the function core."""

    process: subprocess.Popen[bytes]
    port: int

    @classmethod
    def start(cls, source: Path, env: dict[str, str]) -> "Served":
        port = free_port()
        return cls(start_function(source, env, port, core=FUNCTION_CORE), port)

    @property
    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def stop(self) -> None:
        stop(self.process)


@contextmanager
def mongodb(uri: str | None) -> Iterator[tuple[str, str, list[int]]]:
    """(URI, database, the server's processes when it runs here): an embedded SecantusDB pinned
    to the load core, or a database of the bench's own on the given server, dropped at the end."""
    if uri is None:
        with EmbeddedMongo(":memory:") as mongo:
            assert mongo.process is not None
            os.sched_setaffinity(mongo.process.pid, {LOAD_CORE})
            yield mongo.uri, "bench_chat", process_tree(mongo.process.pid)
        return
    database = f"bench_chat_{os.getpid()}"
    try:
        yield uri, database, []
    finally:
        with MongoClient(uri) as client:
            client.drop_database(database)


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
    parser.add_argument(
        "--mongodb-uri",
        help="a real MongoDB to use instead of the embedded SecantusDB (its CPU is not measured)",
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

    with mongodb(arguments.mongodb_uri) as (mongo_uri, database, mongo_pids):
        upstream_port = free_port()
        fake_command = [
            sys.executable, "-m", "devtools.fake_deepseek", "--port", str(upstream_port),
            "--first-token-ms", str(FIRST_TOKEN_MS), "--tokens", str(TOKENS),
            "--token-interval-ms", str(TOKEN_INTERVAL_MS),
        ]  # fmt: skip
        upstream = spawn_pinned(LOAD_CORE, fake_command, dict(os.environ))
        project_id, dialog_ids = seed(mongo_uri, database, max(counts.values()))
        upstream_env = {
            **os.environ,
            "DEEPSEEK_BASE_URL": f"http://127.0.0.1:{upstream_port}",
            "DEEPSEEK_API_KEY": "bench",
        }
        chat_env = {
            **upstream_env,
            "MONGODB_URI": mongo_uri,
            "MONGODB_DB": database,
            "HISTORY_QUEUE": "local",
            # Every load request sends `Bearer bench`: to the chat function, the admin key.
            "ADMIN_API_KEY": "bench",
        }
        served: list[Served] = []
        forwarder_port = free_port()
        forwarder_command = [
            sys.executable, "-m", "bench.tcp_forwarder", "--port", str(forwarder_port),
            "--upstream-port", str(upstream_port),
        ]  # fmt: skip
        forwarder = spawn_pinned(FUNCTION_CORE, forwarder_command, dict(os.environ))
        try:
            chat = Served.start(FUNCTIONS_DIR / "chat" / "main.py", chat_env)
            served.append(chat)
            relay = Served.start(Path(__file__).with_name("reference_relay.py"), upstream_env)
            served.append(relay)
            # The fake upstream has no health route; a models listing shows it is up.
            for port in (upstream_port, forwarder_port):
                models = f"http://127.0.0.1:{port}/models"
                auth = {"Authorization": "Bearer bench"}
                httpx.get(models, headers=auth, timeout=10).raise_for_status()
            warm_up = [chat_body(project_id=project_id, input="warm up") for _ in range(20)]
            asyncio.run(run_load(chat.port, "/", warm_up, b"event: content", 5))
            asyncio.run(run_load(relay.port, "/", warm_up, b"event: content", 5))
            # Two messages per turn: the seeded history, then each request's turn.
            stored = 2 * (len(dialog_ids) * HISTORY_TURNS + len(warm_up))
            wait_for_history(mongo_uri, database, stored)
            idle_ms_per_s = idle_cpu_ms_per_s(chat.pids[1:])
            print(
                f"chat worker idle: {idle_ms_per_s:.1f} ms CPU per second (the server's own ticks)"
            )
            print(
                f"chat, relay and floor pinned to core {FUNCTION_CORE}; "
                f"load, upstream, MongoDB on {LOAD_CORE}"
            )
            print(f"MongoDB: {'embedded SecantusDB' if mongo_pids else arguments.mongodb_uri}")
            print(f"upstream: first token {FIRST_TOKEN_MS} ms, {TOKENS} tokens")
            print(
                f"{'streams':>7} {'path':<7} {'ttft p50':>9} {'ttft p99':>9} {'total p50':>10} "
                f"{'total p99':>10} {'req/s':>7} {'errors':>6}"
            )
            for concurrency in levels:
                count = counts[concurrency]
                bodies = [
                    chat_body(dialog_id=dialog_ids[index], input="What about my refund?")
                    for index in range(count)
                ]
                direct_load = Load(
                    "direct", concurrency, "/chat/completions", [DIRECT_BODY] * count
                )
                direct, upstream_ms = direct_load.measure(upstream_port, [upstream.pid])
                mongo_before = cpu_seconds(mongo_pids)
                chat_load = Load("chat", concurrency, "/", bodies, b"event: content")
                # The turns are written after their streams end; their CPU counts too.
                stored += 2 * count
                through, chat_ms = chat_load.measure(
                    chat.port,
                    chat.pids,
                    settle=partial(wait_for_history, mongo_uri, database, stored),
                )
                mongo_ms = (cpu_seconds(mongo_pids) - mongo_before) * 1000 / count
                relayed, relay_ms = Load(
                    "relay", concurrency, "/", bodies, b"event: content"
                ).measure(relay.port, relay.pids)
                floor_load = Load("floor", concurrency, "/chat/completions", [DIRECT_BODY] * count)
                floored, floor_ms = floor_load.measure(forwarder_port, [forwarder.pid])
                for row in (direct, through, relayed, floored):
                    print_row(row)
                idle_share = idle_ms_per_s * through["seconds"] / count
                mongo_note = f"MongoDB {mongo_ms:.1f}; " if mongo_pids else ""
                print_added(
                    direct,
                    through,
                    chat_ms,
                    f" ({idle_share:.1f} of it idle ticks; {mongo_note}"
                    f"the fake upstream, direct: {upstream_ms:.1f})",
                )
                print_added(direct, relayed, relay_ms, " (the reference relay)")
                print_added(direct, floored, floor_ms, " (the floor: bytes forwarded untouched)")
            worker_rss = peak_rss_mb(chat.pids[1:])
            print(
                f"peak RSS: worker {worker_rss:.0f} MB, with gunicorn's master "
                f"{peak_rss_mb(chat.pids):.0f} MB"
            )
        finally:
            for function in served:
                function.stop()
            for process in (forwarder, upstream):
                stop(process)


if __name__ == "__main__":
    main()
