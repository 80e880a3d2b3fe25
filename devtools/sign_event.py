"""Sign a queue event by hand, to POST it to `history-writer` or `evaluation-worker` yourself:

    echo "$TURN" | uv run --frozen python -m devtools.sign_event

prints the `ce-signature` of the JSON event read from standard input, with EVENT_SIGNING_KEY or,
when it is unset, the key `make dev` keeps in `.data/event-signing-key`.
"""

import json
import secrets
import sys
from pathlib import Path

from pydantic import SecretStr

from shared.queues.signatures import sign_data
from shared.settings import get_settings

DATA_DIR = Path(__file__).resolve().parent.parent / ".data"
SIGNING_KEY_FILE = DATA_DIR / "event-signing-key"


def local_signing_key() -> str:
    """The key `make dev` signs events with: made once, then kept for the next starts."""
    if not SIGNING_KEY_FILE.exists():
        DATA_DIR.mkdir(exist_ok=True)
        SIGNING_KEY_FILE.write_text(secrets.token_urlsafe(32))
        SIGNING_KEY_FILE.chmod(0o600)
    return SIGNING_KEY_FILE.read_text().strip()


def main() -> None:
    keys = get_settings().event_signing_keys or [SecretStr(local_signing_key())]
    print(sign_data(json.load(sys.stdin), keys))


if __name__ == "__main__":
    main()
