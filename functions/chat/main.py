"""The `chat` function: one streamed turn of a dialog (ASGI, so one instance holds many streams)."""

from shared.http.asgi_adapter import asgi_function
from shared.http.messages import EventStream, Response
from shared.http.routing import Router
from shared.workflows.chat.models import ChatEvent, ChatRequest
from shared.workflows.chat.service import ChatService

router = Router("chat")


@router.post("/", events=ChatEvent)
async def chat(body: ChatRequest) -> Response:
    """Send the user's input; the answer streams back as server-sent events."""
    service = ChatService()
    return EventStream(events=service.stream_events(await service.start(body)))


handle = asgi_function(router)
