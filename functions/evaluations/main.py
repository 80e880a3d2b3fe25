"""The `evaluations` function: run a prompt's versions on a dataset, follow, cancel and compare.

ASGI, because starting a run hands its first cells to the queue from the request's event loop
(with the local queue of `make dev`, the cells then run on that loop).
"""

import anyio

from shared.access.callers import Caller
from shared.access.models import Permission
from shared.access.policy import first_of, in_project, project, resource
from shared.datasets.repository import dataset_project
from shared.http.asgi_adapter import asgi_function
from shared.http.routing import NO_BODY, Router
from shared.pagination import Page
from shared.prompts.repository import prompt_project
from shared.queues.publishers import durable_publishing
from shared.workflows.evaluations.channel import CELLS
from shared.workflows.evaluations.models import (
    CompareParams,
    Evaluation,
    EvaluationComparison,
    EvaluationCreate,
    EvaluationDetail,
    EvaluationListParams,
    ResultPageParams,
)
from shared.workflows.evaluations.repository import evaluation_project
from shared.workflows.evaluations.service import EvaluationService
from shared.workflows.evaluations.worker import consume_cell

router = Router("evaluations")
EVALUATION = resource("evaluation", "evaluation_id", evaluation_project)
IN_QUERY = first_of(
    project("query"),
    resource("prompt", "prompt_id", prompt_project, "query"),
    resource("dataset", "dataset_id", dataset_project, "query"),
)


@router.post(
    "/",
    status=202,
    access=in_project(Permission.EDIT, resource("prompt", "prompt_id", prompt_project, "body")),
    metered=True,
)
async def start_evaluation(body: EvaluationCreate, caller: Caller) -> Evaluation:
    """Start a run of cases x targets x repeat; answers at once, the cells run from the queue."""
    # Building it creates its collections' indexes once: a database round trip, off the loop.
    service = await anyio.to_thread.run_sync(EvaluationService)
    return await service.start(body, caller.actor)


@router.get("/", access=in_project(Permission.READ, IN_QUERY))
def list_evaluations(query: EvaluationListParams, caller: Caller) -> Page[Evaluation]:
    """List runs of your projects, newest first, by project, prompt, dataset or status."""
    return EvaluationService().search(query, caller.projects_with(Permission.READ))


@router.get("/{evaluation_id}", access=in_project(Permission.READ, EVALUATION))
def get_evaluation(evaluation_id: str, query: ResultPageParams) -> EvaluationDetail:
    """A run: status, progress, summary per target and a page of per-case results."""
    return EvaluationService().detail(evaluation_id, query)


@router.post(
    "/{evaluation_id}/cancel", access=in_project(Permission.EDIT, EVALUATION), body_doc=NO_BODY
)
def cancel_evaluation(evaluation_id: str) -> Evaluation:
    """Stop handing out cells; finished cells keep their results."""
    return EvaluationService().cancel(evaluation_id)


@router.post(
    "/{evaluation_id}/resume", access=in_project(Permission.EDIT, EVALUATION), body_doc=NO_BODY
)
async def resume_evaluation(evaluation_id: str) -> Evaluation:
    """Hand out again cells whose worker vanished and refill the run to its concurrency."""
    service = await anyio.to_thread.run_sync(EvaluationService)
    return await service.resume(evaluation_id)


@router.get("/{evaluation_id}/compare", access=in_project(Permission.READ, EVALUATION))
def compare_targets(evaluation_id: str, query: CompareParams) -> EvaluationComparison:
    """Cases that went pass->fail and fail->pass from target `a` to target `b`."""
    return EvaluationService().compare(evaluation_id, query)


# Cells kept on disk by an earlier process are handed out again, in the background.
handle = asgi_function(router, on_start=durable_publishing(CELLS, consume_cell))
