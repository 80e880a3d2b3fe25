"""Release gates: a gated label moves only to a version whose evaluation run passed its dataset."""

from functools import cached_property

from shared.access.callers import Caller
from shared.datasets.repository import DatasetRepository
from shared.errors import Conflict, not_found
from shared.projects.service import ProjectService
from shared.prompts.models import Prompt, PromptRecord
from shared.prompts.service import PromptService, checked_label, settable_label
from shared.workflows.evaluations.outcomes import RunOutcomeRepository
from shared.workflows.gates.models import Gate, GateList, GateSet
from shared.workflows.gates.repository import GateRepository

# How many of the newest completed runs on the gate's dataset a label move looks at.
_RUNS_CONSIDERED = 100


class GateService:
    """Release gates over prompts, datasets and evaluation runs, and the label moves they guard."""

    def __init__(self) -> None:
        self.gates = GateRepository()
        self.prompts = PromptService(ProjectService())

    # Built on first use: listing or removing gates, or checking an ungated label, needs neither.
    @cached_property
    def datasets(self) -> DatasetRepository:
        return DatasetRepository()

    @cached_property
    def evaluations(self) -> RunOutcomeRepository:
        return RunOutcomeRepository()

    def move_label(self, prompt_id: str, label: str, version: int, caller: Caller) -> Prompt:
        """Point a label at a version; a gated label moves only to a version with a passing
        evaluation run (409 otherwise), a protected one only by an owner (403)."""
        return self.prompts.move_label(prompt_id, label, version, guard=self, caller=caller)

    def put(self, prompt_id: str, label: str, data: GateSet) -> Gate:
        """Protect a label: from now on it moves only to versions that pass `data`'s dataset
        (of the prompt's project) at its pass rate."""
        label = settable_label(label)
        record = self.prompts.get_record(prompt_id)
        dataset = self.datasets.get(data.dataset_id)
        if dataset is None or dataset.project_id != record.project_id:
            raise not_found("dataset", data.dataset_id)
        return self.gates.put(
            record.project_id, record.id, label, data.dataset_id, data.min_pass_rate
        )

    def list(self, prompt_id: str) -> GateList:
        self.prompts.get_record(prompt_id)
        return GateList(items=self.gates.of_prompt(prompt_id))

    def remove(self, prompt_id: str, label: str) -> None:
        label = checked_label(label)
        self.prompts.get_record(prompt_id)
        if not self.gates.delete(prompt_id, label):
            raise not_found("gate", f"{prompt_id}@{label}")

    def check(self, record: PromptRecord, label: str, version: int) -> None:
        """Refuse (409) moving a gated label to a version without a passing run.

        A run counts when it completed on every case of the gate's dataset (no case_tags),
        started after the dataset last changed, and ran this version without config overrides.
        """
        gate = self.gates.get(record.id, label)
        if gate is None:
            return
        details: dict[str, object] = {
            "label": label,
            "version": version,
            "dataset_id": gate.dataset_id,
            "min_pass_rate": gate.min_pass_rate,
        }
        dataset = self.datasets.get(gate.dataset_id)
        if dataset is None:
            raise Conflict(
                f"Label {label!r} is gated on dataset {gate.dataset_id}, which no longer exists; "
                "set the gate again or remove it.",
                code="gate_dataset_missing",
                details=details,
            )
        best: tuple[float, str] | None = None
        for run in self.evaluations.completed_on(record.id, gate.dataset_id, _RUNS_CONSIDERED):
            if run.case_tags or run.created_at < dataset.updated_at:
                continue
            for result in run.target_results:
                rate = result.pass_rate
                if result.version != version or result.config_overridden or rate is None:
                    continue
                if best is None or rate > best[0]:
                    best = (rate, run.id)
        if best is None:
            raise Conflict(
                f"Label {label!r} is gated: version {version} has no completed evaluation on "
                f"dataset {dataset.name!r} (every case, no config overrides, since the dataset "
                "last changed). Run one with POST /evaluations first.",
                code="gate_run_missing",
                details=details,
            )
        rate, evaluation_id = best
        if rate < gate.min_pass_rate:
            shortfall = round(gate.min_pass_rate - rate, 4)
            raise Conflict(
                f"Label {label!r} is gated: version {version}'s best run on dataset "
                f"{dataset.name!r} passed {rate:.1%} of its cells, {shortfall:.1%} short of the "
                f"required {gate.min_pass_rate:.1%}.",
                code="gate_not_passed",
                details={
                    **details,
                    "evaluation_id": evaluation_id,
                    "pass_rate": rate,
                    "shortfall": shortfall,
                },
            )
