"""The issue's reference point, for scale: a bare functions-framework (`aio`) relay that reads the
openai SDK's raw stream (`with_streaming_response`, SSE lines parsed once) and sends each delta on.

No history, no prompt, no storage: what any relay on this stack costs on this machine, measured
the same way as the chat function by `bench.chat_overhead`. Served by the functions-framework CLI
with `--target handle`; `DEEPSEEK_BASE_URL` names the upstream.
"""

import functools
import json
import os
from collections.abc import AsyncIterator

import functions_framework.aio
import openai
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse


@functools.cache
def _client() -> openai.AsyncOpenAI:
    """One SDK client for the process, made on its event loop at the first request."""
    return openai.AsyncOpenAI(
        api_key="bench",
        base_url=os.environ["DEEPSEEK_BASE_URL"],
        http_client=openai.DefaultAioHttpClient(),
    )


async def _relay(user_input: str) -> AsyncIterator[bytes]:
    completions = _client().chat.completions.with_streaming_response
    async with completions.create(
        model="deepseek-v4-flash",
        messages=[{"role": "user", "content": user_input}],
        stream=True,
    ) as response:
        async for line in response.iter_lines():
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[5:]).get("choices") or ():
                if text := (choice.get("delta") or {}).get("content"):
                    yield f"event: content\ndata: {json.dumps({'delta': text})}\n\n".encode()
    yield b"event: done\ndata: {}\n\n"


@functions_framework.aio.http
async def handle(request: Request) -> Response:
    if request.method != "POST":
        return Response("ok")  # the health check the bench waits for
    body = await request.json()
    return StreamingResponse(_relay(body.get("input", "")), media_type="text/event-stream")
