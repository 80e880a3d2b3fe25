"""What `make dev`, `make run` and `make db` stand in for on a machine with nothing installed.

Each default applies only where the configuration (environment, `.env`, secret files) names
nothing: SecantusDB with its data in `$DATA_DIR/mongo` for MONGODB_URI, the fake DeepSeek for a
DeepSeek key, `*` for CORS_ORIGINS, signing and admin keys kept in `$DATA_DIR`, and undelivered
events kept in `$DATA_DIR/spool` (EVENT_SPOOL_DIR), so the next start replays them. Whatever is
started here stops when the caller's ExitStack closes.
"""

import logging
import os
import signal
from contextlib import ExitStack
from types import FrameType

from devtools.embedded_mongo import EmbeddedMongo, StorageInUse
from devtools.fake_deepseek import FakeDeepSeek
from devtools.local_secrets import ADMIN_KEY_FILE, DATA_DIR, SIGNING_KEY_FILE, local_secret
from shared.settings import get_settings

logger = logging.getLogger("better_assistant.dev")


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def exit_on_sigterm() -> None:
    """Leave through Python on SIGTERM, so the ExitStack stops what was started."""
    signal.signal(signal.SIGTERM, _exit)


def start_local_mongo(stack: ExitStack) -> EmbeddedMongo:
    """SecantusDB on `$DATA_DIR/mongo`; a folder another process holds ends this one with a
    one-line error."""
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    try:
        mongo = stack.enter_context(
            EmbeddedMongo(str(DATA_DIR / "mongo"), log_path=DATA_DIR / "mongo.log")
        )
    except StorageInUse as exc:
        raise SystemExit(f"error: {exc}") from None
    logger.info("embedded MongoDB (SecantusDB) at %s, data in %s", mongo.uri, DATA_DIR)
    return mongo


def _set(**variables: str) -> None:
    os.environ.update(variables)
    get_settings.cache_clear()


def apply_embedded_defaults(stack: ExitStack) -> str:
    """Start and set what the configuration leaves out, in this process's environment (which
    child processes inherit); returns the admin key to call the functions with."""
    if "mongodb_uri" not in get_settings().model_fields_set:
        _set(MONGODB_URI=start_local_mongo(stack).uri)
    else:
        logger.info("using MONGODB_URI from the environment")
    if get_settings().deepseek_api_key is None:
        fake = stack.enter_context(FakeDeepSeek())
        _set(DEEPSEEK_BASE_URL=fake.base_url, DEEPSEEK_API_KEY="local-fake")
        logger.warning(
            "no DEEPSEEK_API_KEY: answers come from the built-in fake DeepSeek at %s",
            fake.base_url,
        )
    if "cors_origins" not in get_settings().model_fields_set:
        # Any local page (a frontend's dev server on its own port) may call the functions.
        _set(CORS_ORIGINS="*")
    if not get_settings().event_signing_keys:
        # Events queued in this process need no signature; one posted by hand to a
        # queue-triggered function does (`python -m devtools.sign_event` signs it).
        _set(EVENT_SIGNING_KEY=local_secret(SIGNING_KEY_FILE))
        logger.info("no EVENT_SIGNING_KEY: queue events are signed with %s", SIGNING_KEY_FILE)
    if "event_spool_dir" not in get_settings().model_fields_set:
        _set(EVENT_SPOOL_DIR=str(DATA_DIR / "spool"))
    if not get_settings().admin_api_keys:
        _set(ADMIN_API_KEY=local_secret(ADMIN_KEY_FILE, prefix="ba_admin_"))
        logger.info("no ADMIN_API_KEY: the admin key is kept in %s", ADMIN_KEY_FILE)
    # The first key, wherever it came from (the environment, `.env`, or the one made here).
    return get_settings().admin_api_keys[0].get_secret_value()


def print_credentials(url: str, admin_key: str) -> None:
    """Printed, not logged: the one place the key is shown, ready for the README's examples."""
    print(f"\nexport BA_URL={url} BA_API_KEY={admin_key}\n", flush=True)
