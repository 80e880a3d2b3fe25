"""What a team does with dialogs: conversations in a project, optionally bound to a prompt."""

import json
from typing import Any, Protocol

from pydantic import ValidationError

from shared.dialogs.models import (
    Dialog,
    DialogCreate,
    DialogListParams,
    DialogUpdate,
    DialogWithMessages,
    Message,
    MessagePageParams,
    PromptBinding,
)
from shared.dialogs.repository import DialogRepository, JoinedRecords
from shared.errors import ValidationFailed, not_found, validation_failed
from shared.pagination import Page
from shared.projects.models import Project, ProjectLookup
from shared.prompts.models import PromptRecord, VersionSelector

_BINDING_FIELDS = {"prompt_id", "version", "label"}
# A dialog document stays far below MongoDB's 16 MB however many turns add variables to it.
MAX_SAVED_VARIABLES_BYTES = 512 * 1024


class PromptBindings(Protocol):
    """What binding a dialog to a prompt needs of the prompts domain."""

    def get_record(self, prompt_id: str) -> PromptRecord: ...

    def resolve_version_number(self, record: PromptRecord, selector: VersionSelector) -> int: ...


class DialogService:
    def __init__(self, projects: ProjectLookup, prompts: PromptBindings) -> None:
        self.dialogs = DialogRepository()
        self.projects = projects
        self.prompts = prompts

    def create(self, data: DialogCreate) -> Dialog:
        """Start a dialog in an existing project, bound to a prompt of that project if given."""
        check_saved_variables(data.variables)
        self.check_new(data)
        return self.insert_checked(data)

    def check_new(self, data: DialogCreate) -> tuple[Project, PromptRecord | None]:
        """What a new dialog would be in: its project (404) and its bound prompt's record (404,
        422; None when unbound), read so that a first turn is admitted before anything is
        stored."""
        project = self.projects.get(data.project_id)
        return project, self._check_binding(data.project_id, data)

    def insert_checked(self, data: DialogCreate) -> Dialog:
        """Store a dialog `check_new` accepted."""
        return self.dialogs.create(data)

    def search(self, params: DialogListParams) -> Page[Dialog]:
        """A project's dialogs, latest activity first."""
        return Page.of(self.dialogs.search(params), params)

    def get(self, dialog_id: str) -> Dialog:
        """One dialog, without its messages."""
        dialog = self.dialogs.get(dialog_id)
        if dialog is None:
            raise not_found("dialog", dialog_id)
        return dialog

    def get_with_messages(self, dialog_id: str, params: MessagePageParams) -> DialogWithMessages:
        """A dialog with a page of its messages, oldest first."""
        dialog = self.get(dialog_id)
        messages, next_cursor = self.dialogs.message_page(dialog_id, params)
        return DialogWithMessages(**dialog.model_dump(), messages=messages, next_cursor=next_cursor)

    def get_for_turn(
        self, dialog_id: str, limit: int, prompts: JoinedRecords[PromptRecord]
    ) -> tuple[Dialog, list[Message], PromptRecord | None]:
        """A dialog, its newest `limit` messages (oldest first: by time, in a turn user before
        assistant) and its bound prompt's record (None when unbound or the prompt is gone),
        joined by `prompts`, in one read."""
        found = self.dialogs.get_for_turn(dialog_id, limit, prompts)
        if found is None:
            raise not_found("dialog", dialog_id)
        return found

    def update(self, dialog_id: str, changes: DialogUpdate) -> Dialog:
        """Change the title, the binding and/or the saved variables (replaced as a whole);
        `prompt_id: null` unbinds, a version or label alone re-selects on the bound prompt."""
        dialog = self.get(dialog_id)
        given = changes.model_dump(exclude_unset=True)
        fields: dict[str, Any] = {}
        if "title" in given:
            fields["title"] = changes.title
        if "variables" in given:
            fields["variables"] = check_saved_variables(changes.variables or {})
        if given.keys() & _BINDING_FIELDS:
            binding = _binding(
                prompt_id=changes.prompt_id if "prompt_id" in given else dialog.prompt_id,
                version=changes.version,
                label=changes.label,
            )
            self._check_binding(dialog.project_id, binding)
            fields.update(binding.model_dump())
        if not fields:
            return dialog
        updated = self.dialogs.update(dialog_id, fields)
        if updated is None:
            raise not_found("dialog", dialog_id)
        return updated

    def remember_variables(self, dialog: Dialog, variables: dict[str, Any]) -> None:
        """Save a turn's variables into its dialog, merged over those it has; no write when
        they change nothing."""
        saved = dialog.variables.items()
        changed = {name: value for name, value in variables.items() if (name, value) not in saved}
        if changed:
            self.dialogs.remember_variables(dialog.id, changed)

    def delete(self, dialog_id: str) -> None:
        """Delete a dialog and its messages."""
        if not self.dialogs.delete(dialog_id):
            raise not_found("dialog", dialog_id)

    def _check_binding(self, project_id: str, binding: PromptBinding) -> PromptRecord | None:
        """A bound prompt exists in the dialog's project, and so does a chosen version or label
        (404); the prompt's record, None when unbound. Another project's prompt is answered as a
        missing one, so a caller learns nothing of projects they are not in."""
        if binding.prompt_id is None:
            return None
        record = self.prompts.get_record(binding.prompt_id)
        if record.project_id != project_id:
            raise not_found("prompt", binding.prompt_id)
        if binding.version is not None or binding.label is not None:
            selector = VersionSelector(version=binding.version, label=binding.label)
            self.prompts.resolve_version_number(record, selector)
        return record


def check_saved_variables(variables: dict[str, Any]) -> dict[str, Any]:
    """The variables a dialog would keep, when they fit its limit (422 otherwise)."""
    size = len(json.dumps(variables, ensure_ascii=False).encode())
    if size > MAX_SAVED_VARIABLES_BYTES:
        raise ValidationFailed(
            f"A dialog keeps at most {MAX_SAVED_VARIABLES_BYTES} bytes of variables (as JSON); "
            "send large values with the turn and save_variables false.",
            code="variables_too_large",
            details={"limit_bytes": MAX_SAVED_VARIABLES_BYTES, "size_bytes": size},
        )
    return variables


def _binding(**fields: Any) -> PromptBinding:
    """The binding an update asks for, checked as on create (422 naming the failing fields)."""
    try:
        return PromptBinding(**fields)
    except ValidationError as exc:
        raise validation_failed("The prompt binding is not valid.", exc, "body") from exc
