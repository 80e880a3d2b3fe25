"""What a run of a prompt takes from its caller: template variables, earlier turns, input.

Datasets store the same for each case, so these stay light to import: no DeepSeek, no records.
"""

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, StringConstraints

from shared.models import InputModel

VariableName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,99}$")]
UserInput = Annotated[str, StringConstraints(max_length=100_000)]


def _check_keys(value: Any) -> None:
    """Nested keys become MongoDB field names: refuse operators and dotted paths."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("$") or "." in key:
                raise ValueError(f"keys may not start with '$' or contain '.': {key!r}")
            _check_keys(item)
    elif isinstance(value, list):
        for item in value:
            _check_keys(item)


def _safe_values(variables: dict[str, Any]) -> dict[str, Any]:
    _check_keys(variables)
    return variables


# Template variables: JSON values, stored as given.
Variables = Annotated[dict[VariableName, Any], AfterValidator(_safe_values)]


class WithVariables(InputModel):
    """A request carrying template variables."""

    variables: Variables = Field(default_factory=dict)


class HistoryTurn(InputModel):
    """A prior turn of a conversation, sent before the input."""

    role: Literal["user", "assistant"]
    content: UserInput


MAX_HISTORY_TURNS = 100
History = Annotated[list[HistoryTurn], Field(max_length=MAX_HISTORY_TURNS)]
