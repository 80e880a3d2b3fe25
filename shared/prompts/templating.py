"""`{{name}}` templates: parsed, never evaluated. `\\{{` writes a literal `{{`."""

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from shared.errors import ValidationFailed

_TOKEN = re.compile(r"\\\{\{|\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}|\{\{")


@dataclass(frozen=True)
class Placeholder:
    name: str
    # As written in the template, spaces inside the braces included.
    text: str


class TemplateSyntaxError(ValueError):
    pass


def parse_template(template: str) -> list[str | Placeholder]:
    """Split a template into literal text and placeholders; a stray `{{` is an error."""
    segments: list[str | Placeholder] = []
    position = 0
    for match in _TOKEN.finditer(template):
        segments.append(template[position : match.start()])
        token = match.group(0)
        if token == "\\{{":
            segments.append("{{")
        elif match.group(1):
            segments.append(Placeholder(match.group(1), token))
        else:
            raise TemplateSyntaxError(
                f"Invalid placeholder at character {match.start()}: use {{{{name}}}} with a "
                "letter, digit or underscore name, or write \\{{ for a literal '{{'."
            )
        position = match.end()
    segments.append(template[position:])
    return [segment for segment in segments if segment != ""]


def template_variables(templates: Iterable[str]) -> list[str]:
    """The distinct variable names the templates use, in order of first use."""
    names: dict[str, None] = {}
    for template in templates:
        for segment in parse_template(template):
            if isinstance(segment, Placeholder):
                names.setdefault(segment.name)
    return list(names)


def _as_text(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def render_templates(
    templates: list[str], variables: Mapping[str, object], *, keep_missing: bool = False
) -> list[str]:
    """Fill every template in one pass (values are inserted verbatim, never re-parsed).

    Raises a 422 naming every variable that is missing across all the templates, unless
    `keep_missing` leaves their placeholders as written (a preview shows what is still missing).
    """
    missing = [name for name in template_variables(templates) if name not in variables]
    if missing and not keep_missing:
        raise ValidationFailed(
            f"Missing template variables: {', '.join(missing)}.",
            code="missing_variables",
            details={"missing": missing},
        )
    return [
        "".join(_filled(segment, variables) for segment in parse_template(template))
        for template in templates
    ]


def _filled(segment: str | Placeholder, variables: Mapping[str, object]) -> str:
    if not isinstance(segment, Placeholder):
        return segment
    return _as_text(variables[segment.name]) if segment.name in variables else segment.text


def render_template(template: str, variables: Mapping[str, object]) -> str:
    """Fill one template; a 422 names every missing variable."""
    return render_templates([template], variables)[0]
