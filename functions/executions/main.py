"""The `executions` function: run a prompt against DeepSeek, streamed or not; read the records."""

from shared.executions.models import (
    Execution,
    ExecutionCreate,
    ExecutionEvent,
    ExecutionListParams,
    ExecutionStats,
    StatsParams,
)
from shared.executions.service import ExecutionService
from shared.http.asgi_adapter import asgi_function
from shared.http.messages import EventStream
from shared.http.routing import Router
from shared.pagination import Page
from shared.projects.service import ProjectService
from shared.prompts.service import PromptService

router = Router("executions")


def executions() -> ExecutionService:
    return ExecutionService(PromptService(ProjectService()))


@router.post("/", status=201, events=ExecutionEvent)
async def create_execution(body: ExecutionCreate) -> Execution:
    """Run a prompt; with `stream: true` the answer comes as server-sent events instead."""
    service = executions()
    if body.stream:
        return EventStream(status=200, events=service.stream_events(await service.start(body)))
    return await service.run_to_completion(body)


@router.get("/")
def list_executions(query: ExecutionListParams) -> Page[Execution]:
    """List execution records, newest first, filtered by prompt, version, status and time."""
    return executions().search(query)


@router.get("/stats")
def execution_stats(query: StatsParams) -> ExecutionStats:
    """Per-version count, error rate, latency percentiles, tokens and cost of a prompt's runs."""
    return executions().stats(query)


@router.get("/{execution_id}")
def get_execution(execution_id: str) -> Execution:
    """Get one execution record."""
    return executions().get(execution_id)


handle = asgi_function(router)
