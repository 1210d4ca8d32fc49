"""A remote SMTP destination under the run's control: down (port closed), slow (tarpit), or normal.

Why a private asyncio sink and not a second qldap: the remote scenario is about the *sender's*
retries, so the far end must misbehave on command and count exactly what reached it — connections
per mode, and every ``X-Fault-Seq`` it accepted, duplicates included.  Slow mode accepts the TCP
connection but holds the greeting for :attr:`Sink.tarpit` seconds (longer than the sender's
``timeoutremote``), the classic tarpit; down mode listens nowhere, so connects are refused.
"""

from __future__ import annotations

import asyncio
import collections
import re
import threading

_SEQ = re.compile(rb"^X-Fault-Seq: (\S+)\r?$", re.M)


class Sink:
    """An SMTP server on 127.0.0.1:*port* in its own thread; :meth:`set_mode` switches behaviour."""

    def __init__(self, port: int, tarpit: float) -> None:
        self.port, self.tarpit = port, tarpit
        self.mode = "down"
        self.connections: collections.Counter[str] = collections.Counter()
        self.received: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def seqs(self) -> collections.Counter[str]:
        """A copy of the seqs received so far (seq → times)."""
        with self._lock:
            return collections.Counter(self.received)

    def set_mode(self, mode: str) -> None:
        """``down`` closes the port; ``slow`` and ``normal`` listen."""
        asyncio.run_coroutine_threadsafe(self._set(mode), self._loop).result(10)

    async def _set(self, mode: str) -> None:
        self.mode = mode
        if mode == "down" and self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        elif mode != "down" and self._server is None:
            self._server = await asyncio.start_server(self._session, "127.0.0.1", self.port, limit=1 << 20)

    def close(self) -> None:
        """Stop listening, end open sessions (a tarpit may still hold some), and end the thread."""
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    async def _shutdown(self) -> None:
        await self._set("down")
        sessions = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in sessions:
            task.cancel()
        await asyncio.gather(*sessions, return_exceptions=True)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        mode = self.mode
        with self._lock:
            self.connections[mode] += 1
        try:
            if mode == "slow":
                await asyncio.sleep(self.tarpit)
            writer.write(b"220 sink.faults.test ESMTP\r\n")
            await self._dialogue(reader, writer)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            writer.close()

    async def _dialogue(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            line = await reader.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"DATA":
                writer.write(b"354 go ahead\r\n")
                body = await reader.readuntil(b"\r\n.\r\n")
                with self._lock:
                    self.received.update(m.decode() for m in _SEQ.findall(body))
                writer.write(b"250 ok queued\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                return
            elif verb in (b"EHLO", b"HELO"):
                writer.write(b"250 sink.faults.test\r\n")
            else:
                writer.write(b"250 ok\r\n")
            await writer.drain()
