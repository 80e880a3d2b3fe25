"""What every benchmark needs: functions started as deployed, and a bounded load generator.

All traffic goes to 127.0.0.1; every run is bounded by a request count and a time limit.
"""

import argparse
import asyncio
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from pymongo import MongoClient

from devtools.embedded_mongo import EmbeddedMongo, free_port
from devtools.gateway import FUNCTIONS_DIR, TARGET
from devtools.processes import wait_until_healthy

CLI = Path(sys.executable).parent / "functions-framework"
# The streaming benches pin what they measure alone to one core, everything else to the other.
FUNCTION_CORE, LOAD_CORE = 0, 1
# Their fake upstream's answer: a first token at 200 ms, then 50 tokens 10 ms apart.
TOKENS, FIRST_TOKEN_MS, TOKEN_INTERVAL_MS = 50, 200, 10


def pin_to(core: int) -> Callable[[], None]:
    """A `preexec_fn` that pins the child process (and what it forks) to one core."""
    return lambda: os.sched_setaffinity(0, {core})


def start_function(
    source: Path, env: dict[str, str], port: int, core: int | None = None
) -> subprocess.Popen[bytes]:
    """The functions-framework CLI (gunicorn) serving `source` on `port`, exactly as in its
    image, once it answers /healthz; pinned with its workers to `core` when one is given."""
    process = subprocess.Popen(
        [str(CLI), "--source", str(source), "--target", TARGET],
        env={**os.environ, **env, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=None if core is None else pin_to(core),
    )
    try:
        wait_until_healthy(f"http://127.0.0.1:{port}", process)
    except BaseException:
        stop(process)
        raise
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


@contextmanager
def running_function(
    name: str, env: dict[str, str] | None = None, root: Path | None = None
) -> Iterator[str]:
    """One function as in its image, on a free port, with `env` over this process's environment;
    from another checkout (its `functions/` and `shared/`) when `root` names one."""
    port = free_port()
    env = dict(env or {})
    if root is not None:
        env["PYTHONPATH"] = str(root)
    functions_dir = FUNCTIONS_DIR if root is None else root / "functions"
    process = start_function(functions_dir / name / "main.py", env, port)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(process)


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (gunicorn's master and its worker)."""
    tree = [pid]
    for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
        tree += process_tree(int(child))
    return tree


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of the processes."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))] if ordered else float("nan")


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def percentile(self, fraction: float) -> float:
        return percentile(self.latencies_ms, fraction)

    def row(self, label: str) -> str:
        return (
            f"{label:<44} {self.per_second:>9.0f} {self.percentile(0.5):>9.2f} "
            f"{self.percentile(0.99):>9.2f} {self.errors:>6}"
        )


HEADER = f"{'scenario':<44} {'req/s':>9} {'p50 ms':>9} {'p99 ms':>9} {'errors':>6}"


def load(
    url: str,
    *,
    concurrency: int,
    total: int,
    max_seconds: float,
    headers: dict[str, str] | None = None,
    expect_status: int = 200,
) -> LoadResult:
    """GET `url` `total` times from `concurrency` workers (stopping early at `max_seconds`)."""

    async def run() -> LoadResult:
        latencies: list[float] = []
        errors = 0
        remaining = total
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(limits=limits, timeout=30, headers=headers) as client:
            started = time.perf_counter()
            deadline = started + max_seconds

            async def worker() -> None:
                nonlocal remaining, errors
                while remaining > 0 and time.perf_counter() < deadline:
                    remaining -= 1
                    sent = time.perf_counter()
                    try:
                        response = await client.get(url)
                        ok = response.status_code == expect_status
                    except httpx.HTTPError:
                        ok = False
                    latencies.append((time.perf_counter() - sent) * 1000)
                    errors += 0 if ok else 1

            await asyncio.gather(*(worker() for _ in range(concurrency)))
            elapsed = time.perf_counter() - started
        return LoadResult(len(latencies), errors, elapsed, latencies)

    return asyncio.run(run())


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


@dataclass(frozen=True)
class Sample:
    ttft_ms: float
    total_ms: float
    ok: bool


FAILED = Sample(float("nan"), float("nan"), ok=False)


async def one_request(
    port: int, path: str, body: bytes, first_token: re.Pattern[bytes], token: str
) -> Sample:
    """POST and read the streamed answer on a raw socket: the cheapest client Python allows."""
    started = time.perf_counter()
    ttft = None
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return FAILED
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Accept: text/event-stream\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    received = b""
    try:
        while chunk := await reader.read(65536):
            if ttft is None:
                received += chunk
                if first_token.search(received):
                    ttft = (time.perf_counter() - started) * 1000
            else:
                received = received[-512:] + chunk
    except OSError:
        return FAILED
    finally:
        writer.close()
    total = (time.perf_counter() - started) * 1000
    ok = ttft is not None and (b"[DONE]" in received or b"event: done" in received)
    return Sample(ttft or float("nan"), total, ok)


async def run_load(
    port: int,
    path: str,
    bodies: list[bytes],
    first_token: re.Pattern[bytes],
    concurrency: int,
    token: str,
    max_seconds: float,
) -> tuple[list[Sample], float]:
    """Send `bodies` from `concurrency` streams; none starts after `max_seconds`, and one still
    running then fails. The samples of the requests sent, and the seconds they took."""
    queue = list(reversed(bodies))
    samples: list[Sample] = []
    started = time.perf_counter()
    deadline = started + max_seconds

    async def worker() -> None:
        while queue and (left := deadline - time.perf_counter()) > 0:
            body = queue.pop()
            try:
                sample = await asyncio.wait_for(
                    one_request(port, path, body, first_token, token), left
                )
            except TimeoutError:
                sample = FAILED
            samples.append(sample)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return samples, time.perf_counter() - started


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


@dataclass
class Load:
    """One level's requests, sent to one path with one bearer token and measured; the first
    token is the first match of `first_token` in the answer."""

    label: str
    concurrency: int
    path: str
    bodies: list[bytes]
    first_token: re.Pattern[bytes]
    token: str
    max_seconds: float = 600

    def measure(
        self, port: int, pids: list[int], settle: Callable[[int], None] | None = None
    ) -> tuple[dict, float]:
        """The summary row (requests never sent in time count as errors), and the CPU ms per
        request sent the processes spent, until `settle` returns: given the number of
        requests sent, it waits for the work they leave behind, which counts too."""
        before = cpu_seconds(pids)
        samples, seconds = asyncio.run(
            run_load(
                port,
                self.path,
                self.bodies,
                self.first_token,
                self.concurrency,
                self.token,
                self.max_seconds,
            )
        )
        if settle is not None:
            settle(len(samples))
        cpu_ms = (cpu_seconds(pids) - before) * 1000 / max(1, len(samples))
        row = summary(self.label, self.concurrency, samples, seconds)
        row["errors"] += len(self.bodies) - len(samples)
        return row, cpu_ms


@dataclass
class Served:
    """A process serving HTTP on 127.0.0.1, with what it forks."""

    process: subprocess.Popen[bytes]
    port: int

    @classmethod
    def start(cls, source: Path, env: dict[str, str]) -> "Served":
        """A function under the functions-framework CLI (gunicorn + uvicorn worker, as in its
        image), pinned alone to the function core."""
        port = free_port()
        return cls(start_function(source, env, port, core=FUNCTION_CORE), port)

    @property
    def pids(self) -> list[int]:
        return process_tree(self.process.pid)

    def stop(self) -> None:
        stop(self.process)


def start_fake_upstream() -> Served:
    """The fake DeepSeek on the load core, answering as TOKENS, FIRST_TOKEN_MS and
    TOKEN_INTERVAL_MS say (no health route: a caller checks it with a models listing)."""
    port = free_port()
    command = [
        sys.executable, "-m", "devtools.fake_deepseek", "--port", str(port),
        "--first-token-ms", str(FIRST_TOKEN_MS), "--tokens", str(TOKENS),
        "--token-interval-ms", str(TOKEN_INTERVAL_MS),
    ]  # fmt: skip
    return Served(spawn_pinned(LOAD_CORE, command, dict(os.environ)), port)


@contextmanager
def mongodb(uri: str | None, database: str) -> Iterator[tuple[str, str, list[int]]]:
    """(URI, database, the server's processes when it runs here): an embedded SecantusDB pinned
    to the load core, or a database of the bench's own on the given server, dropped at the end."""
    if uri is None:
        with EmbeddedMongo(":memory:") as mongo:
            assert mongo.process is not None
            os.sched_setaffinity(mongo.process.pid, {LOAD_CORE})
            yield mongo.uri, database, process_tree(mongo.process.pid)
        return
    database = f"{database}_{os.getpid()}"
    try:
        yield uri, database, []
    finally:
        with MongoClient(uri) as client:
            client.drop_database(database)


@dataclass
class LaterWrites:
    """Documents a function stores after its streams end (`per_request` for each request, in
    `collection`, those matching `query`): that work belongs to the requests just measured, so
    the bench waits for it before reading the function's CPU."""

    uri: str
    database: str
    collection: str
    query: dict
    per_request: int
    expected: int = 0

    def wait(self, requests: int, timeout_s: float = 60) -> None:
        """Wait for the writes of `requests` more requests."""
        self.expected += self.per_request * requests
        with MongoClient(self.uri) as client:
            collection = client[self.database][self.collection]
            deadline = time.monotonic() + timeout_s
            while (stored := collection.count_documents(self.query)) < self.expected:
                if time.monotonic() > deadline:
                    sys.exit(
                        f"{self.collection}: {stored} of {self.expected} documents stored "
                        f"within {timeout_s:g} s"
                    )
                time.sleep(0.05)


def add_load_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments every streaming bench takes: its levels, how many requests each runs, and
    the database."""
    parser.add_argument("--levels", default="1,10,100", help="concurrent streams, comma-separated")
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


def requests_per_level(arguments: argparse.Namespace) -> dict[int, int]:
    """How many requests each level sends, in order; exits on a machine of fewer than two cores
    (the target and the load each need one)."""
    if (os.cpu_count() or 1) < 2:
        sys.exit("needs two cores")
    levels = [int(level) for level in arguments.levels.split(",")]
    return {
        level: max(level * arguments.requests_per_stream, arguments.min_requests)
        for level in levels
    }
