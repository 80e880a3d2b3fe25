"""Assertions: every deterministic check both ways, the `expected` rule, and the judge model
graded by the fake DeepSeek (verdicts, unparseable verdicts, upstream failures)."""

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import TypeAdapter, ValidationError

from devtools.fake_deepseek import FakeDeepSeek
from shared.assertions.engine import evaluate, with_expected
from shared.assertions.judge import assess, judge
from shared.assertions.models import AssertionResult, AssertionSpec, JudgeAssertion
from shared.clients import close_clients

SPECS = TypeAdapter(list[AssertionSpec])


def spec(**fields: Any) -> Any:
    return SPECS.validate_python([fields])[0]


def fake(**scenario: object) -> str:
    """A directive telling the fake DeepSeek how to answer this request."""
    return "#fake" + json.dumps(scenario)


def verdict(**fields: object) -> str:
    """A rubric whose directive makes the fake judge reply with exactly `fields` as JSON."""
    return "Is the answer polite? " + fake(reply=json.dumps(fields))


def one(
    assertion: Any, output: str, latency_ms: float | None = None, cost: float | None = None
) -> AssertionResult:
    [result] = evaluate([assertion], output, latency_ms, cost)
    return result


@pytest.mark.parametrize(
    ("fields", "output", "passed"),
    [
        ({"type": "equals", "value": "Refunds take 5 days."}, " Refunds take 5 days.\n", True),
        ({"type": "equals", "value": "Refunds take 5 days."}, "refunds take 5 days.", False),
        ({"type": "equals", "value": "REFUNDS", "case_insensitive": True}, "refunds", True),
        ({"type": "equals", "value": ""}, "  ", True),
        ({"type": "contains", "value": "5 days"}, "It takes 5 days.", True),
        ({"type": "contains", "value": "5 Days"}, "It takes 5 days.", False),
        ({"type": "contains", "value": "5 Days", "case_insensitive": True}, "5 days", True),
        ({"type": "not_contains", "value": "sorry"}, "Happy to help.", True),
        ({"type": "not_contains", "value": "sorry"}, "I am sorry.", False),
        ({"type": "not_contains", "value": "SORRY", "case_insensitive": True}, "sorry", False),
        ({"type": "starts_with", "value": "Hello"}, "\n Hello there", True),
        ({"type": "starts_with", "value": "Hello"}, "Well, Hello", False),
        ({"type": "starts_with", "value": "HELLO", "case_insensitive": True}, "hello", True),
        ({"type": "regex", "pattern": r"\d+ days"}, "in 5 days", True),
        ({"type": "regex", "pattern": r"^\d+ days$"}, "in 5 days", False),
        ({"type": "regex", "pattern": "refund", "flags": "i"}, "REFUND", True),
        ({"type": "regex", "pattern": "refund"}, "REFUND", False),
        ({"type": "regex", "pattern": "^two$", "flags": "m"}, "one\ntwo\nthree", True),
        ({"type": "regex", "pattern": "^two$"}, "one\ntwo\nthree", False),
        ({"type": "regex", "pattern": "one.two", "flags": "s"}, "one\ntwo", True),
        ({"type": "regex", "pattern": "one.two"}, "one\ntwo", False),
        ({"type": "is_json"}, ' {"a": [1, 2]} ', True),
        ({"type": "is_json"}, "```json\n{}\n```", False),
        ({"type": "is_json"}, "NaN", False),
        ({"type": "length", "min": 2, "max": 5}, "abcde", True),
        ({"type": "length", "min": 2, "max": 5}, "abcdef", False),
        ({"type": "length", "min": 2}, "a", False),
        ({"type": "length", "max": 3}, "été", True),
    ],
)
def test_text_assertions(fields: dict, output: str, passed: bool) -> None:
    result = one(spec(**fields), output)
    assert (result.type, result.passed, result.error) == (fields["type"], passed, None)
    assert result.reason


SCHEMA = {
    "type": "object",
    "properties": {"days": {"type": "integer"}, "code": {"type": "string", "pattern": "^R-"}},
    "required": ["days"],
}


