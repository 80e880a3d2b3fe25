"""Evaluation runs: a prompt's versions run on a dataset's cases, graded, summed up and compared."""

from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import Field

from shared.access.models import Actor
from shared.assertions.models import (
    AssertionOutcome,
    AssertionResult,
    Assertions,
    AssertionSpec,
)
from shared.bounds import StoredJson
from shared.datasets.models import Case, Tags
from shared.deepseek.models import ModelConfig, Usage
from shared.executions.inputs import HistoryTurn
from shared.executions.models import ExecutionError
from shared.models import InputModel, Model, Name
from shared.pagination import PageParams
from shared.prompts.models import VersionChoice

EvaluationStatus = Literal["queued", "running", "completed", "cancelled"]
# pending: not handed out yet; dispatched: on the queue; running: a worker has it.
CellState = Literal["pending", "dispatched", "running", "done", "cancelled"]

MAX_TARGETS = 5
MAX_REPEAT = 10
MAX_CELLS = 20_000


class TargetCreate(VersionChoice):
    """What one column of the comparison runs: a version or label, with optional overrides."""

    config: ModelConfig | None = None
    name: Name | None = None


class EvaluationCreate(InputModel):
    prompt_id: str
    dataset_id: str
    targets: Annotated[list[TargetCreate], Field(min_length=1, max_length=MAX_TARGETS)]
    # Checked on every case, next to the case's own assertions.
    assertions: Assertions = Field(default_factory=list)
    # Only cases carrying at least one of these tags; none means every case.
    case_tags: Tags = Field(default_factory=list)
    repeat: int = Field(1, ge=1, le=MAX_REPEAT)
    # Cells in flight at once; capped by EVALUATION_MAX_CONCURRENCY.
    concurrency: int = Field(4, ge=1, le=256)


class Target(Model):
    """A target as run: the version its selector named when the run started."""

    index: int
    name: str
    version: int
    label: str | None
    config: dict[str, Any] | None


class Progress(Model):
    total: int
    done: int
    passed: int
    failed: int
    errors: int
    cancelled: int
    percent: float


class Evaluation(Model):
    id: str
    project_id: str
    prompt_id: str
    dataset_id: str
    targets: list[Target]
    assertions: list[AssertionSpec]
    case_tags: list[str]
    repeat: int
    concurrency: int
    case_count: int
    # Who started the run: its calls are billed to them (None: a run from before it was kept).
    started_by: Actor | None = None
    status: EvaluationStatus
    total: int
    progress: Progress
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class EvaluationDraft(Model):
    """A run as it is stored when it starts, before it has an id, a status or progress."""

    project_id: str
    prompt_id: str
    dataset_id: str
    targets: list[Target]
    assertions: list[AssertionSpec]
    case_tags: list[str]
    repeat: int
    concurrency: int
    case_count: int
    started_by: Actor


class CellDraft(Model):
    """One cell of a run's matrix as it is stored when the run starts."""

    case_index: int
    case_id: str
    # The case as it was when the run started, as JSON text: its JSON Schema assertions have
    # keys (`$ref`, `$defs`) that are not MongoDB field names.
    case_json: str
    target: int
    repetition: int


class CellFigures(Model):
    """What a run's summary reads of a cell: no case and no output, so that summing up a run
    of many cells reads little of each."""

    case_index: int
    target: int
    state: CellState
    status: Literal["ok", "error"] | None = None
    passed: bool | None = None
    assertions: Sequence[AssertionOutcome] = ()
    latency_ms: float | None = None
    usage: Usage | None = None
    cost: float | None = None
    judge_cost: float | None = None


class Cell(CellDraft, CellFigures):
    """A stored cell: its draft, where it is in its life (lease and claim while it runs) and,
    once done, its result."""

    id: str
    evaluation_id: str
    seq: int
    lease_until: datetime | None = None
    # The delivery running the cell; only its holder may finish or give it back.
    claim: str | None = None
    attempts: int = 0
    execution_id: str | None = None
    output: str | None = None
    assertions: list[AssertionResult] = Field(default_factory=list)
    error: ExecutionError | None = None

    def case(self) -> Case:
        """The case as it was when the run started, parsed only for the cells that need it."""
        return Case.model_validate_json(self.case_json)


