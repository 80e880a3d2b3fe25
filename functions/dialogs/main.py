"""The `dialogs` function: conversations in a project and their messages, read and managed."""

from shared.access.models import Permission
from shared.access.policy import in_project, project, resource
from shared.dialogs.models import (
    Dialog,
    DialogCreate,
    DialogListParams,
    DialogUpdate,
    DialogWithMessages,
    MessagePageParams,
)
from shared.dialogs.repository import dialog_project
from shared.dialogs.service import DialogService
from shared.http.flask_adapter import flask_function
from shared.http.routing import Router
from shared.pagination import Page
from shared.projects.service import ProjectService
from shared.prompts.service import PromptService

router = Router("dialogs")
DIALOG = resource("dialog", "dialog_id", dialog_project)


def dialogs() -> DialogService:
    projects = ProjectService()
    return DialogService(projects, PromptService(projects))


@router.get("/", access=in_project(Permission.READ_DIALOGS, project("query")))
def list_dialogs(query: DialogListParams) -> Page[Dialog]:
    """List a project's dialogs, latest activity first."""
    return dialogs().search(query)


@router.post("/", status=201, access=in_project(Permission.MANAGE_DIALOGS, project("body")))
def create_dialog(body: DialogCreate) -> Dialog:
    """Create a dialog, optionally bound to a prompt at a version or label."""
    return dialogs().create(body)


@router.get("/{dialog_id}", access=in_project(Permission.READ_DIALOGS, DIALOG))
def get_dialog(dialog_id: str, query: MessagePageParams) -> DialogWithMessages:
    """Get a dialog with a page of its messages, oldest first."""
    return dialogs().get_with_messages(dialog_id, query)


@router.put("/{dialog_id}", access=in_project(Permission.MANAGE_DIALOGS, DIALOG))
def update_dialog(dialog_id: str, body: DialogUpdate) -> Dialog:
    """Change a dialog's title or bound prompt (`prompt_id: null` unbinds it)."""
    return dialogs().update(dialog_id, body)


@router.delete("/{dialog_id}", access=in_project(Permission.MANAGE_DIALOGS, DIALOG))
def delete_dialog(dialog_id: str) -> None:
    """Delete a dialog and its messages."""
    dialogs().delete(dialog_id)


handle = flask_function(router)
