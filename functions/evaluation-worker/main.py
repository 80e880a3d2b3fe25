"""The `evaluation-worker` function: runs one evaluation cell per delivery from the queue.

Triggered by the queue (a Knative Trigger, OpenFaaS's queue-worker, or a direct POST): a cell is
run once however often it is delivered; a malformed event is a 4xx so it is not retried; an
unreachable database is a 503 so it is. ASGI: a cell waits on DeepSeek most of its time.
"""

import anyio

from shared.access.policy import SIGNED_EVENT
from shared.http.asgi_adapter import asgi_function
from shared.http.messages import Request
from shared.http.routing import Router
from shared.queues.cloudevents import event_body, event_from_request
from shared.queues.publishers import durable_publishing
from shared.workflows.evaluations.channel import CELLS
from shared.workflows.evaluations.models import CellOutcome
from shared.workflows.evaluations.worker import EvaluationWorker, consume_cell

router = Router("evaluation-worker")


@router.post("/", access=SIGNED_EVENT, body_doc=event_body(CELLS))
async def run_cell(request: Request) -> CellOutcome:
    """Run and grade one cell: a CloudEvent (binary or structured mode) or the plain JSON cell."""
    # Building it creates its collections' indexes once: a database round trip, off the loop.
    worker = await anyio.to_thread.run_sync(EvaluationWorker)
    return await worker.process(event_from_request(request, CELLS))


# Cells kept on disk by an earlier process are handed out again, in the background.
handle = asgi_function(router, on_start=durable_publishing(CELLS, consume_cell))
