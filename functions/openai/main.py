"""The `openai` function: OpenAI's API over the project's managed prompts, at `/v1`.

An app that speaks OpenAI changes its base URL and API key (a project key) and names a prompt
as its model; every call is recorded as an execution of that prompt.
"""

from collections.abc import Callable
from typing import Any

from shared.access.callers import Caller
from shared.access.models import Permission
from shared.access.policy import project_key
from shared.executions.service import Run
from shared.http.asgi_adapter import asgi_function
from shared.http.messages import ByteStream, Response, json_response
from shared.http.routing import PathRest, Router
from shared.http.sse import started
from shared.settings import get_settings
from shared.workflows.openai_api.documents import (
    ChatCompletion,
    ChatCompletionFrame,
    ResponseObject,
    ResponseStreamEvent,
)
from shared.workflows.openai_api.errors import OPENAI_ERRORS
from shared.workflows.openai_api.models import (
    ChatCompletionRequest,
    ModelEntry,
    ModelList,
    ResponseRequest,
)
from shared.workflows.openai_api.service import EXECUTION_HEADER, OpenAIService
from shared.workflows.openai_api.wire import (
    ChunkPresenter,
    Presenter,
    ResponseEventPresenter,
    completion,
    request_echo,
    response_object,
    response_status,
)

router = Router("openai", errors=OPENAI_ERRORS)
# An app's own project key, allowed to run prompts; never the admin key or a user's token.
APP_KEY = project_key(Permission.RUN)


@router.get("/v1/models", access=APP_KEY)
def list_models(caller: Caller) -> ModelList:
    """The project's prompts as models (`name`, `name@label`), then the DeepSeek models."""
    return OpenAIService().models(caller.key_project)


@router.get("/v1/models/{model}", access=APP_KEY)
def get_model(model: PathRest, caller: Caller) -> ModelEntry:
    """One model of the list; 404 `model_not_found` for any other."""
    return OpenAIService().model(caller.key_project, model)


@router.post(
    "/v1/chat/completions",
    access=APP_KEY,
    metered=True,
    returns=ChatCompletion,
    events=ChatCompletionFrame,
)
async def chat_completions(body: ChatCompletionRequest, caller: Caller) -> Response:
    """OpenAI's Chat Completions over a managed prompt, streamed with `stream: true`.

    The named prompt's messages come before the caller's; a stream is `chat.completion.chunk`
    frames ending with `data: [DONE]`."""
    service, run = await OpenAIService.begin(
        lambda service: service.open_chat(body, caller.key_project, caller.actor)
    )
    include_usage = body.stream_options is not None and body.stream_options.include_usage
    presenter = ChunkPresenter(run, include_usage) if body.stream else None
    return await _answer(service, run, presenter, completion)


@router.post(
    "/v1/responses",
    access=APP_KEY,
    metered=True,
    returns=ResponseObject,
    events=ResponseStreamEvent,
)
async def responses(body: ResponseRequest, caller: Caller) -> Response:
    """OpenAI's Responses API for text output, streamed with `stream: true`.

    `prompt: {id, version, variables}` names a managed prompt; a stream is `response.*`
    events."""
    service, run = await OpenAIService.begin(
        lambda service: service.open_response(body, caller.key_project, caller.actor)
    )
    echo = request_echo(body)
    presenter = ResponseEventPresenter(run, echo) if body.stream else None
    return await _answer(
        service, run, presenter, lambda run: response_object(run, response_status(run), echo)
    )


async def _answer(
    service: OpenAIService,
    run: Run,
    presenter: Presenter | None,
    whole: Callable[[Run], dict[str, Any]],
) -> Response:
    """The run's answer, naming its execution: streamed as `presenter` words it, or, without
    one, as the object `whole` makes of the complete answer."""
    headers = {EXECUTION_HEADER: run.record.id}
    if presenter is not None:
        frames = service.frames(run, presenter)
        chunks = await started(frames, get_settings().stream_keepalive_s)
        return ByteStream(chunks=chunks, headers=headers)
    await service.complete(run)
    return json_response(whole(run), headers=headers)


handle = asgi_function(router)
