"""A tiny TCP proxy on its own thread and event loop that can cut, stall and refuse connections."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any

from tests.support.servers import free_port

CHUNK = 65536


class Proxy:
    """Forwards 127.0.0.1:port to 127.0.0.1:target.

    - cut(): close every open connection at once (a reset link, a restarted NAT);
    - stall(): stop moving bytes both ways while connections stay open (a partition: TCP
      retransmits, nothing arrives); heal() resumes, and refuse new connections meanwhile;
    - connections: connections accepted so far.
    """

    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.connections = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chaos-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._flowing: asyncio.Event | None = None
        self._refusing = False

    # ---------------------------------------------------------------- lifecycle (test thread)

    def start(self) -> Proxy:
        self._thread.start()
        self._call(self._start)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            with contextlib.suppress(Exception):
                self._call(self._stop)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    def cut(self) -> int:
        """Close every open connection; the number closed."""
        return int(self._call(self._cut))

    def stall(self) -> None:
        """Partition: hold every byte (both ways) and refuse new connections until heal()."""
        self._call(self._stall)

    def heal(self) -> None:
        """End the partition."""
        self._call(self._heal)

    def _call(self, fn: Callable[[], Any], timeout_s: float = 10.0) -> Any:
        async def run() -> Any:
            result = fn()
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout_s)

    # ---------------------------------------------------------------- on the proxy's loop

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def _stop(self) -> None:
        self._cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def _cut(self) -> int:
        writers = list(self._open)
        for writer in writers:
            with contextlib.suppress(Exception):
                writer.transport.abort()
        self._open.clear()
        return len(writers)

    def _stall(self) -> None:
        assert self._flowing is not None
        self._flowing.clear()
        self._refusing = True

    def _heal(self) -> None:
        assert self._flowing is not None
        self._flowing.set()
        self._refusing = False

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", self.target_port), timeout=5.0
            )
        except (OSError, TimeoutError):
            writer.transport.abort()  # the broker is down: the client sees a refused/reset connection
            return
        self.connections += 1
        self._open.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True)
        for w in (writer, up_writer):
            self._open.discard(w)
            with contextlib.suppress(Exception):
                w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self._flowing is not None
        try:
            while True:
                await self._flowing.wait()
                data = await reader.read(CHUNK)
                if not data:
                    break
                await self._flowing.wait()  # a partition that began while reading holds this chunk too
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.transport.abort()