@pytest.mark.parametrize(
    ("output", "passed", "reason"),
    [
        ('{"days": 5, "code": "R-1"}', True, "valid"),
        ('{"days": "five"}', False, "at days"),
        ('{"code": "R-1"}', False, "'days' is a required property"),
        ('{"days": 5, "code": "X-1"}', False, "at code"),
        ("days: 5", False, "not JSON"),
    ],
)
def test_json_schema_assertion(output: str, passed: bool, reason: str) -> None:
    result = one(spec(type="json_schema", schema=SCHEMA), output)
    assert result.passed is passed
    assert reason in result.reason


def test_a_schema_follows_its_own_draft() -> None:
    draft7 = {"$schema": "http://json-schema.org/draft-07/schema#", "items": [{"type": "string"}]}
    assert one(spec(type="json_schema", schema=draft7), "[1]").passed is False
    assert one(spec(type="json_schema", schema=draft7), '["a", 1]').passed is True


@pytest.mark.parametrize(
    ("fields", "latency_ms", "cost", "passed", "error"),
    [
        ({"type": "latency", "max_ms": 500}, 499.5, None, True, None),
        ({"type": "latency", "max_ms": 500}, 500.5, None, False, None),
        ({"type": "latency", "max_ms": 500}, None, 0.1, None, "latency_unknown"),
        ({"type": "cost", "max_usd": 0.01}, 10, 0.01, True, None),
        ({"type": "cost", "max_usd": 0.01}, 10, 0.02, False, None),
        ({"type": "cost", "max_usd": 0.01}, 10, None, None, "cost_unknown"),
    ],
)
def test_latency_and_cost(
    fields: dict, latency_ms: float | None, cost: float | None, passed: bool, error: str | None
) -> None:
    result = one(spec(**fields), "any", latency_ms, cost)
    assert (result.passed, result.error) == (passed, error)


def test_what_cannot_be_evaluated_is_an_error_not_a_verdict() -> None:
    backtracking = one(spec(type="regex", pattern="(a|aa)+$"), "a" * 30_000 + "!")
    assert (backtracking.passed, backtracking.error) == (None, "regex_timeout")
    schema_pattern = spec(type="json_schema", schema={"type": "string", "pattern": "^(a|aa)+$"})
    assert one(schema_pattern, json.dumps("a" * 30_000 + "!")).error == "regex_timeout"
    remote = one(spec(type="json_schema", schema={"$ref": "https://example.com/s.json"}), "{}")
    assert (remote.passed, remote.error) == (None, "schema_unresolvable")


@pytest.mark.parametrize(
    "fields",
    [
        {"type": "json_schema", "schema": {"type": "nope"}},
        {"type": "json_schema", "schema": {"minLength": -1}},
        {"type": "json_schema", "schema": "not a schema"},
        {"type": "regex", "pattern": "(unclosed"},
        {"type": "regex", "pattern": "a" * 501},
        {"type": "regex", "pattern": "a", "flags": "x"},
        {"type": "regex", "pattern": "a", "flags": "ii"},
        {"type": "contains", "value": ""},
        {"type": "length"},
        {"type": "length", "min": 5, "max": 2},
        {"type": "latency", "max_ms": 0},
        {"type": "cost", "max_usd": -1},
        {"type": "judge", "rubric": "  "},
        {"type": "equals", "value": "x", "extra": 1},
        {"type": "eval", "code": "1 + 1"},
    ],
)
def test_invalid_specs_are_refused(fields: dict) -> None:
    with pytest.raises(ValidationError):
        spec(**fields)


def test_expected_adds_an_equals_unless_the_case_has_one() -> None:
    contains = spec(type="contains", value="5")
    own_equals = spec(type="equals", value="Five days.")
    assert with_expected([], None) == []
    implied = with_expected([contains], "5 days")
    assert [(s.type, getattr(s, "value", None)) for s in implied] == [
        ("equals", "5 days"),
        ("contains", "5"),
    ]
    assert with_expected([contains, own_equals], "5 days") == [contains, own_equals]
    results = evaluate(with_expected([contains], "5 days"), "5 days", None, None)
    assert [r.passed for r in results] == [True, True]
    results = evaluate(with_expected([contains], "5 days"), "in 5 days", None, None)
    assert [r.passed for r in results] == [False, True]


