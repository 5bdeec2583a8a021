"""The supervisor's event loop: one selector over file descriptors, plus one-shot timers.

The supervisor forks containers from inside this loop, so it must stay single-threaded:
asyncio would do, but it adds its import time, memory and, on Python 3.11, a thread per
child process watched. This loop is the small part of it the supervisor needs.
"""

from __future__ import annotations

import heapq
import itertools
import selectors
import time
from collections.abc import Callable

from ketch.supervisor.plainlog import get_logger

log = get_logger(__name__)


# False at run time, so that the supervisor process does not import typing (see
# ketch.supervisor.records). Type checkers take the branch below as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Protocol

    class Handler(Protocol):
        """An object that owns a file descriptor registered with the loop."""

        def on_readable(self) -> None: ...

        def on_writable(self) -> None: ...


class Timer:
    """A callback the loop runs once at ``deadline`` (monotonic seconds) unless cancelled."""

    def __init__(self, deadline: float, callback: Callable[[], None]) -> None:
        self.deadline = deadline
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class EventLoop:
    """Dispatches readiness of registered file descriptors to their handlers, and timers."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Timer]] = []
        self._sequence = itertools.count()

    def register(
        self, fd: int, handler: Handler, *, read: bool = True, write: bool = False
    ) -> None:
        self._selector.register(fd, _event_mask(read, write), handler)

    def modify(self, fd: int, handler: Handler, *, read: bool, write: bool) -> None:
        """Change what the loop watches ``fd`` for; with neither, it stops watching."""
        mask = _event_mask(read, write)
        registered = self._selector.get_map().get(fd)
        if registered is None:
            if mask:
                self._selector.register(fd, mask, handler)
        elif not mask:
            self._selector.unregister(fd)
        elif registered.events != mask:
            self._selector.modify(fd, mask, handler)

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd``; a descriptor that is not registered is ignored."""
        if fd in self._selector.get_map():
            self._selector.unregister(fd)

    def call_later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer(time.monotonic() + delay, callback)
        heapq.heappush(self._timers, (timer.deadline, next(self._sequence), timer))
        return timer

    def run_once(self, max_wait: float | None = None) -> None:
        """Wait for readiness or the next timer, at most ``max_wait`` seconds, and dispatch."""
        wait = self._time_to_next_timer()
        if max_wait is not None:
            wait = max_wait if wait is None else min(wait, max_wait)
        for key, events in self._selector.select(wait):
            self._dispatch(key, events)
        self._run_due_timers()

    def close(self) -> None:
        self._selector.close()

    def _dispatch(self, key: selectors.SelectorKey, events: int) -> None:
        # An earlier handler in this batch may have closed the descriptor, and its number
        # may already belong to a new owner, so each call checks the registration first.
        handler: Handler = key.data
        if events & selectors.EVENT_READ and self._is_registered(key.fd, handler):
            handler.on_readable()
        if events & selectors.EVENT_WRITE and self._is_registered(key.fd, handler):
            handler.on_writable()

    def _is_registered(self, fd: int, handler: Handler) -> bool:
        current = self._selector.get_map().get(fd)
        return current is not None and current.data is handler

    def _time_to_next_timer(self) -> float | None:
        while self._timers and self._timers[0][2].cancelled:
            heapq.heappop(self._timers)
        if not self._timers:
            return None
        return max(0.0, self._timers[0][0] - time.monotonic())

    def _run_due_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _, _, timer = heapq.heappop(self._timers)
            if not timer.cancelled:
                timer.cancelled = True
                timer.callback()


def _event_mask(read: bool, write: bool) -> int:
    return (selectors.EVENT_READ if read else 0) | (selectors.EVENT_WRITE if write else 0)
