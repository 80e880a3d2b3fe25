"""What a team does with prompts: create, version, label, compare, fetch at run time."""

import difflib
import hashlib
from typing import Any, Protocol

from pydantic import TypeAdapter, ValidationError

from shared.access.callers import Caller
from shared.access.models import Actor, Permission, Role
from shared.errors import Conflict, Forbidden, not_found, validation_failed
from shared.pagination import Page
from shared.projects.models import ProjectLookup
from shared.prompts.models import (
    LATEST_LABEL,
    RUN_DEFAULT_LABEL,
    DiffParams,
    FieldChange,
    LabelChange,
    LabelHistoryParams,
    LabelName,
    Prompt,
    PromptContent,
    PromptCreate,
    PromptDiff,
    PromptListParams,
    PromptRecord,
    PromptUpdate,
    PromptUpdated,
    PromptVersion,
    VersionListParams,
    VersionPage,
    VersionSelector,
)
from shared.prompts.repository import PromptRepository

_LABEL_NAME = TypeAdapter(LabelName)


def checked_label(label: str) -> str:
    """A label from a URL path, refused unless it is a valid label name."""
    try:
        return _LABEL_NAME.validate_python(label)
    except ValidationError as exc:
        raise validation_failed(
            "Labels are 1-50 letters, digits, '_' or '-'.", exc, "path"
        ) from exc


def settable_label(label: str) -> str:
    """A label a team may point, remove or gate: any valid name but `latest`."""
    label = checked_label(label)
    if label == LATEST_LABEL:
        raise Conflict("'latest' always follows the newest version.", code="reserved_label")
    return label


def prompt_etag(record: PromptRecord, version: int) -> str:
    """Changes whenever anything the response shows can change: the prompt or the version."""
    stamp = f"{record.id}:{version}:{record.updated_at.timestamp():.3f}"
    return '"' + hashlib.sha1(stamp.encode()).hexdigest()[:20] + '"'


def _content_lines(version: PromptVersion) -> list[str]:
    """The content as diffable lines: a template as is, chat messages under `[role]` headers."""
    if version.template is not None:
        return [line + "\n" for line in version.template.splitlines()]
    lines: list[str] = []
    for message in version.messages or []:
        lines.append(f"[{message.role}]\n")
        lines.extend(line + "\n" for line in message.content.splitlines())
    return lines


def _config_changes(before: dict[str, Any], after: dict[str, Any]) -> list[FieldChange]:
    return [
        FieldChange(field=key, before=before.get(key), after=after.get(key))
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]


class LabelGuard(Protocol):
    """What may refuse a label move (409): the release gates."""

    def check(self, record: PromptRecord, label: str, version: int) -> None: ...


