"""`make run FUNCTION=<name>`: one function alone, started exactly as its image starts it.

`functions-framework --source functions/<name>/main.py --target handle --port $PORT`, on the
embedded defaults of `make dev` (SecantusDB on `.data/mongo` unless MONGODB_URI is configured, the
fake DeepSeek without a key, the local admin and signing keys), which stop when it exits.
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
from contextlib import ExitStack
from pathlib import Path
from types import FrameType

from devtools.embedded_defaults import apply_embedded_defaults, print_credentials
from devtools.gateway import FUNCTIONS_DIR, TARGET, function_names


def command(name: str, port: int) -> list[str]:
    """The image's command line for the function, relative to the repository's root."""
    executable = shutil.which("functions-framework", path=str(Path(sys.executable).parent))
    source = (FUNCTIONS_DIR / name / "main.py").relative_to(FUNCTIONS_DIR.parent)
    program = executable or "functions-framework"
    return [program, "--source", str(source), "--target", TARGET, "--port", str(port)]


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    name = sys.argv[1] if len(sys.argv) > 1 else ""
    if name not in function_names():
        sys.exit(f"error: no function {name!r}: FUNCTION is one of {', '.join(function_names())}")
    port = int(os.environ.get("PORT", "8080"))
    with ExitStack() as stack:
        admin_key = apply_embedded_defaults(stack)
        print_credentials(f"http://127.0.0.1:{port}", admin_key)
        function = subprocess.Popen(command(name, port), cwd=FUNCTIONS_DIR.parent)

        def stop(signum: int, frame: FrameType | None) -> None:
            function.send_signal(signum)

        # The function stops first (Ctrl-C or SIGTERM), then what the stack started.
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGTERM, stop)
        code = function.wait()
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main()
