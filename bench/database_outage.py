"""MongoDB killed under load: how fast the 503s and liveness answer, and that everything returns.

Starts an embedded MongoDB (SecantusDB, on a scratch folder), the fake DeepSeek, and the `projects`
(Flask: gunicorn, gthread) and `chat` (ASGI: uvicorn) functions, either behind the dev gateway or
each alone as in its image. `--concurrency` clients send a bounded mix of reads
(`GET /projects/{id}`), writes (`POST /projects`) and a few chat streams while a prober asks
`/healthz` of both functions every few ms; one second in, the database is killed (SIGKILL), and
`--outage-s` later started again on the same folder and port. The functions run on core 0; the
load, the prober (a process of its own) and MongoDB (niced) on core 1. Linux, 2+ cores.

Prints, per serving mode: how requests ended, the latency (p50/p99/max) of the 503s sent once
the breaker had opened (after the first 503 came back) and of `/healthz` during the outage,
against the targets (p99 < 250 ms and < 50 ms); how long after the database answered again the
first request went through; and how many acknowledged writes (2xx) cannot be read back.
Bounded in requests and time, 127.0.0.1 only; it stops everything it started.
Run: `uv run --frozen python -m bench.database_outage [--requests 400] [--concurrency 32]
[--outage-s 6] [--modes gateway,standalone]`.
"""

import argparse
import asyncio
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Event
from pathlib import Path

import httpx
from bson import ObjectId
from pymongo import MongoClient

from bench.harness import pin_to, start_function, stop
from devtools.embedded_mongo import EmbeddedMongo, free_port
from devtools.fake_deepseek import FakeDeepSeek, Scenario
from devtools.gateway import FUNCTIONS_DIR
from devtools.processes import wait_until_healthy

ADMIN_KEY = "bench-admin-key"
DATABASE = "bench_outage"
TARGET_503_P99_MS = 250
TARGET_HEALTH_P99_MS = 50
# The functions on one core; the load, the prober and MongoDB on the other.
FUNCTION_CORE, LOAD_CORE = 0, 1
WARM_S = 1.0
PROBE_INTERVAL_S = 0.01
# Past the outage, a run waits at most this long for its last requests.
SETTLE_S = 20.0


@dataclass
class Sample:
    kind: str  # read, write, chat, health of a function: "health projects"
    sent: float
    ms: float
    status: int  # 0: no HTTP answer
    code: str | None = None  # the error's code, or the transport error's type


@dataclass
class Run:
    samples: list[Sample] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    killed_at: float = 0.0
    restarted_at: float = 0.0
    answering_at: float = 0.0


def start(database: EmbeddedMongo) -> None:
    database.start()
    assert database.process is not None
    # Starting again takes seconds of CPU, during the outage: behind the prober, not ahead.
    os.setpriority(os.PRIO_PROCESS, database.process.pid, 10)


@contextmanager
def gateway(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """Every function behind the dev gateway (uvicorn, one process)."""
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "--factory", "devtools.gateway:build_gateway"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"),
        ],
        env={**os.environ, **env},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pin_to(FUNCTION_CORE),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{base}/projects", process)
        yield {"projects": f"{base}/projects", "chat": f"{base}/chat"}
    finally:
        stop(process)


