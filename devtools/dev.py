"""`make dev`: every function behind one local gateway, on embedded defaults.

Starts SecantusDB with its data in `.data/mongo` unless MONGODB_URI is configured, and the fake
DeepSeek server unless a DeepSeek key is configured, serves the gateway on
http://127.0.0.1:$PORT (8080), logs where Swagger UI (`/docs`) and the API document are, and
stops both when the gateway exits. Without ADMIN_API_KEY it
makes an admin key, keeps it in `.data/admin-api-key`, and prints it as `export BA_API_KEY=...`.
"""

import logging
import os
from contextlib import ExitStack

import uvicorn

from devtools.embedded_defaults import apply_embedded_defaults, exit_on_sigterm, print_credentials
from devtools.gateway import DOCS_PATH, DOCUMENT_PATH, build_gateway, function_names
from shared.logs import apply_log_level, configure_logging

logger = logging.getLogger("better_assistant.dev")


def main() -> None:
    # uvicorn re-raises the signal that stopped it; exiting through Python lets the database stop.
    exit_on_sigterm()
    # The functions' own JSON lines, the gateway's among them: its access lines replace uvicorn's,
    # which would print query strings.
    configure_logging("gateway")
    apply_log_level()
    port = int(os.environ.get("PORT", "8080"))
    host = os.environ.get("HOST", "127.0.0.1")
    with ExitStack() as stack:
        admin_key = apply_embedded_defaults(stack)
        gateway = build_gateway()
        for name in function_names():
            logger.info("function %-16s http://%s:%d/%s", name, host, port, name)
        base = f"http://{host}:{port}"
        logger.info("Swagger UI %s%s, the API document %s%s", base, DOCS_PATH, base, DOCUMENT_PATH)
        logger.info("each function's own document: %s/<name>%s", base, DOCUMENT_PATH)
        print_credentials(base, admin_key)
        uvicorn.run(gateway, host=host, port=port, log_config=None, access_log=False)


if __name__ == "__main__":
    main()
