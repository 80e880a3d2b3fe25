"""Running evaluation cells delivered by the queue, once each, however often they are delivered.

Dispatch is a relay: a run starts by handing `concurrency` cells to the queue, and each cell a
worker finishes hands out the next one. So a run never has more cells in flight towards DeepSeek
than it asked for, however many worker instances the platform starts, and no HTTP request has to
stay open while it runs.

A delivery reaches MongoDB in two steps, each one trip to a worker thread: the claim step before
the cell runs and the finish step after it (the execution service adds its own two, prepare and
finish). Everything between them is the run itself, on the event loop.
"""

import contextlib
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio

from shared.assertions.engine import with_expected
from shared.assertions.judge import assess
from shared.deepseek.models import ModelConfig
from shared.errors import AppError
from shared.executions.models import ExecutionCreate, ExecutionError
from shared.executions.service import ExecutionService
from shared.metering.models import BUDGET_EXCEEDED, Payer
from shared.projects.service import ProjectService
from shared.prompts.service import PromptService
from shared.queues.publishers import publisher_for
from shared.settings import get_settings
from shared.workflows.evaluations.channel import CELLS
from shared.workflows.evaluations.models import (
    Cell,
    CellEvent,
    CellOutcome,
    CellRun,
    Evaluation,
    Outcome,
)
from shared.workflows.evaluations.repository import EvaluationRepository
from shared.workflows.evaluations.results import summarize, target_results, verdict

logger = logging.getLogger("better_assistant.evaluations")
_NOT_RUN = "Not run: the project's monthly budget was spent."


def take_pending(
    evaluations: EvaluationRepository, evaluation_id: str, count: int
) -> list[CellEvent]:
    """Take up to `count` pending cells of a run, in order, for the queue: the events handing
    them out."""
    lease_s = get_settings().evaluation_cell_lease_s
    taken = []
    for _ in range(count):
        cell_id = evaluations.dispatch_next(evaluation_id, lease_s)
        if cell_id is None:
            break
        taken.append(CellEvent(evaluation_id=evaluation_id, cell_id=cell_id))
    return taken


def retake_expired(evaluations: EvaluationRepository, evaluation_id: str) -> list[CellEvent]:
    """Lease again the cells whose worker did not finish them within their lease: the events
    handing them out anew."""
    lease_s = get_settings().evaluation_cell_lease_s
    expired = evaluations.expired_leases(evaluation_id)
    for cell_id in expired:
        logger.warning("evaluation %s: cell %s outlived its lease", evaluation_id, cell_id)
        evaluations.renew_lease(cell_id, lease_s)
    return [CellEvent(evaluation_id=evaluation_id, cell_id=cell_id) for cell_id in expired]


async def hand_out(events: list[CellEvent]) -> None:
    """Hand taken cells to the queue. Callers shield taking and handing out together from
    cancellation: a cell taken but never handed out waits out its whole lease."""
    publisher = publisher_for(CELLS, consume_cell)
    for event in events:
        await publisher.publish(event)


@dataclass
class ClaimedCell:
    """A cell this delivery holds, with its run: what running it needs."""

    run: Evaluation
    cell: Cell
    claim: str


@dataclass
class Settled:
    """What a delivery came to, and the cells of the run it hands out next."""

    outcome: CellOutcome
    to_hand_out: list[CellEvent] = field(default_factory=list)


