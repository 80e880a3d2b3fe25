"""The image, without Docker: its build commands and its exact entry command, as plain processes.

The build context is laid out as `.dockerignore` allows, the build stage's `uv` commands build the
image's virtual environment in it, and the final stage's CMD runs there with the final stage's ENV
plus what each manifest sets: every function must then answer health and readiness checks.
"""

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from devtools.embedded_mongo import free_port
from devtools.gateway import function_names
from devtools.manifests import FUNCTIONS, function_environment

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
# A cold start is user-visible with scale-to-zero: from exec to a healthy answer.
COLD_START_BUDGET_S = 8.0


@dataclass
class Stage:
    base: str
    name: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    workdir: str = "/"
    user: str = "root"
    runs: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)


def instructions(text: str) -> Iterator[tuple[str, str]]:
    """(INSTRUCTION, arguments), continuation lines joined, comments and blanks skipped."""
    logical = ""
    for line in text.splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1] + " "
            continue
        logical += line
        keyword, _, arguments = logical.strip().partition(" ")
        yield keyword.upper(), arguments.strip()
        logical = ""


def parse_env(arguments: str) -> dict[str, str]:
    """`ENV a=1 b="two $a"`: the values as written, expanded when the environment is made."""
    return dict(word.partition("=")[::2] for word in shlex.split(arguments))


def parse_dockerfile(text: str) -> list[Stage]:
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, value in instructions(text):
        if keyword == "ARG" and not stages:
            name, _, default = value.partition("=")
            arguments[name] = default
        elif keyword == "FROM":
            words = value.split()
            base = re.sub(r"\$\{?(\w+)\}?", lambda match: arguments[match[1]], words[0])
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=base, name=name))
        elif keyword == "ENV":
            stages[-1].env |= parse_env(value)
        elif keyword == "WORKDIR":
            stages[-1].workdir = value
        elif keyword == "USER":
            stages[-1].user = value
        elif keyword == "RUN":
            stages[-1].runs.append(re.sub(r"--mount=\S+\s*", "", value))
        elif keyword in {"CMD", "ENTRYPOINT"}:
            stages[-1].command = json.loads(value)
    return stages


STAGES = parse_dockerfile(DOCKERFILE.read_text())
FINAL = STAGES[-1]


def ignore_rules() -> list[tuple[bool, str]]:
    rules = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.removeprefix("!").strip("/")))
    return rules


