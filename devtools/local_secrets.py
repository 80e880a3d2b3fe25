"""Secrets `make dev` and `make run` make on their first start and keep in `.data/` for the next
ones. DATA_DIR moves that folder (and the embedded database's data with it)."""

import os
import secrets
from pathlib import Path

DATA_DIR = Path(os.environ.get("DATA_DIR") or Path(__file__).resolve().parent.parent / ".data")
SIGNING_KEY_FILE = DATA_DIR / "event-signing-key"
ADMIN_KEY_FILE = DATA_DIR / "admin-api-key"


def local_secret(path: Path, prefix: str = "") -> str:
    """The secret kept in `path`: made once (readable by its owner only), then read back."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(prefix + secrets.token_urlsafe(32))
        path.chmod(0o600)
    return path.read_text().strip()
