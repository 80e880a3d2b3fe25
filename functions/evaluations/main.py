"""The `evaluations` function: run a prompt's versions on a dataset, follow, cancel and compare.

ASGI, because starting a run hands its first cells to the queue from the request's event loop
(with the local queue of `make dev`, the cells then run on that loop).
"""

from shared.http.asgi_adapter import asgi_function
from shared.http.routing import Router
from shared.pagination import Page
from shared.workflows.evaluations.models import (
    CompareParams,
    Evaluation,
    EvaluationComparison,
    EvaluationCreate,
    EvaluationDetail,
    EvaluationListParams,
    ResultPageParams,
)
from shared.workflows.evaluations.service import EvaluationService

router = Router("evaluations")


@router.post("/", status=202)
async def start_evaluation(body: EvaluationCreate) -> Evaluation:
    """Start a run of cases x targets x repeat; answers at once, the cells run from the queue."""
    return await EvaluationService().start(body)


@router.get("/")
def list_evaluations(query: EvaluationListParams) -> Page[Evaluation]:
    """List runs, newest first, by prompt, dataset or status."""
    return EvaluationService().search(query)


@router.get("/{evaluation_id}")
def get_evaluation(evaluation_id: str, query: ResultPageParams) -> EvaluationDetail:
    """A run: status, progress, summary per target and a page of per-case results."""
    return EvaluationService().detail(evaluation_id, query)


@router.post("/{evaluation_id}/cancel")
def cancel_evaluation(evaluation_id: str) -> Evaluation:
    """Stop handing out cells; finished cells keep their results."""
    return EvaluationService().cancel(evaluation_id)


@router.post("/{evaluation_id}/resume")
async def resume_evaluation(evaluation_id: str) -> Evaluation:
    """Hand out again cells whose worker vanished and refill the run to its concurrency."""
    return await EvaluationService().resume(evaluation_id)


@router.get("/{evaluation_id}/compare")
def compare_targets(evaluation_id: str, query: CompareParams) -> EvaluationComparison:
    """Cases that went pass->fail and fail->pass from target `a` to target `b`."""
    return EvaluationService().compare(evaluation_id, query)


handle = asgi_function(router)
