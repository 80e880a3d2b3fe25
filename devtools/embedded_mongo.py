"""SecantusDB, a MongoDB wire-protocol server, run as a separate process for dev and tests.

It is GPL-2.0 and beta, so it stays a dev dependency and is only ever spawned, never imported.
"""

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

from pymongo import MongoClient
from pymongo.errors import PyMongoError


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_command() -> list[str]:
    executable = shutil.which("secantusd-py", path=str(Path(sys.executable).parent))
    if executable is None:
        raise RuntimeError("secantusdb is not installed: run `uv sync` (it is a dev dependency)")
    return [executable]


class EmbeddedMongo:
    """A SecantusDB process on 127.0.0.1; `storage` is a folder, or ':memory:' for tests."""

    def __init__(self, storage: str, port: int | None = None, log_path: Path | None = None) -> None:
        self.storage = storage
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self, timeout: float = 30.0) -> "EmbeddedMongo":
        if self.storage != ":memory:":
            Path(self.storage).mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                *_server_command(),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--storage-path",
                self.storage,
                "--log-level",
                "WARNING",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_ready(timeout)
        return self

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with MongoClient(self.uri, serverSelectionTimeoutMS=250) as client:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    raise RuntimeError(f"SecantusDB exited with code {self.process.returncode}")
                try:
                    client.admin.command("ping")
                    return
                except PyMongoError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise RuntimeError(
                            f"SecantusDB did not answer on port {self.port}"
                        ) from None

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> "EmbeddedMongo":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
