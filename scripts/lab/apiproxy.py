"""Loopback access to the lab's API servers.

The API servers listen inside their clusters' node namespaces. This proxy binds one port per
cluster on the host's 127.0.0.1, then moves itself into the lab's router namespace, from which
every node is reachable: sockets keep the namespace they were created in, so the listeners stay
on the host's loopback while every outgoing connection is made inside the lab. Nothing of the
lab is routed to or from the host.

Usage (started by ``up``): python3 apiproxy.py ROUTER_NETNS_PATH PORT=IP:PORT [...]
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import socket
import sys

CLONE_NEWNET = 0x40000000


def enter_netns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({path})")
    finally:
        os.close(fd)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


def handler(target: tuple[str, int]):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*target), 5)
        except (TimeoutError, OSError):
            writer.close()
            return
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    return handle


async def serve(listeners: list[tuple[socket.socket, tuple[str, int]]]) -> None:
    servers = [await asyncio.start_server(handler(t), sock=s) for s, t in listeners]
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main(argv: list[str]) -> None:
    netns, *mappings = argv
    listeners = []
    for m in mappings:
        port, _, target = m.partition("=")
        host, _, tport = target.rpartition(":")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(port)))
        s.listen(128)
        s.setblocking(False)
        listeners.append((s, (host, int(tport))))
    enter_netns(netns)
    asyncio.run(serve(listeners))


if __name__ == "__main__":
    main(sys.argv[1:])
