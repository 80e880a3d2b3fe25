"""Regular expressions and JSON Schemas, compiled once and run on time-limited engines.

Python's `re` has no time limit, so a pattern like `(a|aa)+$` could hold a worker for minutes:
patterns run on the `regex` engine with a timeout, and JSON Schemas are interpreted by
`jsonschema` without fetching remote `$ref`s and with their own `pattern` keyword on the same
engine. Assertion models check their patterns and schemas here when a request is validated.
"""

import json
from collections.abc import Iterator
from functools import cache, lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import regex
    from jsonschema.exceptions import ValidationError
    from jsonschema.protocols import Validator

# Longest one pattern may search one answer; past it the assertion is an error, not a verdict.
REGEX_TIMEOUT_S = 0.25
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


def quote(text: str) -> str:
    """A piece of a case's text as a reason shows it: quoted, and cut when long."""
    return repr(text if len(text) <= _QUOTE_CHARS else f"{text[:_QUOTE_CHARS]}...")


@lru_cache(maxsize=512)
def compiled_pattern(pattern: str, flags: str) -> "regex.Pattern[str]":
    """A pattern with flags `i`, `m` and `s`; InvalidPattern when it does not compile."""
    # Imported on first use, as in `schema_validator`: every function that validates requests
    # with assertion models would otherwise pay for the matching libraries at cold start.
    import regex

    masks = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL}
    try:
        mask = 0
        for flag in flags:
            mask |= masks[flag]
        return regex.compile(pattern, mask)
    except regex.error as exc:
        raise InvalidPattern(str(exc)) from None


def search(pattern: "regex.Pattern[str]", text: str) -> bool:
    """Whether the pattern matches somewhere in the text; NotEvaluable past the time limit."""
    try:
        return pattern.search(text, timeout=REGEX_TIMEOUT_S) is not None
    except TimeoutError:
        raise NotEvaluable("regex_timeout", f"the pattern ran over {REGEX_TIMEOUT_S} s") from None


def _schema_pattern(
    validator: "Validator", pattern: str, instance: Any, schema: dict[str, Any]
) -> Iterator["ValidationError"]:
    """JSON Schema's `pattern` keyword on the time-limited engine."""
    from jsonschema.exceptions import ValidationError

    if validator.is_type(instance, "string"):
        try:
            found = search(compiled_pattern(pattern, ""), instance)
        except InvalidPattern:
            found = False
        if not found:
            yield ValidationError(f"the string does not match {quote(pattern)}")


@cache
def _time_limited(validator_class: type["Validator"]) -> type["Validator"]:
    import jsonschema

    return jsonschema.validators.extend(validator_class, {"pattern": _schema_pattern})


@lru_cache(maxsize=256)
def schema_validator(schema_text: str) -> "Validator":
    """A validator for a schema given as JSON text (cached: cases often share one schema);
    InvalidSchema when its meta-schema refuses it."""
    import jsonschema

    schema = json.loads(schema_text)
    validator_class = jsonschema.validators.validator_for(
        schema, default=jsonschema.Draft202012Validator
    )
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise InvalidSchema(exc.message) from None
    return _time_limited(validator_class)(schema)
