"""Importing a function is all a cold start pays before serving: no clients, no connections, and
no model validators built before a request needs them."""

import importlib
import json
import pkgutil
import subprocess
import sys
from functools import cache
from typing import Any

import pytest

import shared
from devtools.gateway import FUNCTIONS_DIR, function_names
from shared.models import Model

# Functions that never call DeepSeek must not pay for importing the openai SDK.
# dead-letters: a replayed evaluation cell runs there.
CALLS_DEEPSEEK = {
    "executions",
    "chat",
    "evaluations",
    "evaluation-worker",
    "dead-letters",
    "openai",
}

_PROBE = """
import importlib.util, json, os, sys
def sockets():
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return count
before = sockets()
spec = importlib.util.spec_from_file_location("main", sys.argv[1])
module = importlib.util.module_from_spec(spec)
sys.modules["main"] = module
spec.loader.exec_module(module)
import pydantic, shared.clients, shared.settings
def models(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from models(sub)
# Models of ours whose validator exists already. Pydantic builds the origin of a generic model
# (Page) to parametrize it, so only concrete models count.
built = sorted({
    f"{cls.__module__}.{cls.__qualname__}" for cls in models(pydantic.BaseModel)
    if cls.__module__.startswith("shared.") and cls.__pydantic_complete__
    and not cls.__pydantic_generic_metadata__["parameters"]
})
print(json.dumps({
    "openai": "openai" in sys.modules,
    "openapi": "shared.http.openapi" in sys.modules,
    "clients": len(shared.clients._process_clients) + len(shared.clients._loop_clients),
    "settings_read": shared.settings.get_settings.cache_info().currsize,
    "new_sockets": sockets() - before,
    "has_handle": callable(getattr(module, "handle", None)),
    "built_models": built,
}))
"""

# Built at import on purpose: the settings (every response reads them, CORS) and the health
# answer (the first request a platform sends). Deferring them would only move the same work into
# that first request.
BUILT_FOR_THE_FIRST_REQUEST = {
    "shared.settings.Settings",
    "shared.settings.ModelPrice",
    "shared.http.routing.HealthStatus",
}


@cache
def imported(name: str) -> dict[str, Any]:
    """What importing the function's module in a fresh interpreter did."""
    output = subprocess.run(
        [sys.executable, "-c", _PROBE, str(FUNCTIONS_DIR / name / "main.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    ).stdout
    return json.loads(output)


@pytest.mark.parametrize("name", function_names())
def test_import_builds_no_client_and_opens_no_connection(name: str) -> None:
    result = imported(name)
    assert result["has_handle"]
    assert result["clients"] == 0
    assert result["settings_read"] == 0
    assert result["new_sockets"] == 0
    assert result["openai"] == (name in CALLS_DEEPSEEK)
    # Every function serves its own document; it is built by the first request for it.
    assert result["openapi"]


_DOCUMENT_PROBE = """
import json, sys
import functions_framework, pydantic, shared.http.routing, shared.models
before = set(sys.modules)
import shared.http.openapi
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_the_document_module_loads_nothing_a_function_does_not_load_anyway() -> None:
    """What serving `/openapi.json` costs at import is the module itself: no library of its own
    (JSON schemas are built by the first request for the document), no model built (above)."""
    output = subprocess.run(
        [sys.executable, "-c", _DOCUMENT_PROBE], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(output) == ["shared.http.openapi"]


@pytest.mark.parametrize("name", function_names())
def test_import_leaves_models_to_be_built_on_first_use(name: str) -> None:
    """A model on `shared.models.Model` is built by the first request that uses it."""
    assert set(imported(name)["built_models"]) <= BUILT_FOR_THE_FIRST_REQUEST


def test_every_deferred_model_builds() -> None:
    """Deferring hides a model that cannot be built (an unresolvable annotation) until a request
    needs it: build every one now."""
    for module in pkgutil.walk_packages(shared.__path__, "shared."):
        importlib.import_module(module.name)
    pending: list[type[Model]] = [Model]
    failures = {}
    while pending:
        model = pending.pop()
        pending += model.__subclasses__()
        try:
            model.model_rebuild(raise_errors=True)
        except Exception as exc:
            failures[f"{model.__module__}.{model.__qualname__}"] = repr(exc)
    assert failures == {}
    assert Model.__subclasses__(), "no model derives from shared.models.Model"
