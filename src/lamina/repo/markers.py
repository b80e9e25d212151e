"""Coordination markers between pushes and garbage collection (format_spec/repository.md §6).

A marker is a small JSON object under ``locks/`` naming its process; while the operation runs a
thread rewrites it every ``HEARTBEAT`` seconds. A marker is live when its process is alive (same
host), or when it was refreshed within ``TTL`` seconds (another host), so a killed operation stops
counting within a minute and a long one never expires while it runs.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

from lamina._errors import NotFoundError
from lamina.storage.base import Store
from lamina.storage.local import pid_alive

__all__ = ["GC_LOCK", "HEARTBEAT", "TTL", "Marker", "marker_live"]

#: the marker a running garbage collection holds
GC_LOCK = "locks/gc"
HEARTBEAT = 10.0
TTL = 60.0


def _body() -> bytes:
    now = time.time()
    return json.dumps({"started": now, "refreshed": now, "host": socket.gethostname(), "pid": os.getpid()}).encode()


def marker_live(store: Store, path: str) -> bool:
    """Whether the marker at ``path`` belongs to a running operation."""
    try:
        body = json.loads(store.read(path))
        refreshed, host, pid = float(body.get("refreshed", body["started"])), body["host"], int(body["pid"])
    except (NotFoundError, ValueError, KeyError, TypeError):
        return False
    if host == socket.gethostname():
        return pid_alive(pid)  # exact on the same machine, whatever the clock says
    return time.time() - refreshed <= TTL


class Marker:
    """Holds a marker at ``path`` while in use, refreshing it in the background.

    ``exclusive``: create it with compare-and-swap (taking over a dead one); False if that fails.
    """

    def __init__(self, store: Store, path: str) -> None:
        self.store, self.path = store, path
        self._body = _body()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self, exclusive: bool = False) -> bool:
        if exclusive:
            if not self.store.compare_and_swap(self.path, None, self._body):
                try:
                    current = self.store.read(self.path)
                except NotFoundError:
                    current = None
                if marker_live(self.store, self.path) or not self.store.compare_and_swap(self.path, current, self._body):
                    return False
        else:
            self.store.write(self.path, self._body)
        self._thread = threading.Thread(target=self._refresh, name="lamina-marker", daemon=True)
        self._thread.start()
        return True

    def _refresh(self) -> None:
        while not self._stop.wait(HEARTBEAT):
            body = json.loads(self._body)
            body["refreshed"] = time.time()
            new = json.dumps(body).encode()
            try:  # compare-and-swap: never resurrect a marker someone removed as dead
                if self.store.compare_and_swap(self.path, self._body, new):
                    self._body = new
            except Exception:  # a transient store error: the next beat retries
                pass

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            self.store.compare_and_swap(self.path, self._body, None)
        except Exception:
            pass  # a leftover marker expires on its own
