"""The local function gateway: every function in `functions/` mounted under `/<name>`, one port.

It loads each function exactly as functions-framework does in production (`create_app` with the
shared target name), so a function behaves the same here as alone or behind OpenFaaS/Knative.
"""

import importlib.util
import json
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path
from types import ModuleType
from typing import Any
from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

import functions_framework
from a2wsgi import WSGIMiddleware
from flask import Flask
from functions_framework import _function_registry
from starlette.requests import Request as StarletteRequest
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from shared.clients import close_clients
from shared.errors import MethodNotAllowed, NotFound
from shared.http.asgi_adapter import route_path, starlette_handler
from shared.http.openapi import openapi_document
from shared.http.routing import Router, new_request_id, render_error
from shared.logs import configure_logging

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


def load_function(name: str, router: Router | None = None) -> ASGIApp:
    """The function's app as functions-framework builds it, as ASGI; `router` is its route table
    when already loaded."""
    # The framework records ASGI targets by name, process-wide; every function's target is
    # `handle`, so forget the previous function's kind before loading the next.
    _function_registry.ASGI_FUNCTIONS.discard(TARGET)
    _function_registry.REGISTRY_MAP.pop(TARGET, None)
    app = functions_framework.create_app(TARGET, str(FUNCTIONS_DIR / name / "main.py"))
    if isinstance(app, Flask):
        wsgi = WSGIMiddleware(_input_terminated(app))
        return _live_on_the_loop(wsgi, router or load_router(name))
    return app


def _live_on_the_loop(app: ASGIApp, router: Router) -> ASGIApp:
    """A Flask function whose liveness is answered on the event loop, as an ASGI function's is:
    the Flask app runs on a2wsgi's few worker threads, where requests waiting on a database
    would hold `/healthz` back."""
    handle = starlette_handler(router)

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and route_path(scope) in ("/healthz", "/healthz/"):
            await (await handle(StarletteRequest(scope, receive)))(scope, receive, send)
            return
        await app(scope, receive, send)

    return application


def load_router(name: str) -> Router:
    """The function's route table, imported under a name of its own (the runtime's `main` stays)."""
    return load_module(name).router


def load_module(name: str) -> ModuleType:
    """The function's `main.py` as a module of its own; functions-framework's state is kept."""
    module_name = f"function_{name.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, FUNCTIONS_DIR / name / "main.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Importing runs the framework's decorators, which record targets process-wide: undo that.
    asgi_functions = set(_function_registry.ASGI_FUNCTIONS)
    registry = dict(_function_registry.REGISTRY_MAP)
    try:
        spec.loader.exec_module(module)
    finally:
        _function_registry.ASGI_FUNCTIONS.clear()
        _function_registry.ASGI_FUNCTIONS.update(asgi_functions)
        _function_registry.REGISTRY_MAP.clear()
        _function_registry.REGISTRY_MAP.update(registry)
    return module


DOCS_PATH = "/docs"
DOCUMENT_PATH = "/openapi.json"
# The gateway that served the document first: Swagger UI calls the first server, whatever PORT.
SERVERS = [
    {"url": "/", "description": "The gateway this document was fetched from"},
    {
        "url": "http://127.0.0.1:{port}",
        "description": "`make dev`: the dev gateway, every function under `/<name>`",
        "variables": {"port": {"default": "8080", "description": "`PORT` of `make dev`"}},
    },
]


def api_document(routers: dict[str, Router] | None = None) -> dict[str, Any]:
    """The OpenAPI document of every function (their route tables, when loaded already), with
    the paths this gateway serves."""
    return openapi_document(
        routers or {name: load_router(name) for name in function_names()},
        title="Better-Assistant API",
        version=version("better-assistant"),
        description="Every function of the backend, as mounted by the dev gateway under `/<name>`; "
        "each function alone serves its own operations at `/openapi.json` from its root.",
        servers=SERVERS,
    )


_DOCS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>Better-Assistant API</title>
<link rel="stylesheet" href="/docs/static/swagger-ui.css"></head>
<body><div id="docs"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script>SwaggerUIBundle({url: "/openapi.json", dom_id: "#docs", persistAuthorization: true});
</script>
</body></html>"""


def _api_pages(document: dict[str, Any]) -> dict[str, ASGIApp]:
    """`/openapi.json`, and `/docs`: Swagger UI served from the installed package, no CDN."""
    static = StaticFiles(directory=swagger_ui_path)

    async def docs(scope: Scope, receive: Receive, send: Send) -> None:
        mount = f"{scope.get('root_path', '')}/docs/static"
        if scope["path"].startswith(f"{mount}/"):
            await static(dict(scope, root_path=mount), receive, send)
        else:
            await HTMLResponse(_DOCS_PAGE)(scope, receive, send)

    openapi_json = Response(json.dumps(document), media_type="application/json")
    return {DOCUMENT_PATH.strip("/"): openapi_json, DOCS_PATH.strip("/"): docs}


# Paths served at the gateway's root by the function named, as well as under `/<name>`: the
# OpenAI-compatible API answers at `/v1`, where OpenAI's SDKs expect a base URL to end.
ROOT_PATHS = {"v1": "openai"}


class Gateway:
    """Routes `/<name>` and `/<name>/...` to that function, which sees paths from its own root."""

    def __init__(
        self, functions: dict[str, ASGIApp], pages: dict[str, ASGIApp] | None = None
    ) -> None:
        self.functions = functions
        self.pages = pages or {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        root_path = scope.get("root_path", "")
        name = scope["path"][len(root_path) :].strip("/").split("/", 1)[0]
        at_root = self.functions.get(ROOT_PATHS.get(name, ""))
        if at_root is not None:
            await at_root(scope, receive, send)
            return
        function = self.functions.get(name)
        if function is not None:
            mount = f"{root_path}/{name}"
            # `/projects` means the function's root, as `/function/projects` does on OpenFaaS.
            path = scope["path"] if scope["path"] != mount else f"{mount}/"
            await function(dict(scope, root_path=mount, path=path), receive, send)
            return
        await self._own_page(name, scope, receive, send)

    async def _own_page(self, name: str, scope: Scope, receive: Receive, send: Send) -> None:
        """The index, the document and the docs; anything else gets the functions' error model."""
        headers = {
            key.decode("latin-1"): value.decode("latin-1") for key, value in scope["headers"]
        }
        request_id = new_request_id(headers.get("x-request-id"))
        page = self.pages.get(name)
        if name == "":
            page = JSONResponse({"functions": [f"/{known}" for known in self.functions]})
        if page is not None and scope["method"] in ("GET", "HEAD"):
            await page(scope, receive, send)
            return
        error = MethodNotAllowed(["GET", "HEAD"]) if page is not None else None
        refused = render_error(
            error or NotFound(f"No function {name!r}.", code="function_not_found"), request_id
        )
        await Response(
            refused.body, refused.status, {**refused.headers, "X-Request-Id": request_id}
        )(scope, receive, send)

    @staticmethod
    async def _lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                # One process serves every function here: close the clients (DeepSeek, queues)
                # the functions opened on this loop, as their own processes would on exit.
                await close_clients()
                await send({"type": "lifespan.shutdown.complete"})
                return


def build_gateway() -> Gateway:
    # Before any function configures the process's logging for itself: lines logged outside a
    # request are the gateway's.
    configure_logging("gateway")
    routers = {name: load_router(name) for name in function_names()}
    functions = {name: load_function(name, router) for name, router in routers.items()}
    return Gateway(functions, _api_pages(api_document(routers)))
