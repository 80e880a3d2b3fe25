"""The deterministic assertions: pure functions of the answer, its latency and its cost.

Nothing here runs what a case supplies: values are compared as text, and patterns and JSON
Schemas run on the time-limited engines of `shared.assertions.matching`.
"""

import json
from collections.abc import Callable, Sequence
from typing import Any

from jsonschema.exceptions import best_match
from referencing.exceptions import Unresolvable

from shared.assertions.matching import (
    NotEvaluable,
    compiled_pattern,
    quote,
    schema_validator,
    search,
)
from shared.assertions.models import (
    AssertionResult,
    AssertionSpec,
    ContainsAssertion,
    CostAssertion,
    EqualsAssertion,
    IsJsonAssertion,
    JsonSchemaAssertion,
    JudgeAssertion,
    LatencyAssertion,
    LengthAssertion,
    NotContainsAssertion,
    RegexAssertion,
    StartsWithAssertion,
)
from shared.bounds import JsonTooDeep, parse_json


def with_expected(assertions: Sequence[AssertionSpec], expected: str | None) -> list[AssertionSpec]:
    """A case's assertions with its `expected` answer: an `equals` assertion on `expected` comes
    first, unless the case already has an `equals` assertion of its own."""
    checks = list(assertions)
    if expected is not None and not any(isinstance(spec, EqualsAssertion) for spec in checks):
        checks.insert(0, EqualsAssertion(type="equals", value=expected))
    return checks


def evaluate(
    assertions: Sequence[AssertionSpec],
    output: str,
    latency_ms: float | None,
    cost: float | None,
) -> list[AssertionResult]:
    """Check every deterministic assertion, in order; `judge` assertions are left to `judge`."""
    return [
        check(spec, output, latency_ms, cost)
        for spec in assertions
        if not isinstance(spec, JudgeAssertion)
    ]


def check(
    spec: AssertionSpec, output: str, latency_ms: float | None, cost: float | None
) -> AssertionResult:
    """One deterministic assertion against an answer."""
    if isinstance(spec, LatencyAssertion):
        return _bound("latency", latency_ms, spec.max_ms, "ms")
    if isinstance(spec, CostAssertion):
        return _bound("cost", cost, spec.max_usd, "USD")
    checker = _CHECKS.get(type(spec))
    if checker is None:
        raise TypeError(f"{spec.type} is not a deterministic assertion")
    try:
        passed, reason = checker(spec, output)
    except NotEvaluable as exc:
        return errored(spec.type, exc.code, exc.reason)
    return AssertionResult(type=spec.type, passed=passed, reason=reason)


def errored(kind: str, code: str, reason: str) -> AssertionResult:
    """The result of an assertion that could not be evaluated: neither passed nor failed."""
    return AssertionResult(type=kind, passed=None, reason=reason, error=code)


def _folded(text: str, case_insensitive: bool) -> str:
    return text.casefold() if case_insensitive else text


def _bound(kind: str, value: float | None, limit: float, unit: str) -> AssertionResult:
    if value is None:
        return errored(kind, f"{kind}_unknown", f"the run has no {kind} to compare")
    passed = value <= limit
    relation = "within" if passed else "over"
    return AssertionResult(
        type=kind, passed=passed, reason=f"{value:g} {unit} is {relation} {limit:g} {unit}"
    )


def _equals(spec: EqualsAssertion, output: str) -> tuple[bool, str]:
    passed = _folded(output.strip(), spec.case_insensitive) == _folded(
        spec.value.strip(), spec.case_insensitive
    )
    return passed, f"the answer {'equals' if passed else 'differs from'} {quote(spec.value)}"


def _contains(spec: ContainsAssertion, output: str) -> tuple[bool, str]:
    found = _folded(spec.value, spec.case_insensitive) in _folded(output, spec.case_insensitive)
    return found, f"the answer {'contains' if found else 'lacks'} {quote(spec.value)}"


def _not_contains(spec: NotContainsAssertion, output: str) -> tuple[bool, str]:
    found = _folded(spec.value, spec.case_insensitive) in _folded(output, spec.case_insensitive)
    return not found, f"the answer {'contains' if found else 'lacks'} {quote(spec.value)}"


def _starts_with(spec: StartsWithAssertion, output: str) -> tuple[bool, str]:
    passed = _folded(output.lstrip(), spec.case_insensitive).startswith(
        _folded(spec.value, spec.case_insensitive)
    )
    return (
        passed,
        f"the answer {'starts' if passed else 'does not start'} with {quote(spec.value)}",
    )


def _regex(spec: RegexAssertion, output: str) -> tuple[bool, str]:
    found = search(compiled_pattern(spec.pattern, spec.flags), output)
    return found, f"{quote(spec.pattern)} {'matches' if found else 'does not match'} the answer"


def _parsed(output: str) -> tuple[bool, Any]:
    """The answer as strict JSON (no NaN or Infinity), and whether it was JSON at all; an answer
    nested too deep to parse safely gets no verdict."""
    try:
        return True, parse_json(output)
    except JsonTooDeep as exc:
        raise NotEvaluable("answer_too_deep", f"the answer is {exc}") from None
    except ValueError:
        return False, None


def _is_json(spec: IsJsonAssertion, output: str) -> tuple[bool, str]:
    parsed, _ = _parsed(output)
    return parsed, "the answer is JSON" if parsed else "the answer is not JSON"


def _json_schema(spec: JsonSchemaAssertion, output: str) -> tuple[bool, str]:
    parsed, document = _parsed(output)
    if not parsed:
        return False, "the answer is not JSON"
    validator = schema_validator(json.dumps(spec.json_schema, sort_keys=True))
    try:
        error = best_match(validator.iter_errors(document))
    except Unresolvable as exc:
        reason = f"the schema's $ref cannot be resolved: {exc}"
        raise NotEvaluable("schema_unresolvable", reason) from None
    if error is None:
        return True, "the answer is valid against the schema"
    where = "/".join(str(part) for part in error.absolute_path) or "(root)"
    return False, f"at {where}: {error.message[:200]}"


def _length(spec: LengthAssertion, output: str) -> tuple[bool, str]:
    size = len(output)
    passed = (spec.min is None or size >= spec.min) and (spec.max is None or size <= spec.max)
    bounds = f"[{'' if spec.min is None else spec.min}, {'' if spec.max is None else spec.max}]"
    return passed, f"{size} characters is {'within' if passed else 'outside'} {bounds}"


_CHECKS: dict[type, Callable[[Any, str], tuple[bool, str]]] = {
    EqualsAssertion: _equals,
    ContainsAssertion: _contains,
    NotContainsAssertion: _not_contains,
    StartsWithAssertion: _starts_with,
    RegexAssertion: _regex,
    IsJsonAssertion: _is_json,
    JsonSchemaAssertion: _json_schema,
    LengthAssertion: _length,
}
