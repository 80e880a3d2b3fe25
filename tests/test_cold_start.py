"""Importing a function is all a cold start pays before serving: no clients, no connections."""

import json
import subprocess
import sys

import pytest

from devtools.gateway import FUNCTIONS_DIR, function_names

# Functions that never call DeepSeek must not pay for importing the openai SDK.
CALLS_DEEPSEEK = {"executions", "chat", "evaluations", "evaluation-worker"}

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
import shared.db, shared.settings
deepseek = sys.modules.get("shared.deepseek.client")
print(json.dumps({
    "openai": "openai" in sys.modules,
    "mongo_clients": shared.db._client.cache_info().currsize,
    "settings_read": shared.settings.get_settings.cache_info().currsize,
    "deepseek_clients": len(deepseek._clients) if deepseek else 0,
    "new_sockets": sockets() - before,
    "has_handle": callable(getattr(module, "handle", None)),
}))
"""


@pytest.mark.parametrize("name", function_names())
def test_import_builds_no_client_and_opens_no_connection(name: str) -> None:
    output = subprocess.run(
        [sys.executable, "-c", _PROBE, str(FUNCTIONS_DIR / name / "main.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
    ).stdout
    imported = json.loads(output)
    assert imported["has_handle"]
    assert imported["mongo_clients"] == 0
    assert imported["deepseek_clients"] == 0
    assert imported["settings_read"] == 0
    assert imported["new_sockets"] == 0
    assert imported["openai"] == (name in CALLS_DEEPSEEK)
