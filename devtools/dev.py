"""`make dev`: every function behind one local gateway, on embedded defaults.

Starts SecantusDB with its data in `.data/mongo` unless MONGODB_URI is configured, and the fake
DeepSeek server unless a DeepSeek key is configured, serves the gateway on
http://127.0.0.1:$PORT (8080), logs where Swagger UI (`/docs`) and the API document are, and
stops both when the gateway exits. Without ADMIN_API_KEY it
makes an admin key, keeps it in `.data/admin-api-key`, and prints it as `export BA_API_KEY=...`.
"""

import logging
import os
import signal
from contextlib import ExitStack
from types import FrameType

import uvicorn

from devtools.embedded_mongo import EmbeddedMongo
from devtools.fake_deepseek import FakeDeepSeek
from devtools.gateway import DOCS_PATH, DOCUMENT_PATH, build_gateway, function_names
from devtools.local_secrets import ADMIN_KEY_FILE, DATA_DIR, SIGNING_KEY_FILE, local_secret
from shared.settings import get_settings

logger = logging.getLogger("better_assistant.dev")


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    # uvicorn re-raises the signal that stopped it; exiting through Python lets the database stop.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    port = int(os.environ.get("PORT", "8080"))
    host = os.environ.get("HOST", "127.0.0.1")
    with ExitStack() as stack:
        if "mongodb_uri" not in get_settings().model_fields_set:
            DATA_DIR.mkdir(exist_ok=True)
            mongo = stack.enter_context(
                EmbeddedMongo(str(DATA_DIR / "mongo"), log_path=DATA_DIR / "mongo.log")
            )
            os.environ["MONGODB_URI"] = mongo.uri
            get_settings.cache_clear()
            logger.info("embedded MongoDB (SecantusDB) at %s, data in %s", mongo.uri, DATA_DIR)
        else:
            logger.info("using MONGODB_URI from the environment")
        if get_settings().deepseek_api_key is None:
            fake = stack.enter_context(FakeDeepSeek())
            os.environ.update(DEEPSEEK_BASE_URL=fake.base_url, DEEPSEEK_API_KEY="local-fake")
            get_settings.cache_clear()
            logger.warning(
                "no DEEPSEEK_API_KEY: answers come from the built-in fake DeepSeek at %s",
                fake.base_url,
            )
        if "cors_origins" not in get_settings().model_fields_set:
            # Any local page (a frontend's dev server on its own port) may call `make dev`.
            os.environ["CORS_ORIGINS"] = "*"
            get_settings.cache_clear()
        if not get_settings().event_signing_keys:
            # Events queued in this process need no signature; one posted by hand to a
            # queue-triggered function does (`python -m devtools.sign_event` signs it).
            os.environ["EVENT_SIGNING_KEY"] = local_secret(SIGNING_KEY_FILE)
            get_settings.cache_clear()
            logger.info("no EVENT_SIGNING_KEY: queue events are signed with %s", SIGNING_KEY_FILE)
        if not get_settings().admin_api_keys:
            os.environ["ADMIN_API_KEY"] = local_secret(ADMIN_KEY_FILE, prefix="ba_admin_")
            get_settings.cache_clear()
            logger.info("no ADMIN_API_KEY: the admin key is kept in %s", ADMIN_KEY_FILE)
        # The first key, wherever it came from (the environment, `.env`, or the one made here).
        admin_key = get_settings().admin_api_keys[0].get_secret_value()
        gateway = build_gateway()
        for name in function_names():
            logger.info("function %-16s http://%s:%d/%s", name, host, port, name)
        base = f"http://{host}:{port}"
        logger.info("Swagger UI %s%s, the API document %s%s", base, DOCS_PATH, base, DOCUMENT_PATH)
        logger.info("each function's own document: %s/<name>%s", base, DOCUMENT_PATH)
        # Printed, not logged: the one place the key is shown, ready for the README's examples.
        print(f"\nexport BA_URL=http://{host}:{port} BA_API_KEY={admin_key}\n", flush=True)
        uvicorn.run(gateway, host=host, port=port, log_level="info")


if __name__ == "__main__":
    main()
