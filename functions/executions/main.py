"""The `executions` function: run a prompt against DeepSeek, streamed or not; read the records."""

from shared.access.callers import Caller
from shared.access.models import Permission
from shared.access.policy import first_of, in_project, project, resource
from shared.executions.models import (
    Execution,
    ExecutionCreate,
    ExecutionEvent,
    ExecutionListParams,
    ExecutionStats,
    StatsParams,
)
from shared.executions.repository import execution_project
from shared.executions.service import ExecutionService
from shared.http.asgi_adapter import asgi_function
from shared.http.messages import EventStream
from shared.http.routing import Router
from shared.pagination import Page
from shared.projects.service import ProjectService
from shared.prompts.repository import prompt_project
from shared.prompts.service import PromptService

router = Router("executions")
PROMPT_IN_BODY = resource("prompt", "prompt_id", prompt_project, "body")
PROMPT_IN_QUERY = resource("prompt", "prompt_id", prompt_project, "query")


def executions() -> ExecutionService:
    projects = ProjectService()
    return ExecutionService(PromptService(projects), projects)


@router.post(
    "/",
    status=201,
    events=ExecutionEvent,
    access=in_project(Permission.RUN, PROMPT_IN_BODY),
    metered=True,
)
async def create_execution(body: ExecutionCreate, caller: Caller) -> Execution:
    """Run a prompt; with `stream: true` the answer comes as server-sent events instead."""
    service = executions()
    if body.stream:
        run = await service.start(body, caller.actor)
        return EventStream(status=200, events=service.stream_events(run))
    return await service.run_to_completion(body, caller.actor)


@router.get("/", access=in_project(Permission.READ, first_of(project("query"), PROMPT_IN_QUERY)))
def list_executions(query: ExecutionListParams, caller: Caller) -> Page[Execution]:
    """List records of your projects, newest first, by project, prompt, version, status, time."""
    return executions().search(query, caller.projects_with(Permission.READ))


@router.get("/stats", access=in_project(Permission.READ, PROMPT_IN_QUERY))
def execution_stats(query: StatsParams) -> ExecutionStats:
    """Per-version count, error rate, latency percentiles, tokens and cost of a prompt's runs."""
    return executions().stats(query)


@router.get(
    "/{execution_id}",
    access=in_project(Permission.READ, resource("execution", "execution_id", execution_project)),
)
def get_execution(execution_id: str) -> Execution:
    """Get one execution record."""
    return executions().get(execution_id)


handle = asgi_function(router)
