"""Clients are built once per kind and configuration, and closed in one place."""

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from shared.clients import close_clients, loop_client, process_client


class FakeClient:
    def __init__(self) -> None:
        self.closed = False

    async def aclose(self) -> None:
        self.closed = True


def test_threads_share_one_process_client_per_configuration() -> None:
    built: list[object] = []
    lock = threading.Lock()

    def build() -> object:
        with lock:
            built.append(object())
            return built[-1]

    with ThreadPoolExecutor(8) as pool:
        clients = set(
            pool.map(lambda _: id(process_client("test-a", ("uri", 1), build)), range(32))
        )
    assert len(clients) == 1 and len(built) == 1
    assert process_client("test-a", ("uri", 2), build) is not built[0]
    assert len(built) == 2


def test_a_loop_client_is_replaced_and_closed_when_its_configuration_changes() -> None:
    async def scenario() -> tuple[FakeClient, FakeClient, FakeClient]:
        first = loop_client("test-b", "one", FakeClient)
        assert loop_client("test-b", "one", FakeClient) is first
        second = loop_client("test-b", "two", FakeClient)
        await asyncio.sleep(0)  # the replaced client closes in a task of its own
        await close_clients()
        third = loop_client("test-b", "two", FakeClient)
        await close_clients()
        return first, second, third

    first, second, third = asyncio.run(scenario())
    assert first is not second and second is not third
    assert first.closed and second.closed and third.closed


def test_each_event_loop_has_its_own_clients() -> None:
    async def client() -> FakeClient:
        made = loop_client("test-c", None, FakeClient)
        await close_clients()
        return made

    assert asyncio.run(client()) is not asyncio.run(client())
