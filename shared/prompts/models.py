"""Prompts and their immutable versions."""

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints, field_validator, model_validator

from shared.access.models import Actor
from shared.deepseek.models import ModelConfig
from shared.models import InputModel, LabelName, Model, Name
from shared.pagination import PageParams
from shared.prompts.templating import TemplateSyntaxError, template_variables

PromptType = Literal["text", "chat"]
LATEST_LABEL = "latest"
# What runs (executions, chat) use when they name no version or label, before `latest`.
RUN_DEFAULT_LABEL = "production"
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=50)]
Category = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
TemplateText = Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
CommitMessage = Annotated[str, StringConstraints(strip_whitespace=True, max_length=500)]
# Bounded so no number a client sends can overflow MongoDB's 64-bit integers.
VersionNumber = Annotated[int, Field(ge=1, le=2**31 - 1)]


class ChatMessage(InputModel):
    role: Literal["system", "user", "assistant"]
    content: TemplateText


def _unique(values: list[str]) -> list[str]:
    return list(dict.fromkeys(values))


class PromptContent(InputModel):
    """The versioned part of a prompt: what is sent to the model."""

    type: PromptType
    template: TemplateText | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=200)] | None = None
    config: ModelConfig = Field(default_factory=ModelConfig)

    @model_validator(mode="after")
    def _content_matches_type(self) -> "PromptContent":
        if self.type == "text" and (self.template is None or self.messages is not None):
            raise ValueError("a text prompt has a template and no messages")
        if self.type == "chat" and (self.messages is None or self.template is not None):
            raise ValueError("a chat prompt has messages and no template")
        try:
            self.variables()
        except TemplateSyntaxError as exc:
            raise ValueError(str(exc)) from exc
        return self

    def texts(self) -> list[str]:
        if self.template is not None:
            return [self.template]
        return [message.content for message in self.messages or []]

    def variables(self) -> list[str]:
        return template_variables(self.texts())

    def stored(self) -> dict[str, Any]:
        """The content as stored and compared: unset config values left out."""
        return {
            "type": self.type,
            "template": self.template,
            "messages": [m.model_dump() for m in self.messages] if self.messages else None,
            "config": self.config.model_dump(exclude_none=True),
        }


class PromptCreate(PromptContent):
    project_id: str
    name: Name
    category: Category | None = None
    tags: Annotated[list[Tag], Field(max_length=50)] = Field(default_factory=list)
    commit_message: CommitMessage | None = None
    labels: Annotated[list[LabelName], Field(max_length=20)] = Field(default_factory=list)

    @field_validator("tags", "labels")
    @classmethod
    def _deduplicate(cls, values: list[str]) -> list[str]:
        return _unique(values)

    @field_validator("labels")
    @classmethod
    def _latest_is_automatic(cls, labels: list[str]) -> list[str]:
        if LATEST_LABEL in labels:
            raise ValueError("'latest' always follows the newest version and cannot be set")
        return labels


class PromptUpdate(InputModel):
    """A partial update: metadata fields, and content fields that make a new version."""

    name: Name | None = None
    category: Category | None = None
    tags: Annotated[list[Tag], Field(max_length=50)] | None = None
    type: PromptType | None = None
    template: TemplateText | None = None
    messages: Annotated[list[ChatMessage], Field(min_length=1, max_length=200)] | None = None
    config: ModelConfig | None = None
    commit_message: CommitMessage | None = None

    @field_validator("tags")
    @classmethod
    def _deduplicate(cls, values: list[str] | None) -> list[str] | None:
        return _unique(values) if values is not None else None

    @model_validator(mode="after")
    def _name_and_tags_not_null(self) -> "PromptUpdate":
        for field in ("name", "tags"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null (a null category clears it)")
        return self

    def metadata(self) -> dict[str, Any]:
        return self.model_dump(include={"name", "category", "tags"}, exclude_unset=True)

    def touches_content(self) -> bool:
        return bool(self.model_fields_set & {"type", "template", "messages", "config"})


class PromptVersion(Model):
    version: int
    type: PromptType
    template: str | None
    messages: list[ChatMessage] | None
    variables: list[str]
    config: dict[str, Any]
    commit_message: str | None
    created_at: datetime
    # None for versions made before creators were recorded.
    created_by: Actor | None = None


class PromptRecord(Model):
    """A prompt's metadata as stored, without a version's content."""

    id: str
    project_id: str
    name: str
    category: str | None
    tags: list[str]
    labels: dict[str, int]
    latest_version: int
    created_at: datetime
    updated_at: datetime
    # None for prompts made before creators were recorded.
    created_by: Actor | None = None

    def version_for_label(self, label: str) -> int | None:
        return self.latest_version if label == LATEST_LABEL else self.labels.get(label)


class Prompt(PromptRecord):
    """A prompt with one chosen version, as the API renders it."""

    version: PromptVersion


class PromptUpdated(Prompt):
    created_version: bool


class PromptListParams(PageParams):
    project_id: str | None = None
    name: str | None = Field(None, max_length=100)
    category: str | None = Field(None, max_length=100)
    tag: str | None = Field(None, max_length=50)
    label: LabelName | None = None
    q: str | None = Field(None, max_length=100)


class VersionSelector(Model):
    version: VersionNumber | None = None
    label: LabelName | None = None

    @model_validator(mode="after")
    def _one_selector(self) -> "VersionSelector":
        if self.version is not None and self.label is not None:
            raise ValueError("choose a version or a label, not both")
        return self


class NamedPromptParams(VersionSelector):
    project_id: str | None = Field(
        None, description="The prompt's project; a project API key's own when left out"
    )


class VersionChoice(VersionSelector, InputModel):
    """A request naming a version by number or by label, not both (neither: the default)."""


class VersionListParams(Model):
    limit: int = Field(50, ge=1, le=100)
    cursor: VersionNumber | None = Field(None, description="List versions older than this one")


class VersionPage(Model):
    items: list[PromptVersion]
    next_cursor: int | None


class LabelMove(InputModel):
    version: VersionNumber


class LabelChange(Model):
    """One change of a label, as its history keeps it."""

    label: str
    from_version: int | None = Field(description="Where the label pointed before; null: unset")
    to_version: int | None = Field(description="Where it points after; null: removed")
    by: Actor
    at: datetime


class LabelHistoryParams(PageParams):
    pass


class DiffParams(Model):
    from_version: VersionNumber = Field(alias="from")
    to_version: VersionNumber = Field(alias="to")


class FieldChange(Model):
    field: str
    before: Any = Field(serialization_alias="from")
    after: Any = Field(serialization_alias="to")


class PromptDiff(Model):
    prompt_id: str
    from_version: int
    to_version: int
    type_changed: bool
    content_diff: str
    config_changes: list[FieldChange]
    variables_added: list[str]
    variables_removed: list[str]
