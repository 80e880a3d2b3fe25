"""A prompt version plus variables and a user input, as the messages sent to the model."""

from collections.abc import Mapping, Sequence

from shared.prompts.models import PromptVersion
from shared.prompts.templating import render_templates

# A template that uses {{input}} places the user's input itself; otherwise it follows as a
# final user turn.
INPUT_VARIABLE = "input"


def render_messages(
    version: PromptVersion,
    variables: Mapping[str, object],
    user_input: str | None,
    history: Sequence[Mapping[str, str]] = (),
    *,
    keep_missing: bool = False,
) -> list[dict[str, str]]:
    """The chat messages for one run; a 422 names every missing variable (`keep_missing`: their
    placeholders stay as written instead).

    A text prompt is the user message, or the system message when the input follows it.
    Earlier turns (`history`) come after the prompt's leading system messages.
    """
    rendered = _rendered(version, variables, user_input, keep_missing)
    if not history:
        return rendered
    leading = 0
    while leading < len(rendered) and rendered[leading]["role"] == "system":
        leading += 1
    turns = [{"role": turn["role"], "content": turn["content"]} for turn in history]
    return [*rendered[:leading], *turns, *rendered[leading:]]


def template_values(
    version: PromptVersion, variables: Mapping[str, object], user_input: str | None
) -> dict[str, object]:
    """What the version's placeholders are filled with: the variables, and the input for
    `{{input}}` when the content uses it."""
    values = dict(variables)
    if user_input is not None and INPUT_VARIABLE in version.variables:
        values[INPUT_VARIABLE] = user_input
    return values


def _rendered(
    version: PromptVersion,
    variables: Mapping[str, object],
    user_input: str | None,
    keep_missing: bool,
) -> list[dict[str, str]]:
    places_input = INPUT_VARIABLE in version.variables
    values = template_values(version, variables, user_input)
    appended_input = user_input if user_input is not None and not places_input else None
    if version.template is not None:
        [text] = render_templates([version.template], values, keep_missing=keep_missing)
        if appended_input is None:
            return [{"role": "user", "content": text}]
        return [{"role": "system", "content": text}, {"role": "user", "content": appended_input}]
    source = version.messages or []
    contents = render_templates(
        [message.content for message in source], values, keep_missing=keep_missing
    )
    messages = [
        {"role": message.role, "content": content}
        for message, content in zip(source, contents, strict=True)
    ]
    if appended_input is not None:
        messages.append({"role": "user", "content": appended_input})
    return messages
