"""Evaluation runs: start one (202 at once), follow its progress, cancel it, compare targets."""

from collections import defaultdict
from typing import Any

import anyio

from shared.access.models import Actor
from shared.datasets.models import Case
from shared.datasets.repository import DatasetRepository
from shared.deepseek.models import merged_params
from shared.errors import Conflict, ValidationFailed, not_found
from shared.metering.models import Limits, Payer
from shared.metering.service import Metering, bounded_params
from shared.pagination import Page
from shared.projects.service import ProjectService
from shared.prompts.models import PromptRecord
from shared.prompts.service import PromptService
from shared.settings import get_settings
from shared.workflows.evaluations.models import (
    MAX_CELLS,
    CaseComparison,
    CaseResult,
    CellDraft,
    CellEvent,
    CompareParams,
    Evaluation,
    EvaluationComparison,
    EvaluationCreate,
    EvaluationDetail,
    EvaluationDraft,
    EvaluationListParams,
    ResultPageParams,
    Target,
    TargetCreate,
)
from shared.workflows.evaluations.repository import EvaluationRepository
from shared.workflows.evaluations.results import case_order, case_rows, summarize, verdicts
from shared.workflows.evaluations.worker import hand_out, retake_expired, take_pending


def _target_name(target: TargetCreate, version: int) -> str:
    if target.name:
        return target.name
    name = f"{target.label}@v{version}" if target.label else f"v{version}"
    return f"{name}+config" if target.config else name


