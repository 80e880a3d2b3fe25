"""What the chat function adds on top of DeepSeek: N concurrent streams through `chat` versus the
same requests sent straight to the fake upstream (first token at 200 ms, 50 tokens 10 ms apart).

The chat function (functions-framework CLI, gunicorn + uvicorn worker, as in its image) is pinned
alone to core 0; the load generator, the fake upstream and MongoDB share core 1. Each chat request
reads the dialog's history, renders its prompt and publishes the turn (local queue -> MongoDB, in
the chat process). Prints time to first token and total time (p50/p99) for both paths, the
difference, requests/s, the chat processes' CPU ms per streamed request (the turns' history
writes, which finish after the streams, included) and their peak RSS; for scale, the CPU per
request of MongoDB during the chat run and of the fake upstream during the direct run.

For scale, the same requests also go through `bench.reference_relay` — the bare relay the issue
cites (SDK raw stream, no history, no storage) — served and pinned like the chat function: what
any relay on this stack costs on this machine.

MongoDB is an embedded SecantusDB (a Python server) unless `--mongodb-uri` names a real one; the
bench then uses a database of its own there and drops it at the end.
Run: `uv run python -m bench.chat_overhead [--levels 1,10,100] [--mongodb-uri URI]`. Linux only
(CPU affinity).
"""

import argparse
import asyncio
import json
import os
import re
import sys
from pathlib import Path

import httpx

from bench.harness import (
    FIRST_TOKEN_MS,
    FUNCTION_CORE,
    LOAD_CORE,
    TOKENS,
    LaterWrites,
    Load,
    Served,
    add_load_arguments,
    cpu_seconds,
    idle_cpu_ms_per_s,
    mongodb,
    peak_rss_mb,
    requests_per_level,
    run_load,
    spawn_pinned,
    start_fake_upstream,
)
from devtools.embedded_mongo import free_port
from devtools.gateway import FUNCTIONS_DIR

HISTORY_TURNS = 3
# Every request sends `Bearer bench`: to the chat function, the admin key.
TOKEN = "bench"
DIRECT_TOKEN = re.compile(rb'"content":"')
CHAT_TOKEN = re.compile(rb"event: content")


def seed(mongo_uri: str, database: str, dialogs: int) -> tuple[str, list[str]]:
    """A project with a chat prompt and `dialogs` dialogs bound to it, each with some history."""
    os.environ.update(MONGODB_URI=mongo_uri, MONGODB_DB=database)
    from shared.access.callers import Caller
    from shared.access.models import Actor
    from shared.db import utc_now
    from shared.dialogs.models import DialogCreate
    from shared.dialogs.service import DialogService
    from shared.projects.models import ProjectCreate
    from shared.projects.service import ProjectService
    from shared.prompts.models import PromptCreate
    from shared.prompts.service import PromptService
    from shared.workflows.history.models import TurnEvent
    from shared.workflows.history.writer import HistoryWriter

    project = ProjectService().create(ProjectCreate(name="bench"))
    prompt = PromptService(ProjectService()).create(
        PromptCreate(
            project_id=project.id,
            name="assistant",
            type="chat",
            messages=[
                {"role": "system", "content": "You are {{persona}}, helping with {{topic}}."}
            ],
            labels=["production"],
        ),
        Caller(Actor(kind="admin", id="admin", name="bench")),
    )
    dialog_ids = []
    for index in range(dialogs):
        dialog = DialogService(ProjectService(), PromptService(ProjectService())).create(
            DialogCreate(project_id=project.id, prompt_id=prompt.id, title=f"bench {index}")
        )
        for turn in range(HISTORY_TURNS):
            now = utc_now()
            HistoryWriter().write_turn(
                TurnEvent(
                    turn_id=f"seed{index}x{turn}",
                    dialog_id=dialog.id,
                    project_id=project.id,
                    user_content=f"Earlier question {turn} about invoices and refunds?",
                    user_at=now,
                    assistant_content="An earlier answer that explains the policy in detail. " * 3,
                    assistant_at=now,
                    status="ok",
                )
            )
        dialog_ids.append(dialog.id)
    return project.id, dialog_ids


DIRECT_BODY = json.dumps(
    {
        "model": "deepseek-v4-flash",
        "stream": True,
        "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": "hello"}],
    }
).encode()
CHAT_VARIABLES = {"persona": "a support agent", "topic": "billing"}


def chat_body(**fields: str) -> bytes:
    return json.dumps({**fields, "variables": CHAT_VARIABLES}).encode()


def print_row(row: dict) -> None:
    print(
        f"{row['streams']:>7} {row['path']:<7} {row['ttft50']:>9.1f} {row['ttft99']:>9.1f} "
        f"{row['total50']:>10.1f} {row['total99']:>10.1f} {row['rps']:>7.1f} {row['errors']:>6}"
    )