def ignored(relative: str, rules: list[tuple[bool, str]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    parts = relative.split("/")
    prefixes = ["/".join(parts[:index]) for index in range(1, len(parts) + 1)]
    verdict = False
    for negated, pattern in rules:
        patterns = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatch(prefix, p) for prefix in prefixes for p in patterns):
            verdict = not negated
    return verdict


def build_context(target: Path) -> None:
    rules = ignore_rules()
    for directory, subdirectories, files in os.walk(ROOT):
        relative_directory = Path(directory).relative_to(ROOT)
        # Skip ignored trees nothing re-includes (the venv, .git) instead of walking them.
        subdirectories[:] = [
            sub
            for sub in subdirectories
            if not ignored(str(relative_directory / sub), rules)
            or any(
                negated and pattern.startswith(f"{relative_directory / sub}/".removeprefix("./"))
                for negated, pattern in rules
            )
        ]
        for name in files:
            relative = str(relative_directory / name).removeprefix("./")
            if not ignored(relative, rules):
                (target / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / relative, target / relative)


def in_image(value: str, workdir: str, root: Path) -> str:
    """A path inside the image, moved to where the image's working directory is laid out here."""
    return value.replace(workdir, str(root))


def image_environment(stage: Stage, root: Path) -> dict[str, str]:
    """The stage's ENV over this machine's PATH (the base image's), its paths moved to `root`."""
    # Without the test runner's own virtual environment, so nothing is found there by mistake.
    path = os.pathsep.join(
        entry
        for entry in os.environ["PATH"].split(os.pathsep)
        if not entry.startswith(f"{sys.prefix}/")
    )
    environment = {"PATH": path}
    for key, value in stage.env.items():
        expanded = re.sub(r"\$\{?(\w+)\}?", lambda match: environment.get(match[1], ""), value)
        environment[key] = in_image(expanded, stage.workdir, root)
    return environment


@pytest.fixture(scope="module")
def image_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image's working directory: the build context, then the build stage's commands."""
    root = tmp_path_factory.mktemp("image") / "app"
    root.mkdir()
    build_context(root)
    (build,) = [stage for stage in STAGES if stage.name == "build"]
    assert build.workdir == FINAL.workdir, "the venv's paths must be the same in both stages"
    # The builder's own environment (proxies, certificates) under the build stage's ENV.
    inherited = {key: value for key, value in os.environ.items() if key != "VIRTUAL_ENV"}
    environment = inherited | image_environment(build, root)
    for command in build.runs:
        if command.startswith("pip install"):
            continue  # installs uv itself, which this machine has
        result = subprocess.run(
            in_image(command, build.workdir, root),
            shell=True,
            cwd=root,
            env=environment,
            timeout=300,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"{command}: {result.stderr}"
    return root


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint") or shutil.which(
        "hadolint", path=Path(sys.executable).parent
    )
    if hadolint is None:
        pytest.skip("hadolint is not installed (the dev dependency group provides it)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_image_is_multi_stage_and_runs_as_a_user() -> None:
    assert len(STAGES) >= 2
    assert FINAL.user not in {"root", "0"}
    assert FINAL.command, "the final stage has a CMD"
    syncs = [command for stage in STAGES for command in stage.runs if "uv sync" in command]
    assert syncs and all("--frozen" in c and "--no-dev" in c for c in syncs)
    # Nothing is built or installed in the final stage: it only adds its user.
    assert all(command.startswith("useradd") for command in FINAL.runs), FINAL.runs


def test_the_build_context_holds_only_what_the_image_needs(image_root: Path) -> None:
    present = {path.name for path in image_root.iterdir()}
    assert {"pyproject.toml", "uv.lock", "shared", "functions"} <= present
    assert not present & {"tests", "devtools", "bench", "knative", ".git", ".env", ".data"}
    assert not list(image_root.rglob("__pycache__/*.cpython-*.opt-*.pyc"))


def test_the_image_has_no_dev_dependencies(image_root: Path) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = {re.split(r"[<>=\[ ;]", item)[0].lower() for item in project["dependency-groups"]["dev"]}
    site = next((image_root / ".venv" / "lib").glob("python*/site-packages"))
    installed = {
        re.sub(r"-[^-]+\.dist-info$", "", path.name).lower().replace("_", "-")
        for path in site.glob("*.dist-info")
    }
    runtime = {
        re.split(r"[<>=\[ ;]", item)[0].lower() for item in project["project"]["dependencies"]
    }
    assert runtime <= installed
    assert not dev & installed, f"dev dependencies in the image: {dev & installed}"


def start(name: str, root: Path, mongo_uri: str, database: str) -> tuple[subprocess.Popen, str]:
    """One function started by the image's command, as its manifests configure it."""
    port = free_port()
    env = {
        **image_environment(FINAL, root),
        **function_environment(name, FUNCTIONS[name]),
        # What the platform and the Secret provide; loopback only, here.
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "MONGODB_URI": mongo_uri,
        "MONGODB_DB": database,
    }
    process = subprocess.Popen(
        FINAL.command, cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    return process, f"http://127.0.0.1:{port}"


def wait_healthy(process: subprocess.Popen[bytes], url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.02)
    stderr = process.stderr.read().decode() if process.poll() is not None else ""
    raise AssertionError(f"{url} never became healthy: {stderr}")


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def served(image_root: Path, mongo_uri: str) -> Iterator[dict[str, str]]:
    """Every function started by the image's command at once: name -> url."""
    database = f"image_{uuid.uuid4().hex[:8]}"
    started = {name: start(name, image_root, mongo_uri, database) for name in function_names()}
    try:
        for process, url in started.values():
            wait_healthy(process, url)
        yield {name: url for name, (_, url) in started.items()}
    finally:
        for process, _ in started.values():
            stop(process)


@pytest.mark.parametrize("name", function_names())
def test_the_image_command_serves_every_function(served: dict[str, str], name: str) -> None:
    url = served[name]
    assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
    assert httpx.get(f"{url}/no/such/route").json()["error"]["code"] == "route_not_found"
    # Built from the runtime dependencies alone, by the first request for it.
    document = httpx.get(f"{url}/openapi.json").json()
    assert (document["openapi"], document["servers"][0]["url"]) == ("3.1.0", ".")


def test_cold_starts_stay_fast(image_root: Path, mongo_uri: str) -> None:
    """From exec to a healthy answer, one function at a time, as a scale-from-zero start."""
    seconds = {}
    for name in function_names():
        began = time.monotonic()
        process, url = start(name, image_root, mongo_uri, "cold_start")
        try:
            wait_healthy(process, url)
            seconds[name] = round(time.monotonic() - began, 2)
        finally:
            stop(process)
    assert max(seconds.values()) < COLD_START_BUDGET_S, seconds


@pytest.mark.parametrize("name", function_names())
def test_a_function_imports_no_development_module(image_root: Path, name: str) -> None:
    """Dev tools stay out of a function's cold start (the OpenAPI module is in, at no cost:
    tests/test_cold_start.py)."""
    script = (
        "import json, runpy, sys; "
        f"runpy.run_path('functions/{name}/main.py', run_name='main'); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    modules = json.loads(
        subprocess.run(
            [str(image_root / ".venv" / "bin" / "python"), "-c", script],
            cwd=image_root,
            env={"PATH": os.environ["PATH"]},
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout
    )
    assert not {"devtools", "swagger_ui_bundle", "schemathesis"} & set(modules)
