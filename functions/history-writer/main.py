"""The `history-writer` function: writes finished chat turns from the history queue into dialogs.

Triggered by the queue (a Knative Trigger, OpenFaaS's queue-worker, or a direct POST): a turn is
written once however often it is delivered; a malformed event is a 4xx so it is not retried; an
unreachable database is a 503 so it is.
"""

from shared.access.policy import SIGNED_EVENT
from shared.http.flask_adapter import flask_function
from shared.http.messages import Request
from shared.http.routing import Router
from shared.queues.cloudevents import event_body, event_from_request
from shared.workflows.history.channel import TURNS
from shared.workflows.history.models import TurnWritten
from shared.workflows.history.writer import HistoryWriter

router = Router("history-writer")


@router.post("/", access=SIGNED_EVENT, body_doc=event_body(TURNS))
def write_turn(request: Request) -> TurnWritten:
    """Write one chat turn: a CloudEvent (binary or structured mode) or the plain JSON turn."""
    return HistoryWriter().write_turn(event_from_request(request, TURNS))


handle = flask_function(router)