def print_added(direct: dict, through: dict, cpu_ms: float, note: str) -> None:
    """What going through a function adds to the direct requests, and its CPU per request."""
    added = {key: through[key] - direct[key] for key in ("ttft50", "ttft99", "total50", "total99")}
    print(
        f"{through['streams']:>7} {'+' + through['path']:<7} {added['ttft50']:>+9.1f} "
        f"{added['ttft99']:>+9.1f} {added['total50']:>+10.1f} {added['total99']:>+10.1f} "
        f"{through['rps'] / direct['rps'] * 100:>6.0f}%  cpu {cpu_ms:.1f} ms/request{note}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_load_arguments(parser)
    arguments = parser.parse_args()
    counts = requests_per_level(arguments)
    levels = list(counts)
    os.sched_setaffinity(0, {LOAD_CORE})

    with mongodb(arguments.mongodb_uri, "bench_chat") as (mongo_uri, database, mongo_pids):
        upstream = start_fake_upstream()
        served = [upstream]
        try:
            project_id, dialog_ids = seed(mongo_uri, database, max(counts.values()))
            upstream_env = {
                **os.environ,
                "DEEPSEEK_BASE_URL": f"http://127.0.0.1:{upstream.port}",
                "DEEPSEEK_API_KEY": "bench",
            }
            chat_env = {
                **upstream_env,
                "MONGODB_URI": mongo_uri,
                "MONGODB_DB": database,
                "HISTORY_QUEUE": "local",
                "ADMIN_API_KEY": TOKEN,
            }
            forwarder_port = free_port()
            forwarder_command = [
                sys.executable, "-m", "bench.tcp_forwarder", "--port", str(forwarder_port),
                "--upstream-port", str(upstream.port),
            ]  # fmt: skip
            forwarder = Served(
                spawn_pinned(FUNCTION_CORE, forwarder_command, dict(os.environ)), forwarder_port
            )
            served.append(forwarder)
            chat = Served.start(FUNCTIONS_DIR / "chat" / "main.py", chat_env)
            served.append(chat)
            relay = Served.start(Path(__file__).with_name("reference_relay.py"), upstream_env)
            served.append(relay)
            # The fake upstream has no health route; a models listing shows it is up.
            for port in (upstream.port, forwarder.port):
                models = f"http://127.0.0.1:{port}/models"
                auth = {"Authorization": f"Bearer {TOKEN}"}
                httpx.get(models, headers=auth, timeout=10).raise_for_status()
            warm_up = [chat_body(project_id=project_id, input="warm up") for _ in range(20)]
            for function in (chat, relay):
                asyncio.run(run_load(function.port, "/", warm_up, CHAT_TOKEN, 5, TOKEN, 600))
            # Two messages per turn: the seeded history, then each request's turn.
            history = LaterWrites(
                mongo_uri,
                database,
                "messages",
                {},
                per_request=2,
                expected=2 * len(dialog_ids) * HISTORY_TURNS,
            )
            history.wait(len(warm_up))
            idle_ms_per_s = idle_cpu_ms_per_s(chat.pids[1:])
            print(
                f"chat worker idle: {idle_ms_per_s:.1f} ms CPU per second (the server's own ticks)"
            )
            print(
                f"chat, relay and floor pinned to core {FUNCTION_CORE}; "
                f"load, upstream, MongoDB on {LOAD_CORE}"
            )
            print(f"MongoDB: {'embedded SecantusDB' if mongo_pids else arguments.mongodb_uri}")
            print(f"upstream: first token {FIRST_TOKEN_MS} ms, {TOKENS} tokens")
            print(
                f"{'streams':>7} {'path':<7} {'ttft p50':>9} {'ttft p99':>9} {'total p50':>10} "
                f"{'total p99':>10} {'req/s':>7} {'errors':>6}"
            )
            for concurrency in levels:
                count = counts[concurrency]
                bodies = [
                    chat_body(dialog_id=dialog_ids[index], input="What about my refund?")
                    for index in range(count)
                ]
                direct_bodies = [DIRECT_BODY] * count
                direct_load = Load(
                    "direct", concurrency, "/chat/completions", direct_bodies, DIRECT_TOKEN, TOKEN
                )
                direct, upstream_ms = direct_load.measure(upstream.port, upstream.pids)
                mongo_before = cpu_seconds(mongo_pids)
                chat_load = Load("chat", concurrency, "/", bodies, CHAT_TOKEN, TOKEN)
                # The turns are written after their streams end; their CPU counts too.
                through, chat_ms = chat_load.measure(chat.port, chat.pids, settle=history.wait)
                mongo_ms = (cpu_seconds(mongo_pids) - mongo_before) * 1000 / count
                relay_load = Load("relay", concurrency, "/", bodies, CHAT_TOKEN, TOKEN)
                relayed, relay_ms = relay_load.measure(relay.port, relay.pids)
                floor_load = Load(
                    "floor", concurrency, "/chat/completions", direct_bodies, DIRECT_TOKEN, TOKEN
                )
                floored, floor_ms = floor_load.measure(forwarder.port, forwarder.pids)
                for row in (direct, through, relayed, floored):
                    print_row(row)
                idle_share = idle_ms_per_s * through["seconds"] / count
                mongo_note = f"MongoDB {mongo_ms:.1f}; " if mongo_pids else ""
                print_added(
                    direct,
                    through,
                    chat_ms,
                    f" ({idle_share:.1f} of it idle ticks; {mongo_note}"
                    f"the fake upstream, direct: {upstream_ms:.1f})",
                )
                print_added(direct, relayed, relay_ms, " (the reference relay)")
                print_added(direct, floored, floor_ms, " (the floor: bytes forwarded untouched)")
            worker_rss = peak_rss_mb(chat.pids[1:])
            print(
                f"peak RSS: worker {worker_rss:.0f} MB, with gunicorn's master "
                f"{peak_rss_mb(chat.pids):.0f} MB"
            )
        finally:
            for process in reversed(served):
                process.stop()


if __name__ == "__main__":
    main()
