"""Who is on the server: the live sessions, their cap, and freeing a visitor's session when it leaves.

A :class:`~app.live.LiveSession` (a visitor's model, trainer and data) lives in the page's
``gr.State``. Gradio frees it in two ways, and both end here:

- the visitor's tab closes (or reloads): gradio's heartbeat connection drops and the page's
  ``unload`` event calls :meth:`Sessions.leave` with the visitor's browser-session hash. The
  session is closed after a grace period (two heartbeats) unless the visitor sends a request
  in between: a dropped connection that the browser re-opens also fires the unload event;
- the visitor stays idle: the state's ``time_to_live`` (``Limits.idle_seconds``) runs out and
  gradio calls the state's ``delete_callback``, :meth:`Sessions.expire`.

Either way :meth:`Sessions.close` stops the session's run, drops its model, trainer and data,
runs the app's cleanup hook (cached results, download folders) and asks for the freed memory to
be handed back to the operating system. A state's time to live restarts whenever an event
writes the state, so every event of the page returns the session as an output.

:meth:`Sessions.admit` caps the number of sessions that hold a model at once
(``Limits.max_sessions``); one more is refused with :class:`SpaceFull`, a message that says so.

Nothing here imports gradio (tests/app/test_space_safety.py drives it directly).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from app.live import LiveSession
from app.validation import InputError

log = logging.getLogger("flowmaps.app")


class SpaceFull(InputError):
    """Every live-session slot is taken; the message says when to come back."""


class SessionClosed(InputError):
    """An event arrived for a session that has already been freed."""


def _minutes(seconds: float) -> str:
    if seconds >= 120:
        return f"{seconds / 60:.0f} minutes"
    return f"{seconds:.0f} seconds"


class MemoryTrimmer:
    """Hands freed heap memory back to the operating system, off the request path.

    Freed tensors go back to the C allocator, which keeps most of them for reuse; glibc's
    ``malloc_trim`` returns the unused pages. One daemon thread runs a garbage collection (a
    trainer can sit in a reference cycle) and a trim at most every ``min_interval`` seconds,
    after the last request. Elsewhere than glibc it only collects.
    """

    def __init__(self, min_interval: float = 1.0) -> None:
        self.min_interval = min_interval
        self._wanted = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.trims = 0
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
            self._trim = libc.malloc_trim if libc is not None and hasattr(libc, "malloc_trim") else None
        except OSError:
            self._trim = None

    def request(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="flowmaps-memory-trim", daemon=True)
                self._thread.start()
        self._wanted.set()

    def trim_now(self) -> None:
        gc.collect()
        if self._trim is not None:
            self._trim(0)
        self.trims += 1

    def _loop(self) -> None:
        while True:
            self._wanted.wait()
            time.sleep(self.min_interval)  # let a wave of departures finish first
            self._wanted.clear()
            try:
                self.trim_now()
            except Exception:  # trimming is an optimisation; never let it end the thread
                log.exception("memory trim failed")


class Sessions:
    """The server's live sessions (see the module docstring).

    Args:
        max_live: most sessions holding a model at once.
        idle_seconds: the idle time after which gradio frees a session (for the messages).
        on_close: called with each session as it is closed (after its model is dropped), e.g.
            to forget its cached results.
        trimmer: hands the freed memory back; None to skip.
        leave_grace: seconds between a visitor's unload event and the close of its session (0:
            at once); a request in between keeps the session.
    """

    def __init__(
        self,
        max_live: int,
        idle_seconds: float,
        on_close: Callable[[LiveSession], None] | None = None,
        trimmer: MemoryTrimmer | None = None,
        leave_grace: float = 0.0,
    ) -> None:
        self.max_live = int(max_live)
        self.leave_grace = float(leave_grace)
        self.idle_seconds = float(idle_seconds)
        self.on_close = on_close
        self.trimmer = trimmer
        self._lock = threading.Lock()
        self._live: dict[int, weakref.ref[LiveSession]] = {}  # token -> session holding a model
        self._visitors: dict[str, weakref.ref[LiveSession]] = {}  # browser-session hash -> session
        self.closed_count = 0

    # ---------------------------------------------------------------- counting
    def live_count(self) -> int:
        """Sessions that hold (or are building) a model now."""
        with self._lock:
            return sum(1 for ref in self._live.values() if ref() is not None)

    def _forget(self, token: int) -> Callable[[weakref.ref], None]:
        def gone(_ref: weakref.ref) -> None:  # the session was collected without a close
            self._live.pop(token, None)  # a single dict operation: no lock, safe inside a GC callback

        return gone

    def admit(self, session: LiveSession) -> None:
        """Let ``session`` build a model, or raise :class:`SpaceFull` when every slot is taken.

        A session that already holds a slot keeps it. Raises :class:`SessionClosed` for a
        session that was freed already.
        """
        if session.closed:
            raise SessionClosed(self.closed_message())
        with self._lock:
            if session.token in self._live:
                return
            alive = {t: r for t, r in self._live.items() if r() is not None}
            self._live = alive
            if len(alive) >= self.max_live:
                raise SpaceFull(
                    f"the Space is full: {len(alive)} visitors are training models right now, the most it "
                    f"holds at once. Try again in a few minutes: a visitor's place is freed when their tab "
                    f"closes or after {_minutes(self.idle_seconds)} without activity"
                )
            self._live[session.token] = weakref.ref(session, self._forget(session.token))

    def closed_message(self) -> str:
        return (
            f"this session has ended (its tab was closed, or it was idle for more than "
            f"{_minutes(self.idle_seconds)}) and its model was freed: reload the page to start again"
        )

    # ---------------------------------------------------------------- events
    @contextmanager
    def using(self, session: LiveSession, visitor: str | None = None) -> Iterator[LiveSession]:
        """Mark ``session`` busy for the length of one event (an idle expiry then leaves it alone)
        and remember which browser session it belongs to. Raises :class:`SessionClosed` for a
        session already freed."""
        if session.closed:
            raise SessionClosed(self.closed_message())
        if visitor:
            with self._lock:
                self._visitors[visitor] = weakref.ref(session)
            session.visitor = visitor
        with session.busy_lock:
            session.busy += 1
            session.last_seen = time.monotonic()
        try:
            yield session
        finally:
            with session.busy_lock:
                session.busy -= 1

    def leave(self, visitor: str | None) -> bool:
        """The visitor's tab closed (gradio's unload event): close its session, after
        ``leave_grace`` seconds unless a request of the visitor arrives first. True if a session
        was found (and closed, or its close scheduled)."""
        if not visitor:
            return False
        with self._lock:
            ref = self._visitors.pop(visitor, None)
        session = ref() if ref is not None else None
        if session is None or session.closed:
            return False
        if self.leave_grace <= 0:
            return self.close(session, "tab closed")
        self._after_leave(weakref.ref(session), time.monotonic(), wait=True)
        return True

    def _after_leave(self, ref: weakref.ref[LiveSession], left_at: float, wait: bool = False) -> None:
        session = ref()
        if session is None or session.closed or session.last_seen > left_at:
            return  # freed already, or the visitor came back
        if wait or session.busy:  # an event still streams to the page: look again later
            timer = threading.Timer(self.leave_grace, self._after_leave, (ref, left_at))
            timer.daemon = True
            timer.start()
            return
        self.close(session, "tab closed")

    def expire(self, session: LiveSession) -> bool:
        """The session's state outlived its time to live (gradio's delete callback): close it,
        unless an event is using it right now (that event writes the state back, which starts
        its time to live again). True if it was closed."""
        if not isinstance(session, LiveSession):
            return False
        if session.busy or session.running:
            return False
        return self.close(session, "idle")

    def close(self, session: LiveSession, why: str) -> bool:
        """Stop and free ``session``; False if it was closed already."""
        if not session.close():
            return False
        with self._lock:
            self._live.pop(session.token, None)
            ref = self._visitors.get(session.visitor)
            if ref is not None and ref() in (session, None):  # no entry outlives its session
                del self._visitors[session.visitor]
            self.closed_count += 1
            live = sum(1 for ref in self._live.values() if ref() is not None)
        if self.on_close is not None:
            try:
                self.on_close(session)
            except Exception:  # cleanup must not keep the session alive
                log.exception("cleanup of session %d failed", session.token)
        if self.trimmer is not None:
            self.trimmer.request()
        log.info("session %d freed (%s); %d live", session.token, why, live)
        return True