class CellRun(Model):
    """What running a cell gave, stored on it once done. A run that could not start (a variable
    the case lacks, a deleted version) has no execution and sets only the first four fields."""

    status: Literal["ok", "error"]
    passed: bool | None
    assertions: list[AssertionResult]
    error: ExecutionError | None
    execution_id: str | None = None
    output: str | None = None
    latency_ms: float | None = None
    cost: float | None = None
    usage: Usage | None = None
    judge_cost: float | None = None

    @property
    def counter(self) -> Literal["passed", "failed", "errors"]:
        """The run's counter this cell adds to."""
        if self.passed is None:
            return "errors"
        return "passed" if self.passed else "failed"


class EvaluationListParams(PageParams):
    project_id: str | None = None
    prompt_id: str | None = None
    dataset_id: str | None = None
    status: EvaluationStatus | None = None


class AssertionTally(Model):
    passed: int
    failed: int
    errors: int
    pass_rate: float | None


class TargetSummary(Model):
    """How one target did over its finished cells."""

    target: int
    name: str
    version: int
    cells: int
    done: int
    passed: int
    failed: int
    errors: int
    # Passed cells over finished ones; an error counts as not passed.
    pass_rate: float | None
    assertions: dict[str, AssertionTally]
    # With repeat > 1: the share of cases that passed every repetition.
    stability: float | None
    latency_mean_ms: float | None
    latency_p95_ms: float | None
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    # What the runs cost, and separately what grading them with a judge model cost (USD).
    cost: float
    judge_cost: float


class CellResult(Model):
    """One repetition of one case on one target."""

    repetition: int
    state: CellState
    execution_id: str | None
    status: Literal["ok", "error"] | None
    output: str | None
    passed: bool | None
    assertions: list[AssertionResult]
    latency_ms: float | None
    cost: float | None
    judge_cost: float | None
    total_tokens: int | None
    error: ExecutionError | None


class CaseTargetResult(Model):
    target: int
    # True when every repetition passed, False when one failed, None while unfinished or errored.
    passed: bool | None
    runs: list[CellResult]


class CaseResult(Model):
    case_id: str
    input: str | None
    variables: StoredJson
    history: list[HistoryTurn]
    expected: str | None
    tags: list[str]
    targets: list[CaseTargetResult]


class ResultPageParams(Model):
    limit: int = Field(100, ge=1, le=1000)
    offset: int = Field(0, ge=0, le=MAX_CELLS)


class EvaluationDetail(Evaluation):
    summary: list[TargetSummary]
    # The per-case table, the targets side by side, failing cases first.
    results: list[CaseResult]
    results_total: int


class CompareParams(Model):
    a: str = Field("0", max_length=100, description="A target's index or name")
    b: str = Field("1", max_length=100, description="A target's index or name")


class CaseComparison(Model):
    case_id: str
    input: str | None
    variables: StoredJson
    expected: str | None
    a: CaseTargetResult
    b: CaseTargetResult


class EvaluationComparison(Model):
    evaluation_id: str
    a: Target
    b: Target
    pass_to_fail: list[CaseComparison]
    fail_to_pass: list[CaseComparison]
    both_passed: int
    both_failed: int
    # Cases not finished, or errored, on either side.
    undecided: int


class CellEvent(Model):
    """A cell handed to `evaluation-worker` by the queue; the cell id is its idempotency key."""

    evaluation_id: str = Field(min_length=1, max_length=64)
    cell_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")


# done: run and graded now; duplicate: run (or running) by an earlier delivery;
# cancelled: its run was cancelled; unknown: no such cell (its run was deleted).
Outcome = Literal["done", "duplicate", "cancelled", "unknown"]


class CellOutcome(Model):
    """What the worker did with a delivery: each is final, so the queue acknowledges every one."""

    evaluation_id: str
    cell_id: str
    outcome: Outcome
    passed: bool | None = None
