"""Response bodies of HttpStore's ranged reads: filled straight from the socket into the caller's
buffers (``fill_from_body``), split across several destination views (``slice_views``), or into a prefix buffer
sized once the answer's headers are known (``PrefixBuffer``)."""

from __future__ import annotations

import http.client
from collections.abc import Iterator
from typing import Any

from lamina.storage.http_deadline import DEADLINE_SPAN, Deadline

__all__ = ["PrefixBuffer", "bytes_view", "fill_from_body", "slice_views", "socket_body"]


def slice_views(views: list[memoryview], offset: int, length: int) -> list[memoryview]:
    """The parts of ``views`` (taken as one run of bytes) from ``offset``, ``length`` bytes long."""
    out = []
    for view in views:
        if offset >= len(view):
            offset -= len(view)
            continue
        part = view[offset : offset + length]
        out.append(part)
        length -= len(part)
        offset = 0
        if not length:
            break
    return out


class PrefixBuffer:
    """The buffer of a prefix read, made once the first answer's headers are checked: as long as
    the file holds past the start (at most the length asked), so a manifest that claims more than
    the file has costs no memory."""

    def __init__(self, length: int) -> None:
        self.length = length
        self.data: bytearray | None = None

    def views(self, offset: int, count: int, total: int | None) -> Iterator[memoryview]:
        if self.data is None:
            self.data = bytearray(self.length if total is None else min(self.length, total))
        elif offset + count > len(self.data):  # a later answer says the file is longer now
            self.data.extend(bytes(offset + count - len(self.data)))
        yield memoryview(self.data)[offset : offset + count]

    def result(self, got: int) -> bytes:
        """The first ``got`` bytes, not copied (a bytearray: bytes-like)."""
        data = self.data if self.data is not None else bytearray()
        del data[got:]
        return data  # type: ignore[return-value]


def bytes_view(view: memoryview) -> memoryview:
    view = memoryview(view)
    return view if view.format == "B" and view.ndim == 1 else view.cast("B")


def socket_body(response: Any) -> http.client.HTTPResponse | None:
    """The http.client response under urllib3's, whose ``readinto`` fills a buffer from the socket
    (and stops at its Content-Length or last chunk); None should urllib3 ever hold something else,
    and then bodies are read as bytes and copied."""
    fp = getattr(response, "_fp", None)
    return fp if isinstance(fp, http.client.HTTPResponse) else None


def fill_from_body(response: Any, target: memoryview, deadline: Deadline) -> int:
    """Read the body into ``target`` until it is full or the body ends; returns the bytes read.
    Straight from the socket into ``target`` through http.client's ``readinto`` (urllib3's own
    ``readinto`` reads into new bytes and copies them), DEADLINE_SPAN at most per call so that the
    deadline grows with the body."""
    import urllib3

    fp = socket_body(response)
    got = 0
    while got < len(target):
        part = target[got : got + DEADLINE_SPAN]
        if fp is not None:
            try:
                n = fp.readinto(part)
            except (OSError, http.client.HTTPException) as exc:  # as urllib3 reports a broken body
                raise urllib3.exceptions.ProtocolError(f"Connection broken: {exc!r}", exc) from None
        else:
            data = response.read(len(part), decode_content=False)
            n = len(data)
            part[:n] = data
        if not n:
            break
        got += n
        deadline.received(n)
    return got
