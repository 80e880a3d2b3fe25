"""The `dead-letters` function: keeps the queue events their consumer never took, for operators.

The broker's dead-letter sink (on Knative, a Trigger on the dead-letter Broker) posts each event
it gave up on to `/`: it is kept once, by type and id, with its attributes, its original
signature and its data; an unreachable database is a 503, so the broker retries. Operators (the
admin key only: the events hold every project's content) list, read, replay and delete them.
ASGI: a replayed evaluation cell waits on DeepSeek.
"""

from shared.access.policy import ADMIN, SIGNED_EVENT
from shared.http.asgi_adapter import asgi_function
from shared.http.messages import Request
from shared.http.routing import NO_BODY, BodyDoc, Router
from shared.pagination import Page
from shared.queues.cloudevents import STRUCTURED, StructuredEvent, received_event
from shared.queues.publishers import durable_publishing
from shared.workflows.dead_letters.models import (
    DeadLetter,
    DeadLetterListParams,
    DeadLetterStored,
    DeadLetterSummary,
)
from shared.workflows.dead_letters.service import DeadLetterService
from shared.workflows.evaluations.channel import CELLS
from shared.workflows.evaluations.worker import consume_cell

router = Router("dead-letters")

DEAD_EVENT = BodyDoc(
    {"application/json": dict, STRUCTURED: StructuredEvent[dict]},
    "An event the broker gave up delivering, as it was published: a binary-mode CloudEvent "
    "(`ce-id`, `ce-type`, `ce-source` headers, its original `ce-signature`, Knative's "
    "`ce-knativeerrorcode`/`ce-knativeerrordest`/`ce-knativeerrordata`, and its data as JSON) "
    "or a structured one.",
)


@router.post("/", access=SIGNED_EVENT, body_doc=DEAD_EVENT)
def keep_dead_letter(request: Request) -> DeadLetterStored:
    """Keep one dead event (once, by type and id, however often it is delivered)."""
    return DeadLetterService().keep(received_event(request, "dead-letters"))


@router.get("/", access=ADMIN)
def list_dead_letters(query: DeadLetterListParams) -> Page[DeadLetterSummary]:
    """List dead letters, newest first, by event type and status."""
    return DeadLetterService().search(query)


@router.get("/{dead_letter_id}", access=ADMIN)
def get_dead_letter(dead_letter_id: str) -> DeadLetter:
    """One dead letter, with the event's data and the last replay's outcome."""
    return DeadLetterService().get(dead_letter_id)


@router.post("/{dead_letter_id}/replay", access=ADMIN, body_doc=NO_BODY)
async def replay_dead_letter(dead_letter_id: str) -> DeadLetter:
    """Hand the event to its consumer again (idempotent, as consumers are); keeps the outcome."""
    return await DeadLetterService().replay(dead_letter_id)


@router.delete("/{dead_letter_id}", access=ADMIN)
def delete_dead_letter(dead_letter_id: str) -> None:
    """Forget a dead letter."""
    DeadLetterService().delete(dead_letter_id)


# A replayed cell hands out the next cells: those this process could not deliver are kept on
# disk, and handed out again by the next start.
handle = asgi_function(router, on_start=durable_publishing(CELLS, consume_cell))
