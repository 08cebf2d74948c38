"""The pipe between the daemon and its Channel Access process (controller/epics/server.py, child.py): a Unix
socket pair read and written with asyncio streams on both sides, messages pickled behind a 4-byte length.

Writes never block the loop (asyncio buffers them); the daemon bounds that buffer (``backlog``) so that a child
that stops reading cannot make it grow without end. Both ends are this program's own processes."""
from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

LENGTH = struct.Struct("!I")
MAX_MESSAGE = 1 << 20  # a scan summary is ≤ 4000 characters: far below


def send(writer: asyncio.StreamWriter, message: tuple[Any, ...]) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    writer.write(LENGTH.pack(len(data)) + data)


async def receive(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None when the other end has closed."""
    try:
        (n,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
        if n > MAX_MESSAGE:
            raise ValueError(f"a message of {n} bytes on the EPICS pipe")
        return pickle.loads(await reader.readexactly(n))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def backlog(writer: asyncio.StreamWriter) -> int:
    """Bytes written but not yet taken by the other end's socket."""
    return writer.transport.get_write_buffer_size()


def child_main(*args: Any) -> None:
    """The Channel Access process's target: a name the daemon pickles without importing caproto."""
    from controller.epics.child import main

    main(*args)
