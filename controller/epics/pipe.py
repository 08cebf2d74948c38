"""The pipe between the daemon and its Channel Access process (controller/epics/server.py, child.py): a Unix
socket pair read and written with asyncio streams on both sides, messages as JSON arrays behind a 4-byte length.
JSON, not pickle: the child faces the network, so the daemon parses what it sends and never unpickles it.

Writes never block the loop (asyncio buffers them); the daemon bounds that buffer (``backlog``) so that a child
that stops reading cannot make it grow without end. Both ends are this program's own processes."""
from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

import numpy as np

LENGTH = struct.Struct("!I")
MAX_MESSAGE = 1 << 20  # a scan summary is ≤ 4000 characters: far below


def _plain(value: Any) -> Any:
    """numpy values as JSON's own (a PV's array value, a gain)."""
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} on the EPICS pipe")


def send(writer: asyncio.StreamWriter, message: tuple[Any, ...]) -> None:
    data = json.dumps(message, default=_plain).encode()
    writer.write(LENGTH.pack(len(data)) + data)


async def receive(reader: asyncio.StreamReader) -> tuple[Any, ...] | None:
    """The next message, or None when the other end has closed."""
    try:
        (n,) = LENGTH.unpack(await reader.readexactly(LENGTH.size))
        if n > MAX_MESSAGE:
            raise ValueError(f"a message of {n} bytes on the EPICS pipe")
        message = json.loads(await reader.readexactly(n))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    if not (isinstance(message, list) and message and isinstance(message[0], str)):
        raise ValueError("a message on the EPICS pipe that is not [kind, ...]")
    return tuple(message)


def backlog(writer: asyncio.StreamWriter) -> int:
    """Bytes written but not yet taken by the other end's socket."""
    return writer.transport.get_write_buffer_size()


def child_main(*args: Any) -> None:
    """The Channel Access process's target: a name the daemon pickles without importing caproto."""
    from controller.epics.child import main

    main(*args)