@contextmanager
def standalone(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """`projects` and `chat` each alone, as in their image (gunicorn: gthread, uvicorn)."""
    urls: dict[str, str] = {}
    with ExitStack() as stack:
        for name in ("projects", "chat"):
            port = free_port()
            process = start_function(FUNCTIONS_DIR / name / "main.py", env, port, FUNCTION_CORE)
            stack.callback(stop, process)
            urls[name] = f"http://127.0.0.1:{port}"
        yield urls


async def load(
    urls: dict[str, str], database: EmbeddedMongo, project_id: str, args: argparse.Namespace
) -> Run:
    run = Run()
    remaining = args.requests
    chat_every = max(1, args.requests // max(1, args.chats))
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"}
    limits = httpx.Limits(max_connections=args.concurrency + 4)
    back = asyncio.Event()
    # Paced so that the bounded count spans the warm-up and the outage; a share is kept for
    # when the database is back (starting it again takes seconds of its own).
    kept = max(args.concurrency, args.requests // 5)
    pause_s = args.concurrency * (WARM_S + args.outage_s) / (args.requests - kept)

    async with httpx.AsyncClient(timeout=60, headers=headers, limits=limits) as client:

        async def send(kind: str, method: str, url: str, **kwargs: object) -> None:
            sent = time.perf_counter()
            status, code = 0, None
            try:
                async with client.stream(method, url, **kwargs) as response:
                    body = await response.aread()
                    status = response.status_code
                    if status >= 400:
                        code = httpx.Response(status, content=body).json()["error"]["code"]
                    elif kind == "write":
                        run.written.append(httpx.Response(status, content=body).json()["id"])
            except httpx.HTTPError as exc:
                code = type(exc).__name__
            except (ValueError, KeyError):
                code = "unreadable body"
            run.samples.append(
                Sample(kind, sent, (time.perf_counter() - sent) * 1000, status, code)
            )

        async def client_loop() -> None:
            nonlocal remaining
            deadline = time.perf_counter() + WARM_S + args.outage_s + SETTLE_S
            while remaining > 0 and time.perf_counter() < deadline:
                if remaining <= kept and not back.is_set():
                    await asyncio.wait_for(back.wait(), SETTLE_S)
                remaining -= 1
                index = remaining
                if index % chat_every == 0:
                    body = {"project_id": project_id, "input": f"question {index}"}
                    await send("chat", "POST", f"{urls['chat']}/", json=body)
                elif index % 2:
                    await send("read", "GET", f"{urls['projects']}/{project_id}")
                else:
                    await send("write", "POST", f"{urls['projects']}/", json={"name": f"w{index}"})
                await asyncio.sleep(pause_s)

        async def outage() -> None:
            await asyncio.sleep(WARM_S)
            run.killed_at = time.perf_counter()
            await asyncio.to_thread(database.kill)
            await asyncio.sleep(args.outage_s)
            run.restarted_at = time.perf_counter()
            await asyncio.to_thread(start, database)
            run.answering_at = time.perf_counter()
            back.set()

        with probing(urls) as probes:
            await asyncio.gather(outage(), *(client_loop() for _ in range(args.concurrency)))
        run.samples += probes
    return run


def probe(urls: list[tuple[str, str]], ready: Event, stop: Event, samples: Connection) -> None:
    """Ask each `/healthz` in turn every PROBE_INTERVAL_S until `stop`; send back the samples."""
    found: list[Sample] = []
    with httpx.Client(timeout=30) as client:
        ready.set()
        while not stop.is_set():
            for name, url in urls:
                sent = time.perf_counter()
                try:
                    status = client.get(f"{url}/healthz").status_code
                except httpx.HTTPError:
                    status = 0
                found.append(
                    Sample(f"health {name}", sent, (time.perf_counter() - sent) * 1000, status)
                )
            time.sleep(PROBE_INTERVAL_S)
    samples.send(found)


@contextmanager
def probing(urls: dict[str, str]) -> Iterator[list[Sample]]:
    """The liveness prober, in a process of its own so that the load's event loop does not
    delay it; its perf_counter is the same monotonic clock."""
    context = multiprocessing.get_context("spawn")
    ready, stop = context.Event(), context.Event()
    receiving, sending = context.Pipe(duplex=False)
    process = context.Process(target=probe, args=(list(urls.items()), ready, stop, sending))
    process.start()
    if not ready.wait(60):
        process.kill()
        raise RuntimeError("the liveness prober did not start")
    samples: list[Sample] = []
    try:
        yield samples
    finally:
        stop.set()
        samples += receiving.recv()
        process.join(10)


def percentiles(values: list[float]) -> str:
    if not values:
        return f"{'-':>8} {'-':>8} {'-':>8}"
    ordered = sorted(values)

    def at(fraction: float) -> float:
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    return f"{at(0.5):>8.1f} {at(0.99):>8.1f} {ordered[-1]:>8.1f}"


def verdict(values: list[float], target_ms: float) -> str:
    if not values:
        return "no sample"
    p99 = sorted(values)[min(len(values) - 1, int(0.99 * len(values)))]
    return "ok" if p99 < target_ms else f"MISSED (target p99 < {target_ms} ms)"


def report(mode: str, run: Run, lost: int) -> None:
    requests = [sample for sample in run.samples if not sample.kind.startswith("health")]
    unavailable = [sample for sample in requests if sample.status == 503]
    opened_at = min((s.sent + s.ms / 1000 for s in unavailable), default=run.restarted_at)
    after_open = [s.ms for s in unavailable if opened_at <= s.sent < run.restarted_at]
    health = {
        name: [
            s.ms
            for s in run.samples
            if s.kind == f"health {name}" and run.killed_at <= s.sent < run.answering_at
        ]
        for name in ("projects", "chat")
    }
    through = [
        s.sent + s.ms / 1000 - run.answering_at
        for s in requests
        if s.status in (200, 201) and s.sent >= run.answering_at
    ]
    statuses = Counter(f"{s.kind} {s.status}" + (f" {s.code}" if s.code else "") for s in requests)
    down_s, starting_s = run.answering_at - run.killed_at, run.answering_at - run.restarted_at
    print(
        f"\n== {mode}: {len(requests)} requests; the database down {down_s:.1f} s "
        f"(of which {starting_s:.1f} s starting again)"
    )
    for outcome, count in sorted(statuses.items()):
        print(f"  {outcome:<40} {count:>6}")
    failures = sum(1 for s in requests if s.status == 0 or (s.status >= 500 and s.status != 503))
    print(f"  server errors other than 503, or no answer: {failures}")
    print(f"  breaker open {(opened_at - run.killed_at) * 1000:.0f} ms after the kill")
    print(f"  {'':<34} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    print(
        f"  {'503 once the breaker is open':<34} {len(after_open):>6} {percentiles(after_open)}"
        f"  {verdict(after_open, TARGET_503_P99_MS)}"
    )
    for name, latencies in health.items():
        label = f"{name}/healthz during the outage"
        print(
            f"  {label:<34} {len(latencies):>6} {percentiles(latencies)}"
            f"  {verdict(latencies, TARGET_HEALTH_P99_MS)}"
        )
    recovered = f"{min(through) * 1000:.0f} ms" if through else "never"
    print(f"  first 2xx after the database answered again: {recovered}")
    print(f"  acknowledged writes lost: {lost} of {len(run.written)}")


def lost_writes(database: EmbeddedMongo, written: list[str]) -> int:
    with MongoClient(database.uri, serverSelectionTimeoutMS=10_000) as client:
        ids = [ObjectId(value) for value in written]
        found = client[DATABASE].projects.count_documents({"_id": {"$in": ids}})
    return len(ids) - found


def measure(mode: str, args: argparse.Namespace, fake: FakeDeepSeek) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as scratch:
        database = EmbeddedMongo(str(Path(scratch) / "mongo"), port=free_port())
        start(database)
        env = {
            "MONGODB_URI": database.uri,
            "MONGODB_DB": DATABASE,
            "DEEPSEEK_BASE_URL": fake.base_url,
            "DEEPSEEK_API_KEY": "bench-key",
            "ADMIN_API_KEY": ADMIN_KEY,
            "EVENT_SIGNING_KEY": "bench-signing-key",
            "HISTORY_QUEUE": "local",
        }
        serve = gateway if mode == "gateway" else standalone
        try:
            with serve(env) as urls:
                project = httpx.post(
                    f"{urls['projects']}/",
                    json={"name": "outage"},
                    headers={"Authorization": f"Bearer {ADMIN_KEY}"},
                    timeout=30,
                )
                project.raise_for_status()
                run = asyncio.run(load(urls, database, project.json()["id"], args))
            report(mode, run, lost_writes(database, run.written))
        finally:
            database.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--chats", type=int, default=8)
    parser.add_argument("--outage-s", type=float, default=6.0)
    parser.add_argument("--modes", default="gateway,standalone")
    args = parser.parse_args()
    os.sched_setaffinity(0, {LOAD_CORE})
    scenario = Scenario(tokens=20, token_interval_s=0.02)
    with FakeDeepSeek(default_scenario=scenario) as fake:
        for mode in args.modes.split(","):
            measure(mode, args, fake)


if __name__ == "__main__":
    main()
