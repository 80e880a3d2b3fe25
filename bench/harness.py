"""What every benchmark needs: functions started as deployed, and a bounded load generator.

All traffic goes to 127.0.0.1; every run is bounded by a request count and a time limit.
"""

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from devtools.embedded_mongo import free_port
from devtools.gateway import FUNCTIONS_DIR, TARGET
from devtools.processes import wait_until_healthy

CLI = Path(sys.executable).parent / "functions-framework"


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
        ordered = sorted(self.latencies_ms)
        if not ordered:
            return float("nan")
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

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
