"""The deterministic assertions: pure functions of the answer, its latency and its cost.

Nothing here runs what a case supplies: values are compared as text, patterns run on the `regex`
engine with a time limit (Python's `re` has none, so a pattern like `(a|aa)+$` could hold a worker
for minutes), and JSON Schemas are interpreted by `jsonschema` without fetching remote `$ref`s
and with their own `pattern` keyword on the same time-limited engine.
"""

import json
from collections.abc import Callable, Iterator, Sequence
from functools import cache, lru_cache
from typing import Any

import jsonschema
import regex
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

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

# Longest one pattern may search one answer; past it the assertion is an error, not a verdict.
REGEX_TIMEOUT_S = 0.25
_FLAGS = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL}
_QUOTE_CHARS = 80


class InvalidPattern(ValueError):
    """A regular expression that does not compile."""


class InvalidSchema(ValueError):
    """A JSON Schema its own meta-schema refuses."""


class NotEvaluable(Exception):
    """An assertion that cannot give a verdict on this answer (its result is an error)."""

    def __init__(self, code: str, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


@lru_cache(maxsize=512)
def compiled_pattern(pattern: str, flags: str) -> regex.Pattern[str]:
    try:
        mask = 0
        for flag in flags:
            mask |= _FLAGS[flag]
        return regex.compile(pattern, mask)
    except regex.error as exc:
        raise InvalidPattern(str(exc)) from None


def _search(pattern: regex.Pattern[str], text: str) -> bool:
    try:
        return pattern.search(text, timeout=REGEX_TIMEOUT_S) is not None
    except TimeoutError:
        raise NotEvaluable("regex_timeout", f"the pattern ran over {REGEX_TIMEOUT_S} s") from None


def _schema_pattern(
    validator: Validator, pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator[ValidationError]:
    """JSON Schema's `pattern` keyword on the time-limited engine."""
    if validator.is_type(instance, "string"):
        try:
            found = _search(compiled_pattern(pattern, ""), instance)
        except InvalidPattern:
            found = False
        if not found:
            yield ValidationError(f"the string does not match {_quote(pattern)}")


@cache
def _time_limited(validator_class: type[Validator]) -> type[Validator]:
    return jsonschema.validators.extend(validator_class, {"pattern": _schema_pattern})


@lru_cache(maxsize=256)
def schema_validator(schema_text: str) -> Validator:
    """A validator for a schema given as JSON text (cached: cases often share one schema)."""
    schema = json.loads(schema_text)
    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    try:
        validator_class.check_schema(schema)
    except SchemaError as exc:
        raise InvalidSchema(exc.message) from None
    return _time_limited(validator_class)(schema)


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


def _quote(text: str) -> str:
    return repr(text if len(text) <= _QUOTE_CHARS else f"{text[:_QUOTE_CHARS]}...")


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
    return passed, f"the answer {'equals' if passed else 'differs from'} {_quote(spec.value)}"


def _contains(spec: ContainsAssertion, output: str) -> tuple[bool, str]:
    found = _folded(spec.value, spec.case_insensitive) in _folded(output, spec.case_insensitive)
    return found, f"the answer {'contains' if found else 'lacks'} {_quote(spec.value)}"


def _not_contains(spec: NotContainsAssertion, output: str) -> tuple[bool, str]:
    found = _folded(spec.value, spec.case_insensitive) in _folded(output, spec.case_insensitive)
    return not found, f"the answer {'contains' if found else 'lacks'} {_quote(spec.value)}"


def _starts_with(spec: StartsWithAssertion, output: str) -> tuple[bool, str]:
    passed = _folded(output.lstrip(), spec.case_insensitive).startswith(
        _folded(spec.value, spec.case_insensitive)
    )
    return (
        passed,
        f"the answer {'starts' if passed else 'does not start'} with {_quote(spec.value)}",
    )


def _regex(spec: RegexAssertion, output: str) -> tuple[bool, str]:
    found = _search(compiled_pattern(spec.pattern, spec.flags), output)
    return found, f"{_quote(spec.pattern)} {'matches' if found else 'does not match'} the answer"


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parsed(output: str) -> tuple[bool, Any]:
    """The answer as strict JSON (no NaN or Infinity), and whether it was JSON at all."""
    try:
        return True, json.loads(output, parse_constant=_reject_constant)
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
        error = jsonschema.exceptions.best_match(validator.iter_errors(document))
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