class PromptService:
    def __init__(self, projects: ProjectLookup) -> None:
        self.prompts = PromptRepository()
        self.projects = projects

    def create(self, data: PromptCreate, caller: Caller) -> Prompt:
        """Create a prompt and its version 1 in an existing project; starting with a protected
        label is setting it, so it needs an owner too."""
        self._may_change_labels(caller, data.project_id, data.labels)
        record, version = self.prompts.create(data, caller.actor)
        return Prompt(**record.model_dump(), version=version)

    def _may_change_labels(self, caller: Caller, project_id: str, labels: list[str]) -> None:
        """Refuse (403) changing any of the project's protected labels unless the caller owns
        the project; 404 when the project does not exist."""
        project = self.projects.get(project_id)
        protected = [label for label in labels if label in project.protected_labels]
        if not protected or caller.may(Permission.OWN, project_id):
            return
        raise Forbidden(
            f"Label {protected[0]!r} is protected in this project: only an owner may set, "
            "move or remove it.",
            details={"label": protected[0], "required_role": Role.OWNER.value},
        )

    def search(self, params: PromptListParams, within: list[str] | None) -> Page[PromptRecord]:
        """Prompts of the `within` projects (None: every project) matching the filters."""
        return Page.of(self.prompts.search(params, within), params)

    def get_record(self, prompt_id: str) -> PromptRecord:
        record = self.prompts.get(prompt_id)
        if record is None:
            raise not_found("prompt", prompt_id)
        return record

    def record_by_name(self, project_id: str, name: str) -> PromptRecord | None:
        """The project's prompt of that name, if there is one."""
        return self.prompts.get_by_name(project_id, name)

    def records_in_project(self, project_id: str, limit: int) -> list[PromptRecord]:
        """The project's prompts by name, at most `limit`."""
        return self.prompts.in_project(project_id, limit)

    def resolve_version_number(self, record: PromptRecord, selector: VersionSelector) -> int:
        """The version a selector names: a number, a label, or the latest."""
        if selector.version is not None:
            if selector.version > record.latest_version:
                raise not_found("version", f"{record.id}@{selector.version}")
            return selector.version
        label = selector.label or LATEST_LABEL
        number = record.version_for_label(label)
        if number is None:
            raise not_found("label", f"{record.id}@{label}")
        return number

    def version_to_run(
        self, prompt_id: str, version: int | None, label: str | None
    ) -> tuple[PromptRecord, PromptVersion]:
        """The version a run uses: the one named by number or label, else production, else latest.

        Labels are read now, so moving one changes the next run.
        """
        record = self.get_record(prompt_id)
        return record, self.version_of(record, version, label)

    def version_of(
        self, record: PromptRecord, version: int | None, label: str | None
    ) -> PromptVersion:
        """The version a run uses, by the rule of `version_to_run`, of a record already read."""
        return self.get_version(record.id, self.number_to_run(record, version, label))

    def number_to_run(self, record: PromptRecord, version: int | None, label: str | None) -> int:
        """The version number a run uses, by the rule of `version_to_run`."""
        if version is None and label is None:
            return record.labels.get(RUN_DEFAULT_LABEL, record.latest_version)
        return self.resolve_version_number(record, VersionSelector(version=version, label=label))

    def get_version(self, prompt_id: str, number: int) -> PromptVersion:
        """One version of a prompt; 404 when either does not exist."""
        version = self.prompts.get_version(prompt_id, number)
        if version is None:
            raise not_found("version", f"{prompt_id}@{number}")
        return version

    def fetch(
        self, prompt_id: str, selector: VersionSelector, known_etags: list[str]
    ) -> tuple[Prompt | None, str]:
        """The prompt at the chosen version and its ETag; None when a known ETag still matches.

        The run-time hot path: a revalidation costs one indexed read of the prompt.
        """
        return self._fetched(self.get_record(prompt_id), selector, known_etags)

    def fetch_by_name(
        self, project_id: str, name: str, selector: VersionSelector, known_etags: list[str]
    ) -> tuple[Prompt | None, str]:
        """As `fetch`, for the project's prompt of that name; 404 as for an unknown prompt."""
        record = self.prompts.get_by_name(project_id, name)
        if record is None:
            raise not_found("prompt", name)
        return self._fetched(record, selector, known_etags)

    def _fetched(
        self, record: PromptRecord, selector: VersionSelector, known_etags: list[str]
    ) -> tuple[Prompt | None, str]:
        number = self.resolve_version_number(record, selector)
        etag = prompt_etag(record, number)
        if etag in known_etags or "*" in known_etags:
            return None, etag
        return Prompt(**record.model_dump(), version=self.get_version(record.id, number)), etag

    def update(self, prompt_id: str, changes: PromptUpdate, by: Actor) -> PromptUpdated:
        """Apply metadata in place; content or config changes append a version made `by`."""
        record = self.get_record(prompt_id)
        latest = self.get_version(prompt_id, record.latest_version)
        # Validated before anything is written: a request that fails changes nothing.
        content = self._merged_content(latest, changes) if changes.touches_content() else None
        metadata = changes.metadata()
        if metadata:
            record = self.prompts.update_metadata(prompt_id, metadata) or record
        if content is None:
            return PromptUpdated(**record.model_dump(), version=latest, created_version=False)
        version, created = self.prompts.add_version(prompt_id, content, changes.commit_message, by)
        record = self.get_record(prompt_id)
        return PromptUpdated(**record.model_dump(), version=version, created_version=created)

    @staticmethod
    def _merged_content(latest: PromptVersion, changes: PromptUpdate) -> PromptContent:
        """The latest content with the update applied; config merges key by key (null removes)."""
        given = changes.model_dump(include={"type", "template", "messages"}, exclude_unset=True)
        content: dict[str, Any] = {
            "type": given.get("type", latest.type),
            "template": latest.template,
            "messages": latest.messages,
            "config": dict(latest.config),
        }
        if "template" in given or "messages" in given:
            content["template"] = given.get("template")
            content["messages"] = given.get("messages")
        if changes.config is not None:
            for key, value in changes.config.model_dump(exclude_unset=True).items():
                if value is None:
                    content["config"].pop(key, None)
                else:
                    content["config"][key] = value
        try:
            return PromptContent.model_validate(content)
        except ValidationError as exc:
            raise validation_failed(
                "The update leaves the prompt without valid content.", exc, "body"
            ) from exc

    def delete(self, prompt_id: str) -> None:
        """Delete a prompt with its versions; its gates and evaluation runs belong to other
        domains, which `shared.workflows.deletion.prompts` deletes with it."""
        if not self.prompts.delete(prompt_id):
            raise not_found("prompt", prompt_id)

    def list_versions(self, prompt_id: str, params: VersionListParams) -> VersionPage:
        self.get_record(prompt_id)
        versions = self.prompts.list_versions(prompt_id, params.limit, params.cursor)
        more = len(versions) > params.limit
        versions = versions[: params.limit]
        return VersionPage(items=versions, next_cursor=versions[-1].version if more else None)

    def diff(self, prompt_id: str, params: DiffParams) -> PromptDiff:
        """A unified diff of the content and a field-by-field diff of the config."""
        before = self.get_version(prompt_id, params.from_version)
        after = self.get_version(prompt_id, params.to_version)
        content_diff = "".join(
            difflib.unified_diff(
                _content_lines(before),
                _content_lines(after),
                fromfile=f"v{before.version}",
                tofile=f"v{after.version}",
            )
        )
        return PromptDiff(
            prompt_id=prompt_id,
            from_version=before.version,
            to_version=after.version,
            type_changed=before.type != after.type,
            content_diff=content_diff,
            config_changes=_config_changes(before.config, after.config),
            variables_added=[v for v in after.variables if v not in before.variables],
            variables_removed=[v for v in before.variables if v not in after.variables],
        )

    def move_label(
        self, prompt_id: str, label: str, version: int, guard: LabelGuard, caller: Caller
    ) -> Prompt:
        """Point a label at an existing version (how teams promote and roll back), unless the
        label is protected and the caller no owner (403) or `guard` refuses the move (409).

        A move to where the label already points changes nothing and is not recorded.
        """
        label = settable_label(label)
        record = self.get_record(prompt_id)
        self._may_change_labels(caller, record.project_id, [label])
        target = self.get_version(prompt_id, version)
        guard.check(record, label, version)
        changed = self.prompts.change_label(prompt_id, label, version, caller.actor)
        if changed is None:
            raise not_found("prompt", prompt_id)
        return Prompt(**changed[0].model_dump(), version=target)

    def remove_label(self, prompt_id: str, label: str, caller: Caller) -> None:
        """Remove a label; a protected one only by an owner (403)."""
        label = settable_label(label)
        record = self.get_record(prompt_id)
        self._may_change_labels(caller, record.project_id, [label])
        changed = self.prompts.change_label(prompt_id, label, None, caller.actor)
        if changed is None:
            raise not_found("prompt", prompt_id)
        if changed[1] is None:
            raise not_found("label", f"{prompt_id}@{label}")

    def label_history(
        self, prompt_id: str, label: str, params: LabelHistoryParams
    ) -> Page[LabelChange]:
        """Every change of a label (who, when, from and to which version), newest first."""
        label = checked_label(label)
        if label == LATEST_LABEL:
            raise Conflict(
                "'latest' always follows the newest version: its history is the version list, "
                "GET /prompts/{id}/versions.",
                code="reserved_label",
            )
        found = self.prompts.label_history(prompt_id, label, params)
        if found is None:
            raise not_found("prompt", prompt_id)
        return Page.of(found, params)