def test_evaluate_keeps_order_and_leaves_judges_out() -> None:
    specs = SPECS.validate_python(
        [
            {"type": "is_json"},
            {"type": "judge", "rubric": "polite?"},
            {"type": "length", "max": 1},
        ]
    )
    results = evaluate(specs, "{}", None, None)
    assert [(r.type, r.passed) for r in results] == [("is_json", True), ("length", False)]


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for the module: the DeepSeek client and its connections live per loop."""
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.run_until_complete(close_clients())
    event_loop.close()


def test_the_judge_passes_and_fails_as_the_model_says(
    loop: asyncio.AbstractEventLoop, fake_deepseek: FakeDeepSeek
) -> None:
    passing = JudgeAssertion(type="judge", rubric=verdict(**{"pass": True, "reason": "polite"}))
    result = loop.run_until_complete(
        judge(passing, "Happy to help!", input="Where is my refund?", expected="On its way.")
    )
    assert (result.type, result.passed, result.reason, result.error) == (
        "judge",
        True,
        "polite",
        None,
    )
    assert result.cost is not None and result.cost > 0
    sent = fake_deepseek.chat_requests()[-1].body
    assert sent["model"] == "deepseek-v4-flash"
    assert [m["role"] for m in sent["messages"]] == ["system", "user"]
    graded = sent["messages"][1]["content"]
    assert all(text in graded for text in ("Happy to help!", "Where is my refund?", "On its way."))

    failing = JudgeAssertion(
        type="judge", rubric=verdict(**{"pass": False, "reason": "curt"}), model="deepseek-chat"
    )
    result = loop.run_until_complete(judge(failing, "No."))
    assert (result.passed, result.reason, result.error) == (False, "curt", None)
    assert fake_deepseek.chat_requests()[-1].body["model"] == "deepseek-chat"


@pytest.mark.parametrize(
    "reply",
    [
        "yes",
        '{"pass": true}',
        '{"pass": "true", "reason": "ok"}',
        '{"pass": 1, "reason": "ok"}',
        '{"pass": true, "reason": 5}',
        '{"pass": true, "reason": "ok", "score": 9}',
        '["pass", true]',
        '```json\n{"pass": true, "reason": "ok"}\n```',
        'Verdict: {"pass": true, "reason": "ok"}',
        "",
    ],
)
def test_anything_but_a_strict_verdict_is_an_error(
    loop: asyncio.AbstractEventLoop, reply: str
) -> None:
    spec_ = JudgeAssertion(type="judge", rubric="Polite? " + fake(reply=reply))
    result = loop.run_until_complete(judge(spec_, "Hello"))
    assert (result.passed, result.error) == (None, "unparseable_verdict")


@pytest.mark.parametrize(
    ("scenario", "code"),
    [
        ({"status": 503}, "upstream_unavailable"),
        ({"status": 402}, "upstream_insufficient_balance"),
        ({"status": 400}, "upstream_bad_request"),
    ],
)
def test_an_upstream_failure_is_an_error_with_its_code(
    loop: asyncio.AbstractEventLoop, scenario: dict, code: str
) -> None:
    spec_ = JudgeAssertion(type="judge", rubric="Polite? " + fake(**scenario))
    result = loop.run_until_complete(judge(spec_, "Hello"))
    assert (result.passed, result.error) == (None, code)


def test_assess_runs_every_assertion_in_order(loop: asyncio.AbstractEventLoop) -> None:
    specs = SPECS.validate_python(
        [
            {"type": "contains", "value": "help"},
            {"type": "judge", "rubric": verdict(**{"pass": True, "reason": "kind"})},
            {"type": "latency", "max_ms": 100},
        ]
    )
    results = loop.run_until_complete(assess(specs, "Happy to help", 250.0, None))
    assert [(r.type, r.passed) for r in results] == [
        ("contains", True),
        ("judge", True),
        ("latency", False),
    ]
