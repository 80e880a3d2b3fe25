"""SecantusDB, a MongoDB wire-protocol server, run as a separate process for dev and tests.

It is GPL-2.0 and beta, so it stays a dev dependency and is only ever spawned, never imported.
"""

import fcntl
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import TextIO

from pymongo import MongoClient
from pymongo.errors import PyMongoError

# What WiredTiger writes when another process has the folder open.
_HELD_BY_ANOTHER = b"already being managed by another process"


# Ports this process has handed out. The kernel may offer a closed probe's port again; two
# servers given the same port then race for it, and the loser's URL silently reaches the winner.
_handed_out: set[int] = set()


def free_port() -> int:
    """A loopback port free now and never handed out before by this process."""
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _server_command() -> list[str]:
    executable = shutil.which("secantusd-py", path=str(Path(sys.executable).parent))
    if executable is None:
        raise RuntimeError("secantusdb is not installed: run `uv sync` (it is a dev dependency)")
    return [executable]


class StorageInUse(RuntimeError):
    """The data folder is another SecantusDB's: WiredTiger lets one process at a time open it."""


class EmbeddedMongo:
    """A SecantusDB process on 127.0.0.1; `storage` is a folder, or ':memory:' for tests."""

    def __init__(self, storage: str, port: int | None = None, log_path: Path | None = None) -> None:
        self.storage = storage
        self.port = port or free_port()
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._lock: TextIO | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def start(self, timeout: float = 30.0) -> "EmbeddedMongo":
        server = _server_command()
        if self.storage != ":memory:":
            Path(self.storage).mkdir(parents=True, exist_ok=True)
            self._hold_storage()
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                *server,
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
            # Out of the terminal's process group: Ctrl-C stops the launcher, which stops the
            # server after what uses it.
            start_new_session=True,
        )
        self._wait_until_ready(timeout)
        return self

    def _hold_storage(self) -> None:
        """Lock `<storage>.lock` for as long as this server runs, naming it there, so a second
        one on the same folder is told which process has it rather than failing in WiredTiger."""
        lock = open(f"{self.storage}.lock", "a+")  # noqa: SIM115 (held until `stop`)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            lock.close()
            raise StorageInUse(
                f"{self.storage} is already in use by {holder}: stop it, or set that "
                "MONGODB_URI to share its database"
            ) from None
        lock.truncate(0)
        lock.write(f"pid {os.getpid()}, MONGODB_URI={self.uri}\n")
        lock.flush()
        self._lock = lock

    def _exited(self, code: int) -> RuntimeError:
        """Why the server stopped before answering, as far as its log tells."""
        if self.log_path is None:
            return RuntimeError(f"SecantusDB exited with code {code}")
        with open(self.log_path, "rb") as log:
            log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
            if _HELD_BY_ANOTHER in log.read():
                return StorageInUse(
                    f"{self.storage} is in use by another SecantusDB process: stop it first"
                )
        return RuntimeError(f"SecantusDB exited with code {code}; see {self.log_path}")

    def _wait_until_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with MongoClient(self.uri, serverSelectionTimeoutMS=250) as client:
            while True:
                if self.process is not None and self.process.poll() is not None:
                    self._release_storage()
                    raise self._exited(self.process.returncode)
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
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._release_storage()

    def kill(self) -> None:
        """Stop the server as a crash would (SIGKILL): no shutdown, nothing flushed. `start`
        brings it back on the same folder and port."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._release_storage()

    def _release_storage(self) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def __enter__(self) -> "EmbeddedMongo":
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
