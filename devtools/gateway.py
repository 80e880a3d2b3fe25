"""The local function gateway: every function in `functions/` mounted under `/<name>`, one port.

It loads each function exactly as functions-framework does in production (`create_app` with the
shared target name), so a function behaves the same here as alone or behind OpenFaaS/Knative.
"""

from collections.abc import Iterable
from pathlib import Path
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import functions_framework
from functions_framework import _function_registry
from a2wsgi import WSGIMiddleware
from flask import Flask
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

FUNCTIONS_DIR = Path(__file__).resolve().parent.parent / "functions"
TARGET = "handle"


def function_names() -> list[str]:
    """Every deployable function: a folder of `functions/` holding a `main.py`."""
    return sorted(path.parent.name for path in FUNCTIONS_DIR.glob("*/main.py"))


def _input_terminated(app: WSGIApplication) -> WSGIApplication:
    """Tell Flask the body stream ends by itself, as gunicorn does, so chunked bodies are read."""

    def application(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ["wsgi.input_terminated"] = True
        return app(environ, start_response)

    return application


def load_function(name: str) -> ASGIApp:
    """The function's app as functions-framework builds it, as ASGI."""
    # The framework records ASGI targets by name, process-wide; every function's target is
    # `handle`, so forget the previous function's kind before loading the next.
    _function_registry.ASGI_FUNCTIONS.discard(TARGET)
    _function_registry.REGISTRY_MAP.pop(TARGET, None)
    app = functions_framework.create_app(TARGET, str(FUNCTIONS_DIR / name / "main.py"))
    return WSGIMiddleware(_input_terminated(app)) if isinstance(app, Flask) else app


class Gateway:
    """Routes `/<name>` and `/<name>/...` to that function, which sees paths from its own root."""

    def __init__(self, functions: dict[str, ASGIApp]) -> None:
        self.functions = functions

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        root_path = scope.get("root_path", "")
        name = scope["path"][len(root_path) :].strip("/").split("/", 1)[0]
        function = self.functions.get(name)
        if function is not None:
            mount = f"{root_path}/{name}"
            # `/projects` means the function's root, as `/function/projects` does on OpenFaaS.
            path = scope["path"] if scope["path"] != mount else f"{mount}/"
            await function(dict(scope, root_path=mount, path=path), receive, send)
            return
        status = 200 if name == "" else 404
        body = {"functions": [f"/{known}" for known in self.functions]}
        if status == 404:
            body = {"error": {"code": "function_not_found", "message": f"No function {name!r}."}}
        await JSONResponse(body, status)(scope, receive, send)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def build_gateway() -> Gateway:
    return Gateway({name: load_function(name) for name in function_names()})
