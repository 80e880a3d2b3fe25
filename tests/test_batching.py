"""Batching writes: nothing waits when idle, everything that arrives meanwhile goes together."""

import asyncio
import threading

from shared.batching import Batcher


class Recorder:
    """A `handle_many` that records its batches; the first one waits until released."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.fail_on = fail_on

    def __call__(self, items: list[str]) -> list[str]:
        self.batches.append(items)
        if len(self.batches) == 1:
            self.release.wait(5)
        if self.fail_on in items:
            raise RuntimeError("the database went away")
        return [item.upper() for item in items]


async def submit_while_busy(batcher: Batcher[str, str], recorder: Recorder, items: list[str]):
    """Submit `items[0]`, then the rest while its batch is still being handled."""
    first = asyncio.ensure_future(batcher.submit(items[0]))
    while not recorder.batches:
        await asyncio.sleep(0.005)
    rest = [asyncio.ensure_future(batcher.submit(item)) for item in items[1:]]
    await asyncio.sleep(0.05)
    recorder.release.set()
    return await asyncio.gather(first, *rest, return_exceptions=True)


def test_a_lone_item_is_handled_at_once() -> None:
    recorder = Recorder()
    recorder.release.set()
    batcher = Batcher(recorder, max_batch=10)
    assert asyncio.run(asyncio.wait_for(batcher.submit("a"), 2)) == "A"
    assert recorder.batches == [["a"]]


def test_items_arriving_meanwhile_go_together_up_to_the_cap() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch=3)
    items = ["a", "b", "c", "d", "e", "f"]
    results = asyncio.run(submit_while_busy(batcher, recorder, items))
    assert results == ["A", "B", "C", "D", "E", "F"]
    assert recorder.batches == [["a"], ["b", "c", "d"], ["e", "f"]]


def test_a_failed_batch_fails_each_of_its_items_and_the_next_batch_still_runs() -> None:
    recorder = Recorder(fail_on="c")
    batcher = Batcher(recorder, max_batch=2)
    results = asyncio.run(submit_while_busy(batcher, recorder, ["a", "b", "c", "d"]))
    assert results[0] == "A"
    assert [str(result) for result in results[1:3]] == ["the database went away"] * 2
    assert results[3] == "D"
    assert recorder.batches == [["a"], ["b", "c"], ["d"]]


def test_each_event_loop_has_its_own_batches() -> None:
    """A batch held on one loop (one thread) does not hold items submitted on another."""
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch=10)
    held: list[str] = []
    first = threading.Thread(target=lambda: held.append(asyncio.run(batcher.submit("a"))))
    first.start()
    while not recorder.batches:
        threading.Event().wait(0.005)
    assert asyncio.run(asyncio.wait_for(batcher.submit("b"), 2)) == "B"
    assert held == []  # the other loop's batch is still being handled
    recorder.release.set()
    first.join(5)
    assert held == ["A"]
    assert recorder.batches == [["a"], ["b"]]


def test_a_cap_of_one_handles_items_one_by_one() -> None:
    recorder = Recorder()
    batcher = Batcher(recorder, max_batch=1)
    results = asyncio.run(submit_while_busy(batcher, recorder, ["a", "b", "c"]))
    assert results == ["A", "B", "C"]
    assert recorder.batches == [["a"], ["b"], ["c"]]
