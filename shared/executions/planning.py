"""What a run of a prompt sends to DeepSeek, worked out before anything is admitted or stored.

Every execution is planned here, and `POST /prompts/{id}/render` shows the same plan without
running it. So this module stays clear of the DeepSeek client: the prompts function imports it
and must not pay for the `openai` SDK.
"""

from dataclasses import dataclass
from typing import Protocol

from shared.deepseek.models import ChatCall
from shared.executions.models import RenderedMessage, RunInputs, RunPreview, VariableUse
from shared.metering.models import Limits
from shared.metering.service import bounded_call
from shared.projects.models import ProjectLookup
from shared.prompts.models import LATEST_LABEL, RUN_DEFAULT_LABEL, PromptRecord, PromptVersion
from shared.prompts.rendering import render_messages, template_values


class PromptsToRun(Protocol):
    """What running a prompt needs of the prompts domain."""

    def version_to_run(
        self, prompt_id: str, version: int | None, label: str | None
    ) -> tuple[PromptRecord, PromptVersion]: ...

    def get_record(self, prompt_id: str) -> PromptRecord: ...


@dataclass(frozen=True)
class RunPlan:
    """A run before it is admitted: the version it runs, through which label, the project's
    limits and the call it sends."""

    record: PromptRecord
    version: PromptVersion
    label: str | None
    limits: Limits
    call: ChatCall


class RunPlanner:
    def __init__(self, prompts: PromptsToRun, projects: ProjectLookup) -> None:
        self.prompts = prompts
        self.projects = projects

    def plan(self, prompt_id: str, inputs: RunInputs, *, keep_missing: bool = False) -> RunPlan:
        """Resolve the version (by number or label, else production, else latest), render its
        messages (a 422 names every missing variable unless `keep_missing` leaves their
        placeholders as written) and bound its parameters by the project's limits (422)."""
        record, version = self.prompts.version_to_run(prompt_id, inputs.version, inputs.label)
        history = [turn.model_dump() for turn in inputs.history]
        messages = render_messages(
            version, inputs.variables, inputs.input, history, keep_missing=keep_missing
        )
        limits = self.projects.get_recent(record.project_id).limits
        call = bounded_call(version.config, inputs.config, limits, messages)
        label = inputs.label or (
            None if inputs.version else default_run_label(record, version.version)
        )
        return RunPlan(record, version, label, limits, call)

    def preview(self, prompt_id: str, inputs: RunInputs) -> RunPreview:
        """The plan as a client sees it, missing variables listed and left in place."""
        plan = self.plan(prompt_id, inputs, keep_missing=True)
        used = plan.version.variables
        given = template_values(plan.version, inputs.variables, inputs.input)
        return RunPreview(
            prompt_id=plan.record.id,
            prompt_version=plan.version.version,
            label=plan.label,
            model=plan.call.model,
            params=plan.call.params,
            messages=[RenderedMessage.model_validate(m) for m in plan.call.messages],
            variables=VariableUse(
                used=used,
                filled=[name for name in used if name in given],
                missing=[name for name in used if name not in given],
                unused=[name for name in given if name not in used],
            ),
        )


def default_run_label(record: PromptRecord, number: int) -> str | None:
    """The label a defaulted run went through: production when it points here, else latest."""
    if record.labels.get(RUN_DEFAULT_LABEL) == number:
        return RUN_DEFAULT_LABEL
    return LATEST_LABEL
