"""structlog configured once per process: JSON lines, with case_id/event_id/correlation_id bound per message."""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from typing import Any

import structlog

_ROOT = Path(__file__).resolve().parent.parent


def describe(exc: BaseException) -> str:
    """What logs and dead-letter headers may say about an exception: its type and where it was raised, never its
    text — an exception raised over opened personal data may quote it (a validation error quotes its input).
    Exceptions whose text is built only from field names and rules say so (`loggable = True`) and keep it, as do
    network errors (a refused connection, a broker that does not answer: they never carry a payload)."""
    if getattr(exc, "loggable", False) or isinstance(exc, OSError) or type(exc).__module__.startswith("aiokafka."):
        return f"{type(exc).__name__}: {exc}"[:500]
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    path = Path(last.filename)
    where = path.relative_to(_ROOT) if path.is_relative_to(_ROOT) else path.name
    return f"{type(exc).__name__} at {where}:{last.lineno} in {last.name}"


def _exception_described(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    """`exc_info` on a log call is rendered by `describe`, never as a traceback with the exception's text."""
    exc_info = event.pop("exc_info", None)
    if exc_info:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if exc is not None:
            event["exception"] = describe(exc)
    return event


def configure_logging(service: str, level: str = "INFO", json_lines: bool = True) -> None:
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json_lines else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            _exception_described,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(service=service)
    # Libraries log through stdlib logging (uvicorn logs a failed request's traceback): quiet, on stderr, and
    # with exceptions described rather than quoted.
    root = logging.getLogger()
    if not any(isinstance(h, _LibraryHandler) for h in root.handlers):
        root.addHandler(_LibraryHandler())
    root.setLevel(logging.WARNING)


class _LibraryHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (as structlog's logger writes to sys.stdout)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.addFilter(_exception_text_dropped)

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def _exception_text_dropped(record: logging.LogRecord) -> bool:
    if record.exc_info and record.exc_info[1] is not None:
        record.msg, record.args = f"{record.getMessage()} ({describe(record.exc_info[1])})", None
        record.exc_info, record.exc_text = None, None
    return True
