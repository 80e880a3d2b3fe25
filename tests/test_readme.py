"""The README is executable: its shell examples, run in order against `make dev`, all succeed.

`devtools.dev` (what `make dev` runs) serves the gateway on a free port, on the test's database,
with its own fake DeepSeek. Every `bash` block of the README's "The functions" section runs, in
order, in one `bash` with `set -euo pipefail`, the key exported as the README says and only the
port changed. Each command (a line, with its continuation lines and quoted text) is numbered;
`curl` is wrapped to log the HTTP status of every call with the command it belongs to. A call
must answer below 400, unless its command says which refusal it demonstrates with a comment
naming the status (`# 403: ...`), and then it must answer exactly that. Any failing command, unset
variable or Python traceback fails the test.
"""

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from devtools.embedded_mongo import free_port
from devtools.processes import wait_until_healthy
from tests.conftest import TEST_ADMIN_KEY, TEST_SIGNING_KEY
from tests.test_local_tools import local_environment, start, stop

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SECTION = ("## The functions", "## Configuration")
DEV_PORT_IN_README = "localhost:8080"
EXPECTED_STATUS = re.compile(r"#\s*(\d{3})\b")
START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 240

CURL_WRAPPER = r"""
curl() {
  local err rc=0
  err=$(mktemp)
  command curl -w '%{stderr}\n__status=%{http_code}\n' "$@" 2>"$err" || rc=$?
  sed -n "s/^__status=/$__command /p" "$err" >>"$STATUS_LOG"
  grep -v -e '^__status=' -e '^$' "$err" >&2 || true
  rm -f "$err"
  return $rc
}
"""


@dataclass
class Command:
    text: str
    expected_status: int | None


def readme_commands(readme: str) -> list[Command]:
    """The shell commands of the README's examples section, in order."""
    start, end = (readme.index(heading) for heading in SECTION)
    blocks = re.findall(r"```bash\n(.*?)```", readme[start:end], re.S)
    return [command for block in blocks for command in split_commands(block)]


def split_commands(block: str) -> list[Command]:
    """Split a script into its top-level commands: a newline ends one unless it is quoted,
    escaped, inside `$( )`, or after a pipe; the comments of a command are its annotations."""
    commands: list[Command] = []
    text, comments = "", []
    quote: str | None = None
    depth = 0
    index = 0
    while index < len(block):
        char = block[index]
        if quote:
            if char == "\\" and quote == '"':
                text += block[index : index + 2]
                index += 2
                continue
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "\\" and block[index + 1 : index + 2] == "\n":
            text += "\\\n"
            index += 2
            continue
        elif char == "#" and (not text or text[-1] in " \t\n"):
            line_end = block.find("\n", index)
            line_end = len(block) if line_end < 0 else line_end
            comments.append(block[index:line_end])
            index = line_end
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "\n" and depth == 0 and not text.rstrip().endswith("|"):
            if text.strip():
                found = [EXPECTED_STATUS.match(comment) for comment in comments]
                statuses = [int(match.group(1)) for match in found if match]
                commands.append(Command(text.strip(), statuses[0] if statuses else None))
            text, comments = "", []
            index += 1
            continue
        text += char
        index += 1
    assert not text.strip(), f"unterminated command: {text!r}"
    return commands


@pytest.fixture
def dev_gateway(mongo_uri: str, environment: str, tmp_path: Path) -> Iterator[str]:
    """`devtools.dev` on a free port and the test's database, nothing else configured; its
    base URL once it answers and has printed its `export` line."""
    port = free_port()
    env = local_environment(
        tmp_path / "data",
        PORT=str(port),
        MONGODB_URI=mongo_uri,
        MONGODB_DB=environment,
        ADMIN_API_KEY=TEST_ADMIN_KEY,
        EVENT_SIGNING_KEY=TEST_SIGNING_KEY,
    )
    # The working directory holds no `.env`, so only these settings apply.
    process = start("devtools.dev", env=env, cwd=tmp_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_healthy(f"{url}/prompts", process, timeout=START_TIMEOUT_S)
        assert (
            f"export BA_URL={url} BA_API_KEY={TEST_ADMIN_KEY}" in (tmp_path / "output").read_text()
        )
        yield url
    finally:
        stop(process)


def script_for(commands: list[Command], port: int) -> str:
    lines = ["set -euo pipefail", "shopt -s inherit_errexit", CURL_WRAPPER]
    for number, command in enumerate(commands):
        lines.append(f"__command={number}")
        lines.append(command.text.replace(DEV_PORT_IN_README, f"localhost:{port}"))
    return "\n".join(lines) + "\n"


def uv_on_path(tmp_path: Path) -> str:
    """PATH with `uv` on it, as after `make sync`, which may have installed it as a module."""
    if shutil.which("uv"):
        return os.environ["PATH"]
    shim = tmp_path / "bin" / "uv"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m uv "$@"\n')
    shim.chmod(0o755)
    return f"{shim.parent}:{os.environ['PATH']}"


def test_the_commands_are_split_as_bash_reads_them() -> None:
    block = """A=$(curl -s x -d '{
  "a": "#1"}' \\
  | python3 -c 'print(1)')
curl -s y   # 403: refused
printf '%s\\n' a \\
  | curl z --data-binary @-
# a comment alone
"""
    commands = split_commands(block)
    assert [command.expected_status for command in commands] == [None, 403, None]
    assert commands[0].text.endswith("print(1)')")
    assert commands[1].text == "curl -s y"


def test_every_readme_example_works_in_order_against_make_dev(
    dev_gateway: str, tmp_path: Path
) -> None:
    commands = readme_commands(README.read_text())
    assert len(commands) > 40
    port = int(dev_gateway.rsplit(":", 1)[1])
    status_log = tmp_path / "statuses"
    status_log.touch()
    env = {
        **os.environ,
        "PATH": uv_on_path(tmp_path),
        "BA_URL": dev_gateway,
        "BA_API_KEY": TEST_ADMIN_KEY,
        "EVENT_SIGNING_KEY": TEST_SIGNING_KEY,
        "STATUS_LOG": str(status_log),
    }
    result = subprocess.run(
        ["bash", "-c", script_for(commands, port)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    calls = [line.split() for line in status_log.read_text().splitlines()]
    last = commands[int(calls[-1][0])].text if calls else "(none)"
    context = f"exit {result.returncode}; last call's command:\n{last}\n{result.stderr[-3000:]}"
    assert result.returncode == 0, context
    assert "Traceback" not in result.stderr, context
    assert "Traceback" not in result.stdout, context
    called = {int(number) for number, _ in calls}
    for number, status in calls:
        command = commands[int(number)]
        expected = command.expected_status
        if expected is None:
            assert int(status) < 400, f"{status} from:\n{command.text}\n{result.stdout[-2000:]}"
        else:
            assert int(status) == expected, f"{status}, not {expected}, from:\n{command.text}"
    with_curl = {number for number, command in enumerate(commands) if "curl " in command.text}
    assert with_curl == called
    refusals = {number for number, command in enumerate(commands) if command.expected_status}
    assert len(refusals) >= 4 and refusals <= called
