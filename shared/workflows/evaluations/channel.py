"""The evaluation channel: cells of a run, addressed to the `evaluation-worker` function."""

from shared.queues.channel import Channel
from shared.workflows.evaluations.models import CellEvent


def _cell_id(event: CellEvent) -> str:
    return event.cell_id


def _evaluation_id(event: CellEvent) -> str:
    return event.evaluation_id


CELLS: Channel[CellEvent] = Channel(
    name="evaluation",
    function="evaluation-worker",
    event_type="com.better-assistant.evaluation.cell",
    source="/evaluations",
    noun="cell",
    model=CellEvent,
    event_id=_cell_id,
    subject=_evaluation_id,
)