class EvaluationService:
    def __init__(self) -> None:
        self.evaluations = EvaluationRepository()
        self.datasets = DatasetRepository()
        self.projects = ProjectService()
        self.prompts = PromptService(self.projects)

    async def start(self, data: EvaluationCreate, actor: Actor) -> Evaluation:
        """Store the run and its cells, hand the first cells to the queue, and return at once."""
        with anyio.CancelScope(shield=True):  # cells taken must reach the queue
            run, first_cells = await anyio.to_thread.run_sync(
                self._create_and_take_first, data, actor
            )
            await hand_out(first_cells)
        return run

    def _create_and_take_first(
        self, data: EvaluationCreate, actor: Actor
    ) -> tuple[Evaluation, list[CellEvent]]:
        run = self.create(data, actor)
        return run, take_pending(self.evaluations, run.id, run.concurrency)

    def create(self, data: EvaluationCreate, actor: Actor) -> Evaluation:
        """The run as queued: targets resolved to versions now, cases snapshotted, the matrix
        of cases x targets x repetitions expanded into cells; admitted against the project's
        limits (a target asking for too much output, a spent budget, the caller's rate) before
        anything is stored. Its calls are billed to `actor`."""
        record = self.prompts.get_record(data.prompt_id)
        dataset = self.datasets.get(data.dataset_id)
        if dataset is None or dataset.project_id != record.project_id:
            raise not_found("dataset", data.dataset_id)
        limits = self.projects.get_recent(record.project_id).limits
        targets = self._targets(record, data.targets, limits)
        cases = self.datasets.all_cases(data.dataset_id, data.case_tags)
        if not cases:
            raise ValidationFailed(
                "No case of the dataset matches; add cases or change case_tags.",
                code="no_cases",
                details={"dataset_id": data.dataset_id, "case_tags": data.case_tags},
            )
        total = len(cases) * len(targets) * data.repeat
        if total > MAX_CELLS:
            raise ValidationFailed(
                f"The run would have {total} cells; at most {MAX_CELLS} are allowed.",
                code="too_many_cells",
                details={"cells": total, "max": MAX_CELLS},
            )
        Metering().admit(Payer(record.project_id, actor), limits)
        cells = _cells(cases, targets, data.repeat)
        concurrency = min(data.concurrency, get_settings().evaluation_max_concurrency)
        return self.evaluations.create(
            EvaluationDraft(
                project_id=record.project_id,
                prompt_id=record.id,
                dataset_id=data.dataset_id,
                targets=targets,
                assertions=data.assertions,
                case_tags=data.case_tags,
                repeat=data.repeat,
                concurrency=concurrency,
                case_count=len(cases),
                started_by=actor,
            ),
            cells,
        )

    def _targets(
        self, record: PromptRecord, wanted: list[TargetCreate], limits: Limits
    ) -> list[Target]:
        """Each target at the version its selector names now (a label may move during the run);
        422 for one whose output may be longer than the project allows."""
        targets = []
        for index, target in enumerate(wanted):
            version = self.prompts.version_of(record, target.version, target.label)
            number = version.version
            location = ("body", "targets", index, "config")
            bounded_params(merged_params(version.config, target.config), limits, location)
            config = target.config.model_dump(exclude_unset=True) if target.config else None
            targets.append(
                Target(
                    index=index,
                    name=_target_name(target, number),
                    version=number,
                    label=target.label,
                    config=config or None,
                )
            )
        names = [target.name for target in targets]
        for target in targets:
            if names.count(target.name) > 1:
                target.name = f"{target.name} #{target.index}"
        return targets

    def get(self, evaluation_id: str) -> Evaluation:
        run = self.evaluations.get(evaluation_id)
        if run is None:
            raise not_found("evaluation", evaluation_id)
        return run

    def detail(self, evaluation_id: str, params: ResultPageParams) -> EvaluationDetail:
        """The run with its summary per target and a page of the per-case table."""
        run = self.get(evaluation_id)
        # Every cell's figures give the summary and the table's order; only the page's cells
        # are read whole (case and output).
        figures = self.evaluations.figures_of(run.id)
        order = case_order(figures)
        page = order[params.offset : params.offset + params.limit]
        rows = case_rows(run, self.evaluations.cells_of(run.id, page)) if page else {}
        return EvaluationDetail(
            **run.model_dump(),
            summary=summarize(run, figures),
            results=[rows[index] for index in page],
            results_total=len(order),
        )

    def search(self, params: EvaluationListParams, within: list[str] | None) -> Page[Evaluation]:
        """Runs of the `within` projects (None: every project) matching the filters."""
        return Page.of(self.evaluations.search(params, within), params)

    def cancel(self, evaluation_id: str) -> Evaluation:
        """Stop handing out cells; cells already running finish and keep their results."""
        cancelled = self.evaluations.cancel(evaluation_id)
        if cancelled is None:
            raise Conflict(
                f"The evaluation is {self.get(evaluation_id).status}; only a queued or running "
                "one can be cancelled.",
                code="evaluation_finished",
            )
        return cancelled

    async def resume(self, evaluation_id: str) -> Evaluation:
        """Hand out again cells whose worker vanished, and top the run up to its concurrency
        (after a queue lost deliveries); a healthy run is left as it is."""
        with anyio.CancelScope(shield=True):  # cells taken must reach the queue
            await hand_out(await anyio.to_thread.run_sync(self._take_to_refill, evaluation_id))
        return await anyio.to_thread.run_sync(self.get, evaluation_id)

    def _take_to_refill(self, evaluation_id: str) -> list[CellEvent]:
        """The cells of a queued or running run to hand out again, and enough pending ones to
        bring it back to its concurrency."""
        run = self.get(evaluation_id)
        if run.status not in ("queued", "running"):
            raise Conflict(
                f"The evaluation is {run.status}; only a queued or running one can be resumed.",
                code="evaluation_finished",
            )
        expired = retake_expired(self.evaluations, run.id)
        in_flight = self.evaluations.in_flight(run.id)
        pending = take_pending(self.evaluations, run.id, max(0, run.concurrency - in_flight))
        return [*expired, *pending]

    def compare(self, evaluation_id: str, params: CompareParams) -> EvaluationComparison:
        """Cases that pass on one target and fail on the other, with both sides' outputs."""
        run = self.get(evaluation_id)
        a, b = _target(run, params.a, "a"), _target(run, params.b, "b")
        figures = self.evaluations.figures_of(run.id)
        verdicts_a, verdicts_b = verdicts(figures, a.index), verdicts(figures, b.index)
        buckets: dict[tuple[bool | None, bool | None], list[int]] = defaultdict(list)
        for index, passed_a in verdicts_a.items():
            buckets[passed_a, verdicts_b.get(index)].append(index)
        turned = {"pass_to_fail": buckets[True, False], "fail_to_pass": buckets[False, True]}
        # Only the cases that turned are read whole, for both sides' outputs.
        changed = [index for indexes in turned.values() for index in indexes]
        rows = case_rows(run, self.evaluations.cells_of(run.id, changed)) if changed else {}
        comparison: dict[str, Any] = {
            bucket: [_comparison(rows[index], a, b) for index in indexes]
            for bucket, indexes in turned.items()
        }
        decided = len(buckets[True, True]) + len(buckets[False, False]) + len(changed)
        comparison.update(
            both_passed=len(buckets[True, True]),
            both_failed=len(buckets[False, False]),
            undecided=len(verdicts_a) - decided,
        )
        return EvaluationComparison(evaluation_id=run.id, a=a, b=b, **comparison)


def _comparison(row: CaseResult, a: Target, b: Target) -> CaseComparison:
    return CaseComparison(
        case_id=row.case_id,
        input=row.input,
        variables=row.variables,
        expected=row.expected,
        a=row.targets[a.index],
        b=row.targets[b.index],
    )


def _target(run: Evaluation, wanted: str, parameter: str) -> Target:
    """A target by index or name; a 422 lists the run's targets when none matches."""
    for target in run.targets:
        if wanted == str(target.index) or wanted == target.name:
            return target
    raise ValidationFailed(
        f"The evaluation has no target {wanted!r}.",
        code="unknown_target",
        details={
            "parameter": parameter,
            "targets": [{"index": t.index, "name": t.name} for t in run.targets],
        },
    )


def _cells(cases: list[Case], targets: list[Target], repeat: int) -> list[CellDraft]:
    """The matrix in dispatch order: every target of a case next to each other, case by case,
    one repetition after another, so partial results already compare targets."""
    snapshots = [case.model_dump_json() for case in cases]
    return [
        CellDraft(
            case_index=case_index,
            case_id=case.id,
            case_json=snapshots[case_index],
            target=target.index,
            repetition=repetition,
        )
        for repetition in range(repeat)
        for case_index, case in enumerate(cases)
        for target in targets
    ]
