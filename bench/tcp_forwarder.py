"""The floor, for scale: bytes forwarded between two sockets by a uvloop process, untouched.

No HTTP parsing, no JSON, no framework: what waking once per upstream chunk costs a Python
process on this machine before any of the work a relay does. Run by `bench.chat_overhead` as
`python -m bench.tcp_forwarder --port P --upstream-port U`.
"""

import argparse
import asyncio

import uvloop

_READ_SIZE = 65536


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    while data := await source.read(_READ_SIZE):
        sink.write(data)
    sink.close()


async def _serve(port: int, upstream_port: int) -> None:
    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", upstream_port)
        await asyncio.gather(_pump(reader, upstream_writer), _pump(upstream_reader, writer))

    server = await asyncio.start_server(forward, "127.0.0.1", port)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    arguments = parser.parse_args()
    uvloop.run(_serve(arguments.port, arguments.upstream_port))


if __name__ == "__main__":
    main()
