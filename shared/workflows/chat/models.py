"""A chat turn request and the events its stream is made of."""

from typing import Annotated

from pydantic import StringConstraints, model_validator

from shared.deepseek.events import answer_stream_events
from shared.deepseek.models import ModelConfig
from shared.executions.inputs import WithVariables
from shared.models import Model, Name
from shared.prompts.models import LabelName, VersionNumber


class ChatRequest(WithVariables):
    """One user turn: in an existing dialog, or (with `project_id`) in a new one."""

    dialog_id: str | None = None
    project_id: str | None = None
    input: Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
    config: ModelConfig | None = None
    # The turn's variables are merged over the dialog's; saved into the dialog unless false.
    save_variables: bool = True
    # Only when starting a dialog: the prompt it is bound to, and its title.
    prompt_id: str | None = None
    version: VersionNumber | None = None
    label: LabelName | None = None
    title: Name | None = None

    @model_validator(mode="after")
    def _dialog_or_project(self) -> "ChatRequest":
        if (self.dialog_id is None) == (self.project_id is None):
            raise ValueError("give a dialog_id to continue a dialog, or a project_id to start one")
        if self.prompt_id is None and (self.version is not None or self.label is not None):
            raise ValueError("a version or label needs a prompt_id")
        starting_fields = (self.prompt_id, self.version, self.label, self.title)
        if self.dialog_id is not None and any(value is not None for value in starting_fields):
            raise ValueError("prompt_id, version, label and title only apply to a new dialog")
        return self


class ChatMeta(Model):
    dialog_id: str
    turn_id: str
    prompt_id: str | None
    prompt_version: int | None
    model: str


ChatEvent = answer_stream_events(ChatMeta)
