"""Loopback access to the lab's API servers, with faults on demand.

The API servers listen inside their clusters' node namespaces. This proxy binds one port per
cluster on the host's 127.0.0.1, then moves itself into the lab's router namespace, from which
every node is reachable: sockets keep the namespace they were created in, so the listeners stay
on the host's loopback while every outgoing connection is made inside the lab. Nothing of the
lab is routed to or from the host.

Faults (``lab fault``, and the lab tests of restore paths): a JSON file maps a listening port to
``{"mode": "stall" | "reset", "until": <epoch seconds or null>}``.  ``stall`` holds every byte
in both directions (requests time out, as behind a hung load balancer); ``reset`` closes every
connection of the port and refuses new ones (a dead endpoint).  The file is re-read when it
changes; a fault ends at ``until`` or when its entry is removed.  TLS is end to end: the proxy
cannot forge HTTP answers, only withhold or cut them.

Usage (started by ``up``):
  python3 apiproxy.py [--faults FILE] [--no-netns] ROUTER_NETNS_PATH PORT=IP:PORT [...]
``--no-netns`` keeps the proxy on the host (a test's proxy in front of a loopback server).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import socket
import sys
import time

CLONE_NEWNET = 0x40000000
POLL_S = 0.1


def enter_netns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns({path})")
    finally:
        os.close(fd)


class Faults:
    """The faults file, re-read when its mtime changes."""

    def __init__(self, path: str | None) -> None:
        self.path = path
        self._mtime: float | None = None
        self._faults: dict[str, dict] = {}
        #: open connections per listening port (closed on a reset)
        self.open: dict[int, set[asyncio.StreamWriter]] = {}

    def _load(self) -> None:
        if not self.path:
            return
        try:
            mtime = os.stat(self.path).st_mtime
        except FileNotFoundError:
            self._mtime, self._faults = None, {}
            return
        if mtime == self._mtime:
            return
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
            self._faults = {str(k): v for k, v in data.items() if isinstance(v, dict)}
            self._mtime = mtime
        except (OSError, ValueError):
            pass  # half written: read again next time

    def mode(self, port: int) -> str | None:
        self._load()
        fault = self._faults.get(str(port))
        if not fault:
            return None
        until = fault.get("until")
        if until is not None and time.time() >= float(until):
            return None
        return str(fault.get("mode") or "") or None

    async def gate(self, port: int) -> bool:
        """Wait while the port is stalled; False when it is reset (drop the connection)."""
        while True:
            mode = self.mode(port)
            if mode == "reset":
                return False
            if mode != "stall":
                return True
            await asyncio.sleep(POLL_S)

    async def watch(self) -> None:
        """Close the open connections of a port as soon as it is reset."""
        while True:
            for port, writers in list(self.open.items()):
                if writers and self.mode(port) == "reset":
                    for writer in list(writers):
                        with contextlib.suppress(OSError):
                            writer.close()
            await asyncio.sleep(POLL_S)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, faults: Faults,
               port: int) -> None:
    try:
        while data := await reader.read(65536):
            if not await faults.gate(port):
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            writer.close()
        except OSError:
            pass


def handler(target: tuple[str, int], faults: Faults, port: int):
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not await faults.gate(port):
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*target), 5)
        except (TimeoutError, OSError):
            writer.close()
            return
        conns = faults.open.setdefault(port, set())
        conns.update((writer, up_writer))
        try:
            await asyncio.gather(pipe(reader, up_writer, faults, port),
                                 pipe(up_reader, writer, faults, port))
        finally:
            conns.discard(writer)
            conns.discard(up_writer)
    return handle


async def serve(listeners: list[tuple[socket.socket, tuple[str, int]]], faults: Faults) -> None:
    servers = [await asyncio.start_server(handler(t, faults, s.getsockname()[1]), sock=s)
               for s, t in listeners]
    await asyncio.gather(faults.watch(), *(s.serve_forever() for s in servers))


def main(argv: list[str]) -> None:
    faults_path = None
    netns_switch = True
    while argv and argv[0].startswith("--"):
        flag = argv.pop(0)
        if flag == "--faults":
            faults_path = argv.pop(0)
        elif flag == "--no-netns":
            netns_switch = False
        else:
            raise SystemExit(f"apiproxy: unknown option {flag}")
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
    if netns_switch:
        enter_netns(netns)
    asyncio.run(serve(listeners, Faults(faults_path)))


if __name__ == "__main__":
    main(sys.argv[1:])
