"""Sign a queue event by hand, to POST it to `history-writer` or `evaluation-worker` yourself:

    echo "$TURN" | uv run --frozen python -m devtools.sign_event

prints the `ce-signature` of the JSON event read from standard input, with EVENT_SIGNING_KEY or,
when it is unset, the key `make dev` keeps in `.data/event-signing-key`.
"""

import json
import sys

from pydantic import SecretStr

from devtools.local_secrets import SIGNING_KEY_FILE, local_secret
from shared.queues.signatures import sign_data
from shared.settings import get_settings


def main() -> None:
    keys = get_settings().event_signing_keys or [SecretStr(local_secret(SIGNING_KEY_FILE))]
    print(sign_data(json.load(sys.stdin), keys))


if __name__ == "__main__":
    main()
