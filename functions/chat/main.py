"""The `chat` function: one streamed turn of a dialog (ASGI, so one instance holds many streams)."""

import anyio

from shared.access.callers import Caller
from shared.access.models import Permission
from shared.access.policy import first_of, in_project, project, resource
from shared.dialogs.repository import dialog_project
from shared.http.asgi_adapter import asgi_function
from shared.http.messages import EventStream, Response
from shared.http.routing import Router
from shared.queues.publishers import durable_publishing
from shared.workflows.chat.models import ChatEvent, ChatRequest
from shared.workflows.chat.service import ChatService
from shared.workflows.history.channel import TURNS
from shared.workflows.history.writer import consume_turn

router = Router("chat")
# Continuing a dialog is in the dialog's project; starting one, in the body's project.
DIALOG_OR_PROJECT = first_of(
    resource("dialog", "dialog_id", dialog_project, "body"), project("body")
)


@router.post(
    "/", events=ChatEvent, access=in_project(Permission.RUN, DIALOG_OR_PROJECT), metered=True
)
async def chat(body: ChatRequest, caller: Caller) -> Response:
    """Send the user's input; the answer streams back as server-sent events."""
    # Building it creates its collections' indexes once: a database round trip, off the loop.
    service = await anyio.to_thread.run_sync(ChatService)
    return EventStream(events=service.stream_events(await service.start(body, caller.actor)))


# Turns kept on disk by an earlier process are written again, in the background.
handle = asgi_function(router, on_start=durable_publishing(TURNS, consume_turn))
