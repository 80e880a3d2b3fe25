"""Bounds on the JSON clients send: parsing that cannot recurse out of the stack, limits on every
free-form JSON field checked before anything is stored, and stored values shown within bounds.

`json.loads` and pydantic recurse once per level of nesting: about a thousand levels (under 4 KB)
exhaust Python's stack, and a few hundred exceed pydantic's own limit when a record is rendered.
"""

import json
import math
import re
from itertools import accumulate
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator

# A whole body or event: generous, since it wraps the free-form fields, and far below what
# `json.loads` survives.
MAX_BODY_DEPTH = 64
# A free-form field (template variables, a JSON Schema): a top-level object counts as one level.
MAX_VALUE_DEPTH = 32
# As large as a whole body may be by default: a single turn may bring a large document.
MAX_VALUE_BYTES = 1024 * 1024
MAX_ITEMS = 10_000
# Stored values deeper than this (kept by older versions, which had no bound) are shown clipped.
MAX_SHOWN_DEPTH = 64
CLIPPED = "[nested too deep to show]"

_INT64 = range(-(2**63), 2**63)
# A JSON string to its closing quote, or to the end of an unterminated one: it always matches, so
# scanning is linear whatever the text.
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+"?', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]++")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


class JsonTooDeep(ValueError):
    """JSON text nests arrays and objects deeper than allowed."""

    def __init__(self, max_depth: int) -> None:
        super().__init__(f"nested deeper than {max_depth} levels")
        self.max_depth = max_depth


def nesting_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON text (brackets inside strings do not count),
    measured with regular expressions and builtins, never by recursion."""
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes | str, max_depth: int = MAX_BODY_DEPTH) -> Any:
    """Strict JSON (no NaN or Infinity) nested at most `max_depth` levels: `JsonTooDeep` before
    parsing anything deeper, ValueError for anything else that is not JSON."""
    # Decoded as `json.loads` decodes bytes (UTF-8, 16 or 32), so the scan sees the same text.
    text = (
        data.decode(json.detect_encoding(data), "surrogatepass")
        if isinstance(data, bytes)
        else data
    )
    if nesting_depth(text) > max_depth:
        raise JsonTooDeep(max_depth)
    return json.loads(text, parse_constant=_refuse_constant)


def _check_key(key: object) -> None:
    # Keys become MongoDB field names: no operators, no paths, no NUL (a C string ends there).
    if not isinstance(key, str) or key.startswith("$") or "." in key or "\x00" in key:
        raise ValueError("keys must be text without a leading '$', a '.' or a NUL character")


def _check_scalar(value: object) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and value not in _INT64:
        raise ValueError("integers must fit in 64 bits")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")


def check_json_value(value: Any, *, field_names: bool) -> Any:
    """A free-form JSON value within bounds: nesting, items per list or object, 64-bit integers,
    valid Unicode, size as JSON (which bounds every text in it); with `field_names`, its keys
    must be ones MongoDB stores as field names."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth >= MAX_VALUE_DEPTH:
                raise ValueError(f"nested deeper than {MAX_VALUE_DEPTH} levels")
            if len(item) > MAX_ITEMS:
                raise ValueError(f"a list or object has more than {MAX_ITEMS} items")
            if isinstance(item, dict):
                if field_names:
                    for key in item:
                        _check_key(key)
                pending.extend((child, depth + 1) for child in item.values())
            else:
                pending.extend((child, depth + 1) for child in item)
        else:
            _check_scalar(item)
    try:
        size = len(json.dumps(value, ensure_ascii=False).encode())
    except (UnicodeEncodeError, TypeError, ValueError):
        raise ValueError(
            "values must be JSON: text (valid Unicode), numbers, booleans, null, lists and objects"
        ) from None
    if size > MAX_VALUE_BYTES:
        raise ValueError(f"larger than {MAX_VALUE_BYTES} bytes as JSON")
    return value


def _stored_fields(value: Any) -> Any:
    return check_json_value(value, field_names=True)


# A free-form JSON value stored as a MongoDB document (template variables).
JsonFields = AfterValidator(_stored_fields)


def clipped(value: Any) -> Any:
    """A stored value with whatever nests deeper than `MAX_SHOWN_DEPTH` replaced by `CLIPPED`,
    so a record from before the bounds still renders; the value itself when nothing is that
    deep."""
    if not _deeper_than(value, MAX_SHOWN_DEPTH):
        return value
    return _clip(value, MAX_SHOWN_DEPTH)


def _deeper_than(value: Any, max_depth: int) -> bool:
    pending: list[tuple[Any, int]] = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth >= max_depth:
                return True
            children = item.values() if isinstance(item, dict) else item
            pending.extend((child, depth + 1) for child in children)
    return False


def _clip(value: Any, levels_left: int) -> Any:
    # Recursion bounded by `levels_left`, which is at most MAX_SHOWN_DEPTH.
    if not isinstance(value, dict | list):
        return value
    if levels_left == 0:
        return CLIPPED
    if isinstance(value, dict):
        return {key: _clip(item, levels_left - 1) for key, item in value.items()}
    return [_clip(item, levels_left - 1) for item in value]


# A free-form JSON object read back from storage, for response models.
StoredJson = Annotated[dict[str, Any], BeforeValidator(clipped)]