class EvaluationWorker:
    def __init__(self) -> None:
        self.evaluations = EvaluationRepository()

    async def process(self, event: CellEvent) -> CellOutcome:
        """Run one cell and grade it, then hand out the run's next cell.

        Idempotent by cell: a delivery of a cell that is done, cancelled or being run by another
        delivery changes nothing and runs (and bills) nothing.
        """
        # Shielded: a delivery cancelled meanwhile still learns what it claimed, so that it can
        # give the cell back, and hands out the cells it took.
        with anyio.CancelScope(shield=True):
            step = await anyio.to_thread.run_sync(self.claim_step, event, uuid.uuid4().hex)
            if isinstance(step, Settled):
                await hand_out(step.to_hand_out)
                return step.outcome
        return await self._run_claimed(event, step)

    def claim_step(self, event: CellEvent, claim: str) -> ClaimedCell | Settled:
        """Take the cell and read its run; settle at once a delivery that has nothing to run (a
        cell it cannot take, a run deleted or cancelled), and mark a queued run running."""
        lease_s = get_settings().evaluation_cell_lease_s
        cell = self.evaluations.claim(event.cell_id, claim, lease_s)
        if cell is None:
            return self._not_claimed(event)
        try:
            run = self.evaluations.get(event.evaluation_id)
            if run is None or cell.evaluation_id != run.id:
                return Settled(_outcome(event, "unknown"))
            if run.status == "cancelled":
                self.evaluations.cancel_cell(cell, claim)
                return Settled(_outcome(event, "cancelled"))
            if run.status == "queued":
                self.evaluations.mark_running(run.id)
        except BaseException:
            self._give_back(cell, claim)
            raise
        return ClaimedCell(run, cell, claim)

    def _not_claimed(self, event: CellEvent) -> Settled:
        """Settle a delivery of a cell that is done, cancelled, unknown or held by another one."""
        state = self.evaluations.cell_state(event.cell_id)
        if state is None:
            return Settled(_outcome(event, "unknown"))
        if state == "cancelled":
            return Settled(_outcome(event, "cancelled"))
        restarted = self._restart_if_stalled(event.evaluation_id) if state == "done" else []
        return Settled(_outcome(event, "duplicate"), restarted)

    def _restart_if_stalled(self, evaluation_id: str) -> list[CellEvent]:
        """A redelivered finished cell may be the retry of a delivery that failed after storing
        its result: when the run has nothing in flight, complete it if every cell is finished,
        else refill it."""
        run = self.evaluations.get(evaluation_id)
        if run is None or run.status not in ("queued", "running"):
            return []
        if self.evaluations.in_flight(run.id):
            return []
        if run.progress.done + run.progress.cancelled >= run.progress.total:
            self._complete(run)
            return []
        return take_pending(self.evaluations, run.id, run.concurrency)

    async def _run_claimed(self, event: CellEvent, claimed: ClaimedCell) -> CellOutcome:
        try:
            result = await self._run(claimed.run, claimed.cell)
        except BaseException:
            await self._give_back_shielded(claimed)
            raise
        # Shielded: the result is stored, and the cells the finish step takes reach the queue,
        # even when the delivery is cancelled meanwhile.
        with anyio.CancelScope(shield=True):
            try:
                settled = await anyio.to_thread.run_sync(self.finish_step, event, claimed, result)
            except BaseException:
                await self._give_back_shielded(claimed)
                raise
            await hand_out(settled.to_hand_out)
        return settled.outcome

    async def _give_back_shielded(self, claimed: ClaimedCell) -> None:
        """Give the cell back, so the queue's retry runs it instead of waiting out the lease."""
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(self._give_back, claimed.cell, claimed.claim)

    def finish_step(self, event: CellEvent, claimed: ClaimedCell, result: CellRun) -> Settled:
        """Store the cell's result; then complete the run when this was its last cell, or take
        the run's next cell and the cells whose worker vanished, to hand them out."""
        counted = self.evaluations.finish_cell(claimed.cell, claimed.claim, result)
        if counted is None:
            return Settled(_outcome(event, "duplicate"))
        run_id = claimed.run.id
        done = CellOutcome(
            evaluation_id=run_id, cell_id=event.cell_id, outcome="done", passed=result.passed
        )
        if result.error is not None and result.error.code == BUDGET_EXCEEDED:
            # The budget refused this cell, so it refuses the rest: stop dispatching, and
            # record what is left as not run; cells already running finish and are counted.
            not_run = ExecutionError(code=BUDGET_EXCEEDED, message=_NOT_RUN)
            counted = self.evaluations.fail_remaining(run_id, not_run) or counted
        progress = counted.progress
        if progress.done + progress.cancelled >= progress.total:
            self._complete(counted)
            return Settled(done)
        if counted.status == "cancelled":
            return Settled(done)
        next_cell = take_pending(self.evaluations, run_id, 1)
        return Settled(done, [*next_cell, *retake_expired(self.evaluations, run_id)])

    def _give_back(self, cell: Cell, claim: str) -> None:
        """Release a claimed cell after a failure, if MongoDB lets us: the lease covers the
        case where it does not."""
        with contextlib.suppress(Exception):
            self.evaluations.release(cell, claim)

    async def _run(self, run: Evaluation, cell: Cell) -> CellRun:
        """Execute the cell through the execution service (so it is an execution record too),
        then check its assertions."""
        case = cell.case()
        target = run.targets[cell.target]
        request = ExecutionCreate(
            prompt_id=run.prompt_id,
            version=target.version,
            variables=case.variables,
            input=case.input,
            history=case.history,
            config=ModelConfig.model_validate(target.config) if target.config else None,
        )
        projects = ProjectService()
        executions = ExecutionService(PromptService(projects), projects)
        try:
            execution = await executions.run_recorded(request, run.started_by, "evaluation")
        except AppError as exc:
            # The run could not even start: a variable the case lacks, a deleted version.
            error = ExecutionError(code=exc.code, message=exc.message)
            return CellRun(status="error", passed=None, assertions=[], error=error)
        execution_fields: dict[str, Any] = {
            "execution_id": execution.id,
            "output": execution.output,
            "latency_ms": execution.latency_ms,
            "cost": execution.cost,
            "usage": execution.usage,
        }
        if execution.status != "ok":
            return CellRun(
                **execution_fields,
                status="error",
                passed=None,
                assertions=[],
                error=execution.error,
            )
        specs = with_expected([*run.assertions, *case.assertions], case.expected)
        results = await assess(
            specs,
            execution.output,
            execution.latency_ms,
            execution.cost,
            input=case.input,
            expected=case.expected,
            history=[turn.model_dump() for turn in case.history],
            # Grading calls are billed like the cell's own call.
            on_usage=executions.metering.recorder(Payer(run.project_id, run.started_by)),
        )
        return CellRun(
            **execution_fields,
            status="ok",
            passed=verdict(results),
            assertions=results,
            judge_cost=sum(result.cost or 0 for result in results),
            error=None,
        )

    def _complete(self, run: Evaluation) -> None:
        """Close a run whose every cell is finished, keeping what its release gates read."""
        summaries = summarize(run, self.evaluations.figures_of(run.id))
        self.evaluations.complete(run.id, target_results(summaries, run.targets))


def _outcome(event: CellEvent, outcome: Outcome) -> CellOutcome:
    return CellOutcome(evaluation_id=event.evaluation_id, cell_id=event.cell_id, outcome=outcome)


async def consume_cell(event: CellEvent) -> CellOutcome:
    """Run a delivered cell: what consuming the evaluation channel means (the worker function,
    the local queue, a publisher's fallback, the SQS drain)."""
    return await EvaluationWorker().process(event)
