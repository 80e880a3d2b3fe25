"""Running prompts against DeepSeek and keeping a record of every run."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from itertools import groupby
from typing import Any

import anyio

from shared.access.models import Actor
from shared.db import utc_now
from shared.deepseek.answer import Answer, answer_events, stream_answer
from shared.deepseek.errors import UpstreamError
from shared.deepseek.models import ChatCall
from shared.errors import not_found
from shared.executions.models import (
    Execution,
    ExecutionCreate,
    ExecutionDraft,
    ExecutionError,
    ExecutionListParams,
    ExecutionMeta,
    ExecutionOutcome,
    ExecutionStats,
    RenderedMessage,
    RunFigures,
    StatsParams,
    VersionStats,
)
from shared.executions.planning import PromptsToRun, RunPlanner
from shared.executions.repository import ExecutionRepository
from shared.metering.models import Limits, Payer
from shared.metering.service import Metering
from shared.pagination import Page
from shared.projects.models import ProjectLookup
from shared.stats import percentile, usage_totals

logger = logging.getLogger("better_assistant")
# A run shows as `running` in the records once it has lasted this long; one that ends sooner is
# stored once, when it ends.
RUNNING_RECORD_AFTER_S = 1.0


@dataclass
class Run:
    """A run in progress: its record and the answer coming back."""

    record: Execution
    answer: Answer
    # The record stored as running, once the call has lasted RUNNING_RECORD_AFTER_S
    # (`ExecutionService.store_running`): the timer, then the write.
    pending: asyncio.TimerHandle | None = None
    stored: "asyncio.Future[None] | None" = None


class ExecutionService:
    def __init__(self, prompts: PromptsToRun, projects: ProjectLookup) -> None:
        self.executions = ExecutionRepository()
        self.prompts = prompts
        self.planner = RunPlanner(prompts, projects)
        self.metering = Metering()

    def prepare(
        self,
        data: ExecutionCreate,
        actor: Actor | None,
        source: str = "api",
        is_request: bool = True,
    ) -> Run:
        """Plan the run (`RunPlanner.plan`), admit it against the project's limits
        (`is_request`: it counts towards the caller's rate) and store the record as running."""
        plan = self.planner.plan(data.prompt_id, data)
        call = plan.call
        draft = ExecutionDraft(
            project_id=plan.record.project_id,
            prompt_id=plan.record.id,
            prompt_version=plan.version.version,
            label=plan.label,
            model=call.model,
            params=call.params,
            messages=[RenderedMessage.model_validate(message) for message in call.messages],
            variables=data.variables,
            input=data.input,
            source=source,
            actor=actor,
        )
        return self.open_run(draft, plan.limits, call, is_request=is_request)

    def open_run(
        self, draft: ExecutionDraft, limits: Limits, call: ChatCall, *, is_request: bool = True
    ) -> Run:
        """Admit a planned call against its project's limits (`is_request`: it counts towards
        the caller's rate) and give it its record, stored by `store_running`; the answer's
        usage goes to the ledger, billed to the draft's project and actor."""
        payer = Payer(draft.project_id, draft.actor)
        self.metering.admit(payer, limits, is_request=is_request)
        record = self.executions.new_record(draft)
        return Run(record, Answer(call, on_usage=self.metering.recorder(payer)))

    def store_running(self, run: Run) -> None:
        """Store the run's record as running once its call has lasted RUNNING_RECORD_AFTER_S,
        in the background: no call waits for that write, and the many that end sooner make one
        write, `record_outcome`'s, which stores the whole record."""

        def insert() -> None:
            run.pending = None
            run.stored = asyncio.ensure_future(
                anyio.to_thread.run_sync(self.executions.insert, run.record)
            )

        run.pending = asyncio.get_running_loop().call_later(RUNNING_RECORD_AFTER_S, insert)

    async def start(
        self,
        data: ExecutionCreate,
        actor: Actor | None,
        source: str = "api",
        is_request: bool = True,
    ) -> Run:
        """`prepare` off the event loop, its record stored while the call goes out."""
        run = await anyio.to_thread.run_sync(self.prepare, data, actor, source, is_request)
        self.store_running(run)
        return run

    async def record_outcome(self, run: Run) -> None:
        """Complete the stored record with what the answer brought back."""
        answer = run.answer
        done = answer.done()
        outcome = ExecutionOutcome(
            status=answer.status,
            error=ExecutionError(**answer.error.model_dump()) if answer.error else None,
            output=answer.text,
            reasoning=answer.reasoning_text,
            finish_reason=done.finish_reason,
            usage=done.usage,
            cost=done.cost,
            latency_ms=done.latency_ms,
            ttft_ms=done.ttft_ms,
            tool_calls=answer.tool_calls or None,
        )
        if run.pending is not None:
            run.pending.cancel()
            run.pending = None
        if run.stored is not None:
            try:
                await run.stored
            except Exception:
                logger.warning("the running record of execution %s was not stored", run.record.id)
        finished = run.record.model_copy(update={**dict(outcome), "finished_at": utc_now()})
        await anyio.to_thread.run_sync(self.executions.finish, finished)
        run.record = finished

    async def run_to_completion(self, data: ExecutionCreate, actor: Actor) -> Execution:
        """Run without streaming to the caller; an upstream failure is raised after recording."""
        run = await self.start(data, actor)
        try:
            await self._complete(run)
        except UpstreamError as exc:
            exc.details = {"execution_id": run.record.id}
            raise
        return run.record

    async def run_recorded(
        self, data: ExecutionCreate, actor: Actor | None, source: str
    ) -> Execution:
        """Run to the end and return the record, whose status and error say how it ended; only
        a run that cannot start (a missing variable, version or prompt, a spent budget) raises.
        Billed to `actor`, it does not count towards their rate: it is no request of theirs."""
        run = await self.start(data, actor, source, is_request=False)
        with contextlib.suppress(UpstreamError):
            await self._complete(run)
        return run.record

    async def _complete(self, run: Run) -> None:
        """Receive the whole answer, then record it however it ended."""
        try:
            async for _ in stream_answer(run.answer):
                pass
        finally:
            with anyio.CancelScope(shield=True):
                await self.record_outcome(run)

    def stream_events(self, run: Run) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The run as stream events: meta, reasoning/content deltas, then done or error."""
        meta = ExecutionMeta(
            execution_id=run.record.id,
            prompt_id=run.record.prompt_id,
            prompt_version=run.record.prompt_version,
            model=run.answer.call.model,
        )
        return answer_events(run.answer, meta.model_dump(), lambda _: self.record_outcome(run))

    def get(self, execution_id: str) -> Execution:
        execution = self.executions.get(execution_id)
        if execution is None:
            raise not_found("execution", execution_id)
        return execution

    def search(self, params: ExecutionListParams, within: list[str] | None) -> Page[Execution]:
        """Records of the `within` projects (None: every project) matching the filters."""
        return Page.of(self.executions.search(params, within), params)

    def stats(self, params: StatsParams) -> ExecutionStats:
        """Per-version count, error rate, latency percentiles, tokens and cost."""
        self.prompts.get_record(params.prompt_id)
        outcomes = self.executions.outcomes(params.prompt_id, params.since, params.until)
        versions = [
            _version_stats(number, list(runs))
            for number, runs in groupby(outcomes, key=lambda run: run.prompt_version)
        ]
        return ExecutionStats(prompt_id=params.prompt_id, versions=versions)


def _version_stats(number: int, runs: list[RunFigures]) -> VersionStats:
    statuses = [run.status for run in runs]
    latencies = [run.latency_ms for run in runs if run.status == "ok" and run.latency_ms]
    ttfts = [run.ttft_ms for run in runs if run.status == "ok" and run.ttft_ms]
    return VersionStats(
        version=number,
        count=len(runs),
        ok=statuses.count("ok"),
        errors=statuses.count("error"),
        cancelled=statuses.count("cancelled"),
        error_rate=round(statuses.count("error") / len(runs), 4),
        latency_p50_ms=percentile(latencies, 0.5),
        latency_p95_ms=percentile(latencies, 0.95),
        ttft_p50_ms=percentile(ttfts, 0.5),
        ttft_p95_ms=percentile(ttfts, 0.95),
        **usage_totals(runs),
    )
