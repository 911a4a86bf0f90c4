"""The server log's share of a visitor's connection cut off mid-request: one line, no stack trace.

A page closed or reloaded while the sketch pad (or a file box) is still uploading cuts the
request's body off; gradio's upload route then raises starlette's ``ClientDisconnect``, and uvicorn
logs it as "Exception in ASGI application" with the whole stack. Nothing is wrong on the server
(the visitor is gone, and gradio drops the partial upload), so :class:`CutOffUploads` turns that
record into one INFO line of the app's logger. Every other error keeps its stack trace.
"""

from __future__ import annotations

import logging

log = logging.getLogger("flowmaps.app")

#: The logger uvicorn reports a request's unhandled exception on.
SERVER_LOGGER = "uvicorn.error"


def _is_client_disconnect(exc: BaseException | None, depth: int = 0) -> bool:
    """Whether ``exc`` is starlette's ClientDisconnect, directly, in an exception group, or as
    the cause or context of another exception (anyio and starlette wrap it)."""
    from starlette.requests import ClientDisconnect

    if exc is None or depth > 8:
        return False
    if isinstance(exc, ClientDisconnect):
        return True
    inner = list(getattr(exc, "exceptions", ()) or ())
    inner += [e for e in (exc.__cause__, exc.__context__) if e is not None]
    return any(_is_client_disconnect(e, depth + 1) for e in inner)


class CutOffUploads(logging.Filter):
    """A filter for :data:`SERVER_LOGGER`: drops a record whose exception is a client disconnect
    and logs one INFO line in its place; passes every other record."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not _is_client_disconnect(exc):
            return True
        log.info("a request was cut off by its page (closed or reloaded mid-upload); nothing to do")
        return False


def install() -> None:
    """Add :class:`CutOffUploads` to uvicorn's error logger, once per process."""
    logger = logging.getLogger(SERVER_LOGGER)
    if not any(isinstance(f, CutOffUploads) for f in logger.filters):
        logger.addFilter(CutOffUploads())
