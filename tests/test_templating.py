"""Template rendering: placeholders filled once, nothing evaluated, every gap named."""

import pytest

from shared.errors import ValidationFailed
from shared.prompts.templating import (
    TemplateSyntaxError,
    render_template,
    render_templates,
    template_variables,
)


def test_fills_placeholders_with_or_without_spaces() -> None:
    assert render_template("Hi {{name}}, {{ name }}!", {"name": "Ada"}) == "Hi Ada, Ada!"


def test_values_are_inserted_verbatim_and_never_rendered_again() -> None:
    rendered = render_template("{{a}} {{b}}", {"a": "{{b}}", "b": "__import__('os')"})
    assert rendered == "{{b}} __import__('os')"


def test_non_string_values_are_written_as_json() -> None:
    assert render_template("{{n}} {{items}} {{flag}}", {"n": 3, "items": ["x"], "flag": True}) == (
        '3 ["x"] true'
    )


def test_escaped_braces_stay_literal_and_declare_nothing() -> None:
    template = r"JSON looks like \{{ key }} and {{value}}"
    assert template_variables([template]) == ["value"]
    assert render_template(template, {"value": 1}) == "JSON looks like {{ key }} and 1"


def test_single_braces_are_plain_text() -> None:
    assert render_template('{"a": {{x}}}', {"x": 1}) == '{"a": 1}'


def test_missing_variables_are_all_named_in_one_422() -> None:
    with pytest.raises(ValidationFailed) as raised:
        render_templates(["{{a}} {{b}}", "{{c}} {{a}}"], {"b": 1})
    assert raised.value.status == 422
    assert raised.value.details == {"missing": ["a", "c"]}
    assert "a, c" in raised.value.message


def test_invalid_placeholders_are_syntax_errors() -> None:
    for template in ("{{ 1 + 1 }}", "{{name", "{{}}", "{{ a.b }}"):
        with pytest.raises(TemplateSyntaxError):
            template_variables([template])


def test_variables_keep_first_use_order() -> None:
    assert template_variables(["{{b}} {{a}}", "{{b}} {{c}}"]) == ["b", "a", "c"]
