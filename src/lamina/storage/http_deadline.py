"""Overall deadlines for HTTP calls: a socket timeout bounds each ``recv`` only, so a server
trickling a byte at a time would hold a read open for hours. One watchdog thread shuts down the
socket of a call whose deadline passed, which unblocks a read stuck in headers or body."""

from __future__ import annotations

import functools
import heapq
import itertools
import socket
import threading
import time
from typing import Any

from lamina._errors import StorageError

__all__ = ["Deadline", "ACTIVE", "DEADLINE_SPAN", "watched_pool_classes"]

#: body bytes asked of the socket per read; each span received adds ``deadline`` seconds to a call's
#: clock, so large bodies on slow links finish
DEADLINE_SPAN = 16 << 20


#: the deadline of the call running on this thread, for the connection hook that watches its socket
ACTIVE = threading.local()


class Deadline:
    """The clock of one store call: ``seconds``, plus as many again per ``DEADLINE_SPAN`` bytes of
    body received. When it runs out the watchdog shuts the call's socket down, so a blocked read
    (of headers or body, however slowly the server trickles) returns at once."""

    def __init__(self, seconds: float, where: str) -> None:
        self.seconds = seconds
        self.where = where
        self._expires = time.monotonic() + seconds
        self._received = 0
        self._lock = threading.Lock()
        self._sock: Any = None
        self._scheduled = -1.0  # the expiry the watchdog holds for this call
        self._paused_left: float | None = None
        self._fired = False

    def watch(self, sock: Any) -> None:
        """Shut ``sock`` down when the time is up (called as each request starts reading its answer)."""
        with self._lock:
            self._sock = sock
            self._schedule()

    def unwatch(self) -> None:
        with self._lock:
            self._sock = None
            self._scheduled = -1.0  # the watchdog may drop this entry now: the next watch schedules anew

    def left(self) -> float:
        return max(0.0, self._expires - time.monotonic())

    def check(self) -> None:
        if self._fired or (self._paused_left is None and time.monotonic() >= self._expires):
            raise StorageError(f"{self.where}: deadline of {self.seconds:g} s exceeded") from None

    def received(self, n: int) -> None:
        spans = (self._received + n) // DEADLINE_SPAN - self._received // DEADLINE_SPAN
        self._received += n
        if spans:
            with self._lock:
                self._expires += spans * self.seconds
                self._schedule()
        self.check()

    def pause(self) -> None:
        with self._lock:
            self._paused_left = self.left()

    def resume(self) -> None:
        with self._lock:
            self._expires = time.monotonic() + (self._paused_left or 0.0)
            self._paused_left = None
            self._schedule()

    def _schedule(self) -> None:  # lock held
        if self._sock is not None and self._scheduled != self._expires:
            self._scheduled = self._expires
            WATCHDOG.schedule(self._expires, self)

    def expire(self) -> None:
        """The watchdog's call at a time this deadline was scheduled for (maybe since extended)."""
        with self._lock:
            if self._sock is None or self._paused_left is not None or time.monotonic() < self._expires:
                return
            self._fired = True
            sock = self._sock
        try:  # the plain socket's shutdown, also under TLS: SSLSocket.shutdown would drop its state mid-read
            (socket.socket.shutdown if isinstance(sock, socket.socket) else type(sock).shutdown)(sock, socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass


class _Watchdog:
    """One daemon thread for every call's deadline (a timer thread per request would cost more
    than a small request): a heap of (time, deadline), each expired when its time comes."""

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._heap: list[tuple[float, int, Deadline]] = []
        self._order = itertools.count()  # ties never compare deadlines
        self._thread: threading.Thread | None = None

    def schedule(self, at: float, deadline: Deadline) -> None:
        with self._wake:
            if len(self._heap) > 4096:  # mostly calls long finished: keep those still watching a socket
                self._heap = [entry for entry in self._heap if entry[2]._sock is not None]
                heapq.heapify(self._heap)
            heapq.heappush(self._heap, (at, next(self._order), deadline))
            if self._thread is None or not self._thread.is_alive():  # first use, or a forked child
                self._thread = threading.Thread(target=self._run, name="lamina-http-deadlines", daemon=True)
                self._thread.start()
            elif self._heap[0][2] is deadline:  # the thread sleeps until a later time: wake it
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    self._wake.wait(min(self._heap[0][0] - time.monotonic(), 3600.0) if self._heap else None)
                deadline = heapq.heappop(self._heap)[2]
            deadline.expire()


WATCHDOG = _Watchdog()


@functools.cache
def watched_pool_classes() -> dict[str, type]:
    """urllib3 pools whose connections hand their socket to the calling thread's deadline as they
    start reading an answer (the one place the socket of a request in flight is reachable)."""
    from urllib3.connection import HTTPConnection, HTTPSConnection
    from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

    def watched(base: type) -> type:
        def getresponse(self: Any) -> Any:
            deadline = getattr(ACTIVE, "deadline", None)
            if deadline is not None and self.sock is not None:
                deadline.watch(self.sock)
            return base.getresponse(self)
        return type(base.__name__, (base,), {"getresponse": getresponse})  # same name in messages

    return {scheme: type(pool.__name__, (pool,), {"ConnectionCls": watched(connection)})
            for scheme, pool, connection in (("http", HTTPConnectionPool, HTTPConnection),
                                             ("https", HTTPSConnectionPool, HTTPSConnection))}


