"""Running evaluation cells delivered by the queue, once each, however often they are delivered.

Dispatch is a relay: a run starts by handing `concurrency` cells to the queue, and each cell a
worker finishes hands out the next one. So a run never has more cells in flight towards DeepSeek
than it asked for, however many worker instances the platform starts, and no HTTP request has to
stay open while it runs.
"""

import contextlib
import logging
import uuid
from typing import Any

import anyio

from shared.assertions.engine import with_expected
from shared.assertions.judge import assess
from shared.deepseek.models import ModelConfig
from shared.errors import AppError
from shared.executions.models import ExecutionCreate, ExecutionError
from shared.executions.service import ExecutionService
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


async def _hand_out(evaluation_id: str, cell_id: str) -> None:
    event = CellEvent(evaluation_id=evaluation_id, cell_id=cell_id)
    await publisher_for(CELLS, consume_cell).publish(event)


async def dispatch(evaluation_id: str, count: int) -> int:
    """Hand up to `count` pending cells of a run to the queue; the number handed out."""
    repository = EvaluationRepository()
    lease_s = get_settings().evaluation_cell_lease_s
    handed = 0
    for _ in range(count):
        cell_id = await anyio.to_thread.run_sync(repository.dispatch_next, evaluation_id, lease_s)
        if cell_id is None:
            break
        await _hand_out(evaluation_id, cell_id)
        handed += 1
    return handed


async def redispatch_expired(evaluation_id: str) -> int:
    """Hand out again the cells whose worker did not finish them within their lease."""
    repository = EvaluationRepository()
    lease_s = get_settings().evaluation_cell_lease_s
    expired = await anyio.to_thread.run_sync(repository.expired_leases, evaluation_id)
    for cell_id in expired:
        logger.warning("evaluation %s: cell %s outlived its lease", evaluation_id, cell_id)
        await anyio.to_thread.run_sync(repository.renew_lease, cell_id, lease_s)
        await _hand_out(evaluation_id, cell_id)
    return len(expired)


class EvaluationWorker:
    def __init__(self) -> None:
        self.evaluations = EvaluationRepository()

    async def process(self, event: CellEvent) -> CellOutcome:
        """Run one cell and grade it, then hand out the run's next cell.

        Idempotent by cell: a delivery of a cell that is done, cancelled or being run by another
        delivery changes nothing and runs (and bills) nothing.
        """
        claim = uuid.uuid4().hex
        lease_s = get_settings().evaluation_cell_lease_s
        cell = await anyio.to_thread.run_sync(self.evaluations.claim, event.cell_id, claim, lease_s)
        if cell is None:
            return await self._not_claimed(event)
        try:
            return await self._run_claimed(event, cell, claim)
        except BaseException:
            # Give the cell back, so the queue's retry runs it instead of waiting out the lease.
            with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
                await anyio.to_thread.run_sync(self.evaluations.release, cell, claim)
            raise

    async def _not_claimed(self, event: CellEvent) -> CellOutcome:
        state = await anyio.to_thread.run_sync(self.evaluations.cell_state, event.cell_id)
        if state is None:
            return self._outcome(event, "unknown")
        if state == "cancelled":
            return self._outcome(event, "cancelled")
        if state == "done":
            await self._restart_if_stalled(event.evaluation_id)
        return self._outcome(event, "duplicate")

    async def _restart_if_stalled(self, evaluation_id: str) -> None:
        """A redelivered finished cell may be the retry of a delivery that failed to hand out
        its successor: when the run has nothing in flight, refill it."""
        run = await anyio.to_thread.run_sync(self.evaluations.get, evaluation_id)
        if run is None or run.status not in ("queued", "running"):
            return
        if not await anyio.to_thread.run_sync(self.evaluations.in_flight, run.id):
            await dispatch(run.id, run.concurrency)

    async def _run_claimed(self, event: CellEvent, cell: Cell, claim: str) -> CellOutcome:
        run = await anyio.to_thread.run_sync(self.evaluations.get, event.evaluation_id)
        if run is None or cell.evaluation_id != run.id:
            return self._outcome(event, "unknown")
        if run.status == "cancelled":
            await anyio.to_thread.run_sync(self.evaluations.cancel_cell, cell, claim)
            return self._outcome(event, "cancelled")
        if run.status == "queued":
            await anyio.to_thread.run_sync(self.evaluations.mark_running, run.id)
        result = await self._run(run, cell)
        counted = await anyio.to_thread.run_sync(self.evaluations.finish_cell, cell, claim, result)
        if counted is None:
            return self._outcome(event, "duplicate")
        progress = counted.progress
        if progress.done + progress.cancelled >= progress.total:
            await anyio.to_thread.run_sync(self._complete, counted)
        elif counted.status != "cancelled":
            await dispatch(run.id, 1)
            await redispatch_expired(run.id)
        return CellOutcome(
            evaluation_id=run.id, cell_id=event.cell_id, outcome="done", passed=result.passed
        )

    @staticmethod
    def _outcome(event: CellEvent, outcome: Outcome) -> CellOutcome:
        return CellOutcome(
            evaluation_id=event.evaluation_id, cell_id=event.cell_id, outcome=outcome
        )

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
        try:
            execution = await ExecutionService(PromptService(ProjectService())).run_recorded(
                request, source="evaluation"
            )
        except AppError as exc:
            # The run could not even start: a variable the case lacks, a deleted version.
            error = ExecutionError(code=exc.code, message=exc.message)
            return CellRun(status="error", passed=None, assertions=[], error=error)
        figures: dict[str, Any] = {
            "execution_id": execution.id,
            "output": execution.output,
            "latency_ms": execution.latency_ms,
            "cost": execution.cost,
            "usage": execution.usage,
        }
        if execution.status != "ok":
            return CellRun(
                **figures, status="error", passed=None, assertions=[], error=execution.error
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
        )
        return CellRun(
            **figures,
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


async def consume_cell(event: CellEvent) -> CellOutcome:
    """Run a delivered cell: what consuming the evaluation channel means (the worker function,
    the local queue, a publisher's fallback, the SQS drain)."""
    return await EvaluationWorker().process(event)
