"""`make db`: only the embedded database (SecantusDB on `.data/mongo`), until Ctrl-C.

For functions started some other way (`MONGODB_URI=... make run`, a debugger): it prints the
MONGODB_URI to give them.
"""

import logging
from contextlib import ExitStack

from devtools.embedded_defaults import exit_on_sigterm, start_local_mongo


def main() -> None:
    exit_on_sigterm()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    with ExitStack() as stack:
        mongo = start_local_mongo(stack)
        print(f"\nexport MONGODB_URI='{mongo.uri}'\n\nCtrl-C stops it.", flush=True)
        try:
            code = mongo.process.wait() if mongo.process else 0
        except KeyboardInterrupt:
            return
    raise SystemExit(f"error: SecantusDB exited with code {code}; see {mongo.log_path}")


if __name__ == "__main__":
    main()
