"""What a run's cells add up to: per-target summaries, the per-case table, and comparisons."""

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TypeVar

from shared.assertions.models import AssertionResult
from shared.stats import percentile, usage_totals
from shared.workflows.evaluations.models import (
    AssertionTally,
    CaseResult,
    CaseTargetResult,
    Cell,
    CellFigures,
    CellResult,
    Evaluation,
    Target,
    TargetSummary,
)
from shared.workflows.evaluations.outcomes import TargetResult

CellT = TypeVar("CellT", bound=CellFigures)


def verdict(results: list[AssertionResult]) -> bool | None:
    """A cell passes when every assertion passed; None when one could not be evaluated."""
    if any(result.passed is None for result in results):
        return None
    return all(result.passed for result in results)


def cell_result(cell: Cell) -> CellResult:
    return CellResult(
        repetition=cell.repetition,
        state=cell.state,
        execution_id=cell.execution_id,
        status=cell.status,
        output=cell.output,
        passed=cell.passed,
        assertions=cell.assertions,
        latency_ms=cell.latency_ms,
        cost=cell.cost,
        judge_cost=cell.judge_cost,
        total_tokens=cell.usage.total_tokens if cell.usage else None,
        error=cell.error,
    )


def _by_case(cells: Iterable[CellT]) -> dict[int, list[CellT]]:
    by_case: dict[int, list[CellT]] = defaultdict(list)
    for cell in cells:
        by_case[cell.case_index].append(cell)
    return by_case


def _rate(passed: int, decided: int) -> float | None:
    return round(passed / decided, 4) if decided else None


def _tally(cells: Iterable[CellFigures]) -> dict[str, AssertionTally]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for cell in cells:
        for result in cell.assertions:
            slot = {True: 0, False: 1, None: 2}[result.passed]
            counts[result.type][slot] += 1
    return {
        kind: AssertionTally(
            passed=passed,
            failed=failed,
            errors=errors,
            pass_rate=_rate(passed, passed + failed + errors),
        )
        for kind, (passed, failed, errors) in sorted(counts.items())
    }


def _stability(cells: list[CellFigures], repeat: int) -> float | None:
    """The share of cases whose every repetition passed, among cases with all repetitions done."""
    if repeat < 2:
        return None
    by_case = _by_case(cells)
    finished = [runs for runs in by_case.values() if all(r.state == "done" for r in runs)]
    stable = sum(all(run.passed is True for run in runs) for runs in finished)
    return _rate(stable, len(finished))


def summarize(run: Evaluation, cells: Sequence[CellFigures]) -> list[TargetSummary]:
    """Per target: pass rates (overall and per assertion type), stability, latency, tokens, cost."""
    summaries = []
    for target in run.targets:
        own = [cell for cell in cells if cell.target == target.index]
        done = [cell for cell in own if cell.state == "done"]
        passed = sum(cell.passed is True for cell in done)
        failed = sum(cell.passed is False for cell in done)
        latencies = [cell.latency_ms for cell in done if cell.status == "ok" and cell.latency_ms]
        summaries.append(
            TargetSummary(
                target=target.index,
                name=target.name,
                version=target.version,
                cells=len(own),
                done=len(done),
                passed=passed,
                failed=failed,
                errors=len(done) - passed - failed,
                pass_rate=_rate(passed, len(done)),
                assertions=_tally(done),
                stability=_stability(own, run.repeat),
                latency_mean_ms=round(sum(latencies) / len(latencies), 3) if latencies else None,
                latency_p95_ms=percentile(latencies, 0.95),
                **usage_totals(done),
                judge_cost=round(sum(cell.judge_cost or 0 for cell in done), 10),
            )
        )
    return summaries


def all_passed(runs: Sequence[CellFigures | CellResult]) -> bool | None:
    """True when every repetition passed, False when one failed, None otherwise."""
    if any(run.passed is False for run in runs):
        return False
    if runs and all(run.passed is True for run in runs):
        return True
    return None


def case_order(figures: Iterable[CellFigures]) -> list[int]:
    """The rows of the per-case table, as case indexes: cases with a finished repetition that
    did not pass (on any target) first, then in case order."""
    by_case = _by_case(figures)
    return sorted(by_case, key=lambda index: (not _failing(by_case[index]), index))


def _failing(cells: list[CellFigures]) -> bool:
    return any(cell.state == "done" and cell.passed is not True for cell in cells)


def verdicts(figures: Iterable[CellFigures], target: int) -> dict[int, bool | None]:
    """Per case, whether every repetition on the target passed (see `all_passed`)."""
    by_case = _by_case(figure for figure in figures if figure.target == target)
    return {index: all_passed(own) for index, own in sorted(by_case.items())}


def case_rows(run: Evaluation, cells: Iterable[Cell]) -> dict[int, CaseResult]:
    """The rows of the per-case table that `cells` (in dispatch order, as `cells_of` reads
    them) make, by case index: the targets side by side."""
    return {index: _case_row(run, own) for index, own in _by_case(cells).items()}


def _case_row(run: Evaluation, own: list[Cell]) -> CaseResult:
    case = own[0].case()
    columns = []
    for target in run.targets:
        # In repetition order: cells come in dispatch order, repetition by repetition.
        runs = [cell_result(cell) for cell in own if cell.target == target.index]
        columns.append(CaseTargetResult(target=target.index, passed=all_passed(runs), runs=runs))
    return CaseResult(
        case_id=case.id,
        input=case.input,
        variables=case.variables,
        history=case.history,
        expected=case.expected,
        tags=case.tags,
        targets=columns,
    )


def target_results(summaries: list[TargetSummary], targets: list[Target]) -> list[TargetResult]:
    """What a completed run keeps for release gates: each target's version and pass rate."""
    return [
        TargetResult(
            target=target.index,
            version=target.version,
            config_overridden=bool(target.config),
            pass_rate=summary.pass_rate,
        )
        for target, summary in zip(targets, summaries, strict=True)
    ]
