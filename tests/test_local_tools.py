"""The newcomer's path: `make help`, and a suite pointed at a database that
is not there."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.embedded_mongo import free_port

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
}


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
