"""Cold start of every function: process start to first successful response.

Next to each function stands its floor: a bare functions-framework function importing the same
third-party modules, in the same order, and doing nothing else. The gap between the two is what
the project's own code costs. Runs go in pairs, function then floor or floor then function in
turn, and each round visits every function before the next: a busy moment on this shared machine
lands on both halves of a pair, so the gap is the median of the paired differences and its spread
their interquartile range. CPU time of the started processes (steadier than wall time when other
work shares the cores) is printed next to it, then each function module's import time in a fresh
interpreter (wall and CPU, median of 5), the CPU it then takes to build every model its routes
declare (`models`: the most its first requests together pay for models deferred at import) and
whether it imports `openai`; `ours ms` is the part of the import spent in our own `shared`
modules (the self time `-X importtime` gives them, summed; `mods` counts them), the figure least
disturbed by other work on the machine. `--imports-only` prints only the import columns.

Modules load from bytecode compiled beforehand, as in the image (its build compiles everything):
an untimed warm-up start of each function and floor writes that bytecode to a scratch cache.
`--from-source` compiles every module at each start instead (a checkout with
PYTHONDONTWRITEBYTECODE and no cache).
Run: `uv run --frozen python -m bench.cold_start [--runs 9] [--from-source] [--imports-only]
[function ...]`.
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

# The most the function may add to its floor (issue #3).
TARGET_GAP_S = 0.3
# Fresh interpreters that import each function for the import columns (their median).
IMPORT_PROBES = 5

# Loads a module as functions-framework does, then reports the third-party modules it loaded, in
# load order. Only modules importable by their own name count: extension modules register
# pseudo-modules (cython_runtime) that no import statement can load.
_PROBE = """
import importlib.util, json, sys, time
started, started_cpu = time.perf_counter(), time.process_time()
spec = importlib.util.spec_from_file_location("main", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["main"] = module
spec.loader.exec_module(module)
elapsed, elapsed_cpu = time.perf_counter() - started, time.process_time() - started_cpu
stdlib = sys.stdlib_module_names
third_party = [
    name for name, loaded in list(sys.modules.items())
    if name.split(".")[0] not in stdlib and not name.startswith(("_", "shared", "main"))
    and getattr(getattr(loaded, "__spec__", None), "name", None) == name
]
registry = __import__("functions_framework")._function_registry
asgi = "handle" in registry.ASGI_FUNCTIONS

# What deferring model building moved out of the import: every model the routes declare, built.
import typing, pydantic
def models(annotation):
    if isinstance(annotation, type) and issubclass(annotation, pydantic.BaseModel):
        yield annotation
    for argument in typing.get_args(annotation):
        yield from models(argument)
started_cpu = time.process_time()
router = getattr(module, "router", None)  # a floor has none
for route in router.routes if router else []:
    for annotation in (route.body, route.query, route.response, route.events):
        for model in models(annotation):
            model.model_rebuild()
print(json.dumps({"import_s": elapsed, "import_cpu_s": elapsed_cpu, "modules": third_party,
                  "asgi": asgi, "first_use_cpu_s": time.process_time() - started_cpu}))
"""

_FLOOR_FLASK = """import importlib

for name in {modules!r}:
    importlib.import_module(name)


def handle(request):
    return "ok"
"""
_FLOOR_ASGI = """import importlib

import functions_framework.aio

for name in {modules!r}:
    importlib.import_module(name)


@functions_framework.aio.http
async def handle(request):
    return "ok"
"""


@dataclass
class Probed:
    import_s: float
    import_cpu_s: float
    modules: list[str]
    asgi: bool
    first_use_cpu_s: float  # building every model the routes declare, after the import
    own_import_s: float  # the self time of our own modules in the import
    own_modules: int


def probe(source: Path, env: dict[str, str]) -> Probed:
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", _PROBE, str(source)],
        capture_output=True,
        text=True,
        env=env,
        cwd="/",
    )
    if result.returncode != 0:
        raise RuntimeError(f"importing {source} failed:\n{result.stderr}")
    # `import time: <self us> | <cumulative us> | <indented module name>`
    own = [
        int(fields[0].split(":")[1])
        for fields in (line.split("|") for line in result.stderr.splitlines())
        if len(fields) == 3 and fields[2].strip().split(".")[0] == "shared"
    ]
    return Probed(**json.loads(result.stdout), own_import_s=sum(own) / 1e6, own_modules=len(own))


def floor_source(directory: Path, name: str, modules: list[str], asgi: bool) -> Path:
    folder = directory / name
    folder.mkdir()
    source = folder / "main.py"
    source.write_text((_FLOOR_ASGI if asgi else _FLOOR_FLASK).format(modules=modules))
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
    # A file, not a pipe: a chatty process never blocks on it, and a failed start can show it.
    with tempfile.TemporaryFile() as errors:
        started = time.perf_counter()
        process = subprocess.Popen(
            [str(CLI), "--source", str(source), "--target", TARGET],
            env={**env, "PORT": str(port)},
            cwd="/",
            stdout=subprocess.DEVNULL,
            stderr=errors,
            preexec_fn=pin_to(FUNCTION_CORE),
        )
        try:
            with httpx.Client(timeout=1) as client:
                while time.perf_counter() - started < timeout and process.poll() is None:
                    try:
                        if client.get(f"http://127.0.0.1:{port}/healthz").status_code == 200:
                            return ColdStart(
                                time.perf_counter() - started,
                                cpu_seconds(process_tree(process.pid)),
                            )
                    except httpx.TransportError:
                        pass
                    time.sleep(0.005)
        finally:
            process.terminate()
            process.wait(timeout=10)
        errors.seek(0)
        output = errors.read().decode(errors="replace")[-2000:]
        raise RuntimeError(f"{source} did not answer within {timeout} s or exited:\n{output}")


@dataclass
class Subject:
    name: str
    source: Path
    floor: Path
    probed: Probed
    pairs: list[tuple[ColdStart, ColdStart]]  # (function, floor), measured back to back

    def median(self, side: int, cpu: bool = False) -> float:
        return statistics.median(
            pair[side].cpu_seconds if cpu else pair[side].seconds for pair in self.pairs
        )

    def gaps(self, cpu: bool = False) -> list[float]:
        if cpu:
            return [function.cpu_seconds - floor.cpu_seconds for function, floor in self.pairs]
        return [function.seconds - floor.seconds for function, floor in self.pairs]

    def row(self) -> str:
        gaps = self.gaps()
        gap = statistics.median(gaps)
        low, _, high = (
            statistics.quantiles(gaps, n=4, method="inclusive")
            if len(gaps) > 1
            else (gap, gap, gap)
        )
        return (
            f"{self.name:<18} {'asgi' if self.probed.asgi else 'flask':<6} "
            f"{self.median(0):>7.3f} {self.median(1):>7.3f} {gap:>+7.3f} "
            f"{f'{low:+.3f}..{high:+.3f}':>15} "
            f"{self.median(0, cpu=True):>6.2f} {self.median(1, cpu=True):>6.2f} "
            f"{statistics.median(self.gaps(cpu=True)):>+6.2f} {self.probed.import_s:>8.3f} "
            f"{self.probed.import_cpu_s:>5.2f} {self.probed.first_use_cpu_s:>7.3f} "
            f"{self.probed.own_import_s * 1000:>7.1f} {self.probed.own_modules:>4}  "
            f"{'yes' if 'openai' in self.probed.modules else 'no':<6} "
            f"{'met' if gap <= TARGET_GAP_S else 'MISSED'}"
        )

    def import_row(self) -> str:
        return (
            f"{self.name:<18} {'asgi' if self.probed.asgi else 'flask':<6} "
            f"{self.probed.import_s:>8.3f} {self.probed.import_cpu_s:>5.2f} "
            f"{self.probed.first_use_cpu_s:>7.3f} {self.probed.own_import_s * 1000:>7.1f} "
            f"{self.probed.own_modules:>4}"
        )


HEADER = (
    f"{'function':<18} {'kind':<6} {'start s':>7} {'floor s':>7} {'gap s':>7} "
    f"{'gap p25..p75':>15} {'cpu s':>6} {'floor':>6} {'gap':>6} {'import s':>8} {'cpu':>5} "
    f"{'models':>7} {'ours ms':>7} {'mods':>4}  {'openai':<6} target"
)
IMPORT_HEADER = (
    f"{'function':<18} {'kind':<6} {'import s':>8} {'cpu':>5} {'models':>7} {'ours ms':>7} "
    f"{'mods':>4}"
)


def prepare(scratch: Path, name: str, env: dict[str, str], warm_env: dict[str, str]) -> Subject:
    """Probe a function, write its floor, and start both once untimed: that writes their bytecode
    (unless compiling from source) and puts their files in the page cache for every timed run."""
    source = FUNCTIONS_DIR / name / "main.py"
    # The first probe also writes the bytecode of what the import loads.
    first = probe(source, warm_env)
    floor = floor_source(scratch, name, first.modules, first.asgi)
    time_to_first_response(source, warm_env)
    time_to_first_response(floor, warm_env)
    timed = [probe(source, env) for _ in range(IMPORT_PROBES)]
    import_s = statistics.median(run.import_s for run in timed)
    import_cpu_s = statistics.median(run.import_cpu_s for run in timed)
    first_use_cpu_s = statistics.median(run.first_use_cpu_s for run in timed)
    own_import_s = statistics.median(run.own_import_s for run in timed)
    missing = set(first.modules) - set(probe(floor, env).modules)
    if missing:
        raise RuntimeError(f"the floor of {name} does not load {sorted(missing)}")
    return Subject(
        name,
        source,
        floor,
        Probed(
            import_s,
            import_cpu_s,
            first.modules,
            first.asgi,
            first_use_cpu_s,
            own_import_s,
            first.own_modules,
        ),
        [],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("functions", nargs="*", help="only these functions (default: all)")
    parser.add_argument("--runs", type=int, default=9, help="function/floor pairs per function")
    parser.add_argument(
        "--from-source", action="store_true", help="compile every module at each start"
    )
    parser.add_argument(
        "--imports-only", action="store_true", help="only the import columns, no timed starts"
    )
    arguments = parser.parse_args()
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {PROBE_CORE})
    with tempfile.TemporaryDirectory() as scratch_dir:
        scratch = Path(scratch_dir)
        # A database that is never reached: a cold start must not need one. A cache of our own,
        # empty at first, so bytecode lying around in the checkout plays no part.
        env = {
            **os.environ,
            "MONGODB_URI": f"mongodb://127.0.0.1:{free_port()}",
            "PYTHONPYCACHEPREFIX": str(scratch / "bytecode"),
            "PYTHONDONTWRITEBYTECODE": "1",
        }
        warm_env = env
        if not arguments.from_source:
            warm_env = {
                key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"
            }
        names = arguments.functions or function_names()
        subjects = [prepare(scratch, name, env, warm_env) for name in names]
        if arguments.imports_only:
            print(f"imports, median of {IMPORT_PROBES} fresh interpreters each")
            print(IMPORT_HEADER)
            for subject in subjects:
                print(subject.import_row())
            return
        load_before = os.getloadavg()[0]
        for round_index in range(arguments.runs):
            for subject in subjects:
                if round_index % 2 == 0:
                    function = time_to_first_response(subject.source, env)
                    floor = time_to_first_response(subject.floor, env)
                else:
                    floor = time_to_first_response(subject.floor, env)
                    function = time_to_first_response(subject.source, env)
                subject.pairs.append((function, floor))
        load_after = os.getloadavg()[0]
    print(
        f"cold start, {arguments.runs} function/floor pairs each, "
        f"{'compiling from source' if arguments.from_source else 'from compiled bytecode'}, "
        f"{os.cpu_count()} cores, load {load_before:.1f} -> {load_after:.1f}; "
        f"wall and CPU seconds (medians), target gap <= {TARGET_GAP_S} s"
    )
    print(HEADER)
    for subject in subjects:
        print(subject.row())


if __name__ == "__main__":
    main()
