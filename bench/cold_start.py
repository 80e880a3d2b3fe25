"""Cold start of every function: process start to first successful response, median of N.

Next to each function stands its floor: a bare functions-framework function importing the same
third-party libraries and doing nothing else, measured in the same run. Also printed: the time
to import each function module in a fresh interpreter, and whether it imports `openai`.
Run: `uv run python -m bench.cold_start [--runs 5]`.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from bench.harness import CLI, cpu_seconds, pin_to, process_tree
from devtools.embedded_mongo import free_port
from devtools.gateway import FUNCTIONS_DIR, TARGET, function_names

# Loads a function module as functions-framework does, then reports what it imported.
_PROBE = """
import importlib.util, json, sys, time
started = time.perf_counter()
spec = importlib.util.spec_from_file_location("main", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["main"] = module
spec.loader.exec_module(module)
elapsed = time.perf_counter() - started
stdlib = sys.stdlib_module_names
third_party = sorted({
    name.split(".")[0] for name in sys.modules
    if name.split(".")[0] not in stdlib and not name.startswith(("_", "shared", "main"))
})
registry = __import__("functions_framework")._function_registry
print(json.dumps({"import_s": elapsed, "modules": third_party,
                  "asgi": "handle" in registry.ASGI_FUNCTIONS}))
"""

_FLOOR_FLASK = """{imports}

def handle(request):
    return "ok"
"""
_FLOOR_ASGI = """{imports}
import functions_framework.aio


@functions_framework.aio.http
async def handle(request):
    return "ok"
"""


def probe(source: Path) -> dict:
    output = subprocess.run(
        [sys.executable, "-c", _PROBE, str(source)], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(output)


def floor_source(directory: Path, name: str, modules: list[str], asgi: bool) -> Path:
    imports = "\n".join(
        f"import {module}  # noqa: F401" for module in modules if module.isidentifier()
    )
    folder = directory / name
    folder.mkdir()
    source = folder / "main.py"
    source.write_text((_FLOOR_ASGI if asgi else _FLOOR_FLASK).format(imports=imports))
    return source


# The function starts alone on one core; this script polls from the other, so the two never
# compete and a run measures the function, not the machine's other work.
FUNCTION_CORE, PROBE_CORE = 0, 1


@dataclass
class ColdStart:
    seconds: float  # wall time, spawn to the first 200
    cpu_seconds: float  # CPU the function's processes used until then: steadier than wall time


def time_to_first_response(source: Path, env: dict[str, str], timeout: float = 60) -> ColdStart:
    """From spawning the functions-framework CLI to the first 200 from /healthz."""
    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen(
        [str(CLI), "--source", str(source), "--target", TARGET],
        env={**env, "PORT": str(port)},
        cwd="/",
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=pin_to(FUNCTION_CORE),
    )
    try:
        with httpx.Client(timeout=1) as client:
            while time.perf_counter() - started < timeout:
                try:
                    if client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                        return ColdStart(
                            time.perf_counter() - started, cpu_seconds(process_tree(process.pid))
                        )
                except httpx.TransportError:
                    pass
                time.sleep(0.005)
        raise RuntimeError(f"{source} did not answer within {timeout} s")
    finally:
        process.terminate()
        process.wait(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {PROBE_CORE})
    # A database that is never reached: a cold start must not need one.
    env = {**os.environ, "MONGODB_URI": f"mongodb://127.0.0.1:{free_port()}"}
    print(f"cold start, median of {runs}, {os.cpu_count()} cores; wall and CPU seconds")
    print(
        f"{'function':<18} {'kind':<6} {'start s':>8} {'floor s':>8} {'over s':>7} "
        f"{'cpu s':>6} {'floor':>6} {'over':>6} {'import s':>9}  openai"
    )
    with tempfile.TemporaryDirectory() as scratch:
        for name in function_names():
            source = FUNCTIONS_DIR / name / "main.py"
            probed = probe(source)
            floor = floor_source(Path(scratch), name, probed["modules"], probed["asgi"])
            function_runs, floor_runs = [], []
            for _ in range(runs):
                function_runs.append(time_to_first_response(source, env))
                floor_runs.append(time_to_first_response(floor, env))
            start = statistics.median(run.seconds for run in function_runs)
            baseline = statistics.median(run.seconds for run in floor_runs)
            cpu = statistics.median(run.cpu_seconds for run in function_runs)
            cpu_floor = statistics.median(run.cpu_seconds for run in floor_runs)
            print(
                f"{name:<18} {'asgi' if probed['asgi'] else 'flask':<6} {start:>8.3f} "
                f"{baseline:>8.3f} {start - baseline:>+7.3f} {cpu:>6.2f} {cpu_floor:>6.2f} "
                f"{cpu - cpu_floor:>+6.2f} {probed['import_s']:>9.3f}  "
                f"{'yes' if 'openai' in probed['modules'] else 'no'}"
            )


if __name__ == "__main__":
    main()
