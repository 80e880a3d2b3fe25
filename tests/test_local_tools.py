"""The newcomer's path: `make run` and `make db` on the embedded database, `make help`, and a
suite pointed at a database that is not there."""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from devtools.embedded_mongo import EmbeddedMongo, StorageInUse, free_port
from devtools.processes import wait_until_healthy
from tests.conftest import bearer

ROOT = Path(__file__).resolve().parent.parent
# What the test environment configures: left out, the local tools fall back to their defaults.
CONFIGURED = {
    "MONGODB_URI",
    "MONGODB_DB",
    "CORS_ORIGINS",
    "DEEPSEEK_BASE_URL",
    "DEEPSEEK_API_KEY",
    "API_KEY",
    "EVENT_SIGNING_KEY",
    "ADMIN_API_KEY",
    "OIDC_ISSUER",
    "OIDC_AUDIENCE",
    "TEST_MONGODB_URI",
    "EVENT_SPOOL_DIR",
}


def local_environment(data_dir: Path, **variables: str) -> dict[str, str]:
    """A shell's environment with nothing configured, keeping its files in `data_dir`."""
    kept = {name: value for name, value in os.environ.items() if name not in CONFIGURED}
    return {**kept, "DATA_DIR": str(data_dir), "PYTHONPATH": str(ROOT), **variables}


def start(module: str, *arguments: str, env: dict[str, str], cwd: Path) -> subprocess.Popen[str]:
    """`python -m <module>` as the Makefile runs it, its output in `cwd/output`."""
    output = open(cwd / "output", "w")  # noqa: SIM115 (the process writes to it)
    return subprocess.Popen(
        [sys.executable, "-m", module, *arguments],
        env=env,
        cwd=cwd,
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )


def stop(process: subprocess.Popen, signum: int = signal.SIGTERM) -> int:
    if process.poll() is None:
        process.send_signal(signum)
        try:
            return process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def holder_uri(data_dir: Path) -> str:
    """The MONGODB_URI the server on `data_dir/mongo` was started with, from its lock file."""
    return (data_dir / "mongo.lock").read_text().split("MONGODB_URI=")[1].strip()


def answers(uri: str) -> bool:
    try:
        with MongoClient(uri, serverSelectionTimeoutMS=500) as client:
            client.admin.command("ping")
        return True
    except PyMongoError:
        return False


def test_free_ports_are_never_handed_out_twice() -> None:
    """Servers started side by side each get their own port: a repeated one would let one URL
    silently reach another function (the kernel does offer a closed probe's port again)."""
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)


@pytest.fixture
def function_alone(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[str]]]:
    """`make run FUNCTION=prompts` on a free port, nothing configured, data in `tmp_path`."""
    port = free_port()
    env = local_environment(tmp_path / "data", PORT=str(port))
    process = start("devtools.run", "prompts", env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(url, process, timeout=90)
        yield url, tmp_path, process
    finally:
        stop(process)


def test_make_run_serves_one_function_on_the_embedded_defaults(
    function_alone: tuple[str, Path, subprocess.Popen[str]],
) -> None:
    url, folder, process = function_alone
    assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
    admin_key = (folder / "data" / "admin-api-key").read_text().strip()
    listed = httpx.get(f"{url}/", headers=bearer(admin_key), timeout=10)
    assert listed.status_code == 200, listed.text
    assert listed.json()["items"] == []
    assert httpx.get(f"{url}/", timeout=10).status_code == 401
    database = holder_uri(folder / "data")
    assert answers(database)

    assert stop(process) == 0
    printed = (folder / "output").read_text()
    assert f"export BA_URL={url} BA_API_KEY={admin_key}" in printed
    assert not answers(database)  # the database stopped with the function


def test_a_data_folder_in_use_is_one_clear_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    with EmbeddedMongo(str(data / "mongo")) as holder:
        started = time.monotonic()
        process = start("devtools.db", env=local_environment(data), cwd=tmp_path)
        code = process.wait(timeout=60)
        assert time.monotonic() - started < 30
    assert code == 1
    lines = (tmp_path / "output").read_text().strip().splitlines()
    assert lines == [
        f"error: {data / 'mongo'} is already in use by pid {os.getpid()}, "
        f"MONGODB_URI={holder.uri}: stop it, or set that MONGODB_URI to share its database"
    ]


def test_a_data_folder_a_server_holds_by_hand_is_named_too(tmp_path: Path) -> None:
    folder, port = tmp_path / "mongo", free_port()
    server = str(Path(sys.executable).parent / "secantusd-py")
    by_hand = subprocess.Popen(
        [server, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(folder)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not answers(f"mongodb://127.0.0.1:{port}/?directConnection=true"):
            assert time.monotonic() < deadline, "SecantusDB did not start"
        second = EmbeddedMongo(str(folder), log_path=tmp_path / "mongo.log")
        with pytest.raises(StorageInUse, match="in use by another SecantusDB process"):
            second.start()
    finally:
        stop(by_hand)


def test_make_db_prints_its_uri_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    process = start("devtools.db", env=local_environment(tmp_path / "data"), cwd=tmp_path)
    try:
        deadline = time.monotonic() + 60
        while not (found := re.search(r"MONGODB_URI='(\S+)'", (tmp_path / "output").read_text())):
            assert process.poll() is None, (tmp_path / "output").read_text()
            assert time.monotonic() < deadline, "make db printed no MONGODB_URI"
            time.sleep(0.1)
        uri = found.group(1)
        assert answers(uri)
    finally:
        code = stop(process, signal.SIGINT)
    assert code == 0
    assert not answers(uri)


def test_an_unreachable_test_database_stops_the_suite_at_once() -> None:
    uri = f"mongodb://tester:secret@127.0.0.1:{free_port()}/?serverSelectionTimeoutMS=500"
    env = {name: value for name, value in os.environ.items() if name not in CONFIGURED}
    # Of the plugins, only the one the configuration names: the others take seconds to load.
    plugins = ["-p", "pytest_timeout", "-p", "no:cacheprovider"]
    pytest_run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *plugins, "tests/test_batching.py"],
        env={**env, "TEST_MONGODB_URI": uri, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    output = pytest_run.stdout + pytest_run.stderr
    assert pytest_run.returncode == pytest.ExitCode.USAGE_ERROR, output
    shown = uri.replace(":secret@", ":***@")
    line = next(line for line in output.splitlines() if "TEST_MONGODB_URI" in line)
    assert f"TEST_MONGODB_URI {shown} is unreachable: " in line
    assert "Connection refused" in line
    assert "secret" not in output
    # Stopped before its first test, within seconds, rather than each test waiting and failing.
    assert not re.search(r"\d+ (passed|failed|error)", output), output
    session = re.search(r" in ([\d.]+)s", output)
    assert session is not None and float(session.group(1)) < 10, output


@pytest.mark.parametrize("port", ["9000", None])
def test_make_help_shows_the_values_of_variables(port: str | None) -> None:
    shown = port or "8080"
    arguments = [f"PORT={port}"] if port else []
    env = {name: value for name, value in os.environ.items() if name != "PORT"}
    help_text = subprocess.run(
        ["make", "--no-print-directory", "help", *arguments],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    assert f"http://127.0.0.1:{shown}" in help_text
    assert "make run FUNCTION=prompts" in help_text
    assert "$(" not in help_text
