"""Assertions a test case makes about a prompt's answer, and what checking one gives back."""

import json
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from shared.assertions.matching import (
    InvalidPattern,
    InvalidSchema,
    compiled_pattern,
    schema_validator,
)
from shared.bounds import check_json_value
from shared.deepseek.models import ModelName
from shared.models import InputModel, Model

Text = Annotated[str, StringConstraints(max_length=100_000)]
NonEmptyText = Annotated[str, StringConstraints(min_length=1, max_length=100_000)]
# Short enough to read; catastrophic backtracking is bounded by the engine's timeout instead.
Pattern = Annotated[str, StringConstraints(min_length=1, max_length=500)]
RegexFlags = Annotated[str, StringConstraints(pattern=r"^[ims]{0,3}$")]
Rubric = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=10_000)]


class TextAssertion(InputModel):
    """Compares the answer with a piece of text, optionally ignoring case."""

    value: NonEmptyText
    case_insensitive: bool = False


class EqualsAssertion(TextAssertion):
    """The whole answer is `value` (surrounding whitespace ignored)."""

    type: Literal["equals"]
    value: Text


class ContainsAssertion(TextAssertion):
    type: Literal["contains"]


class NotContainsAssertion(TextAssertion):
    type: Literal["not_contains"]


class StartsWithAssertion(TextAssertion):
    """The answer, leading whitespace ignored, starts with `value`."""

    type: Literal["starts_with"]


class RegexAssertion(InputModel):
    """`pattern` matches somewhere in the answer; flags `i` (ignore case), `m` (multiline) and
    `s` (dot matches newlines)."""

    type: Literal["regex"]
    pattern: Pattern
    flags: RegexFlags = ""

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, pattern: str) -> str:
        try:
            compiled_pattern(pattern, "")
        except InvalidPattern as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern

    @field_validator("flags")
    @classmethod
    def _each_flag_once(cls, flags: str) -> str:
        if len(set(flags)) != len(flags):
            raise ValueError("give each flag once")
        return flags


class IsJsonAssertion(InputModel):
    type: Literal["is_json"]


class JsonSchemaAssertion(InputModel):
    """The answer parses as JSON and is valid against `schema` (its own draft, else 2020-12)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    type: Literal["json_schema"]
    json_schema: dict[str, Any] | bool = Field(alias="schema")

    @field_validator("json_schema")
    @classmethod
    def _valid_schema(cls, schema: dict[str, Any] | bool) -> dict[str, Any] | bool:
        try:
            schema_validator(json.dumps(schema, sort_keys=True))
        except InvalidSchema as exc:
            raise ValueError(f"not a valid JSON Schema: {exc}") from None
        return schema


class LengthAssertion(InputModel):
    """The answer has between `min` and `max` characters (inclusive); either may be left out."""

    type: Literal["length"]
    min: int | None = Field(None, ge=0, le=10_000_000)
    max: int | None = Field(None, ge=0, le=10_000_000)

    @model_validator(mode="after")
    def _bounds(self) -> "LengthAssertion":
        if self.min is None and self.max is None:
            raise ValueError("give min, max or both")
        if self.min is not None and self.max is not None and self.max < self.min:
            raise ValueError("max is below min")
        return self


class LatencyAssertion(InputModel):
    type: Literal["latency"]
    max_ms: float = Field(gt=0, le=86_400_000, allow_inf_nan=False)


class CostAssertion(InputModel):
    type: Literal["cost"]
    max_usd: float = Field(ge=0, le=1_000_000, allow_inf_nan=False)


class JudgeAssertion(InputModel):
    """A model grades the answer against `rubric` (default model: DEEPSEEK_MODEL)."""

    type: Literal["judge"]
    rubric: Rubric
    model: ModelName | None = None


AssertionSpec = Annotated[
    EqualsAssertion
    | ContainsAssertion
    | NotContainsAssertion
    | StartsWithAssertion
    | RegexAssertion
    | IsJsonAssertion
    | JsonSchemaAssertion
    | LengthAssertion
    | LatencyAssertion
    | CostAssertion
    | JudgeAssertion,
    Field(discriminator="type"),
]


def _bounded_schemas(specs: list[AssertionSpec]) -> list[AssertionSpec]:
    # A JSON Schema is free-form JSON, bounded as variables are, though its keys may be `$ref`
    # or `$defs`: it is stored as JSON text. Checked on what requests bring, not on stored runs
    # and cases, which were checked when they were written.
    for spec in specs:
        if isinstance(spec, JsonSchemaAssertion) and isinstance(spec.json_schema, dict):
            check_json_value(spec.json_schema, field_names=False)
    return specs


# The assertions a request brings.
Assertions = Annotated[list[AssertionSpec], Field(max_length=50), AfterValidator(_bounded_schemas)]


class AssertionOutcome(Model):
    """Which assertion was checked and whether it passed: all a tally of results reads."""

    type: str
    passed: bool | None


class AssertionResult(AssertionOutcome):
    """One assertion checked: `passed` is None, with an `error` code, when it could not be."""

    reason: str
    error: str | None = None
    # What grading cost in USD (a judge's model call); None when it called no model.
    cost: float | None = None
