"""A prompt version plus variables, earlier turns and a user input, as the messages sent to the
model.

One rule for every run — an execution, a chat turn, an evaluation cell: the prompt's messages
are the conversation's opening, the earlier turns follow, and the turn itself comes last. The
turn is the user's input: it fills the first message that uses `{{input}}` (that message, and
any after it, come after the history), or, when no message uses it, follows as a user message.
So no message is sent twice, and nothing written for the first turn is repeated after later
ones.
"""

from collections.abc import Mapping, Sequence

from shared.prompts.models import PromptVersion
from shared.prompts.templating import render_templates, template_variables

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

    A text prompt is the system message when an input follows it, else the user message itself.
    """
    opening, turn = _opening_and_turn(version, variables, user_input, keep_missing)
    earlier = [{"role": message["role"], "content": message["content"]} for message in history]
    return [*opening, *earlier, *turn]


def template_values(
    version: PromptVersion, variables: Mapping[str, object], user_input: str | None
) -> dict[str, object]:
    """What the version's placeholders are filled with: the variables, and the input for
    `{{input}}` when the content uses it."""
    values = dict(variables)
    if user_input is not None and INPUT_VARIABLE in version.variables:
        values[INPUT_VARIABLE] = user_input
    return values


def _opening_and_turn(
    version: PromptVersion,
    variables: Mapping[str, object],
    user_input: str | None,
    keep_missing: bool,
) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    values = template_values(version, variables, user_input)
    if version.template is not None:
        [text] = render_templates([version.template], values, keep_missing=keep_missing)
        if user_input is None or INPUT_VARIABLE in version.variables:
            return [], [{"role": "user", "content": text}]
        return [{"role": "system", "content": text}], [{"role": "user", "content": user_input}]
    source = version.messages or []
    contents = render_templates(
        [message.content for message in source], values, keep_missing=keep_missing
    )
    messages = [
        {"role": message.role, "content": content}
        for message, content in zip(source, contents, strict=True)
    ]
    if user_input is None:
        return messages, []
    if INPUT_VARIABLE in version.variables:
        for index, message in enumerate(source):
            if INPUT_VARIABLE in template_variables([message.content]):
                return messages[:index], messages[index:]
    return messages, [{"role": "user", "content": user_input}]
