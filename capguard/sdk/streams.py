"""Streamed calls under a Budget: the raw event streams of `create(stream=True)` and the `stream()` helpers,
sync and async. Each settles its call exactly once: at the last event, on close, or when its `with` ends.

`end(tracker, error)` is given by the wrapper: it bills what the tracker saw (a reply cut short at its
max_tokens) and returns the ledger write to wait for.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Any

from capguard.core.anthropic_usage import StreamTracker, read_usage

End = Callable[[StreamTracker, "BaseException | None"], "Future[bool] | None"]


def tracker_of(stream: Any) -> StreamTracker:
    """What a stream helper's accumulated message says (nothing before message_start)."""
    snapshot = getattr(stream, "_current_snapshot_or_none", None)
    try:
        message = snapshot() if snapshot else stream.current_message_snapshot
    except AssertionError:  # older SDKs assert there is a snapshot
        message = None
    if message is None:
        return StreamTracker()
    return StreamTracker(
        message_id=message.id, model=message.model, stop_reason=message.stop_reason, usage=read_usage(message.usage)
    )


class _Once:
    def __init__(self, end: End) -> None:
        self._end = end
        self._done = False
        self.tracker = StreamTracker()

    def finish(self, error: BaseException | None = None, tracker: StreamTracker | None = None) -> Future | None:
        if self._done:
            return None
        self._done = True
        return self._end(tracker or self.tracker, error)


def wait_done(future: Future | None) -> None:
    """Block until a settlement (the ledger write a call's end hands to the Budget) is done; re-raises its error."""
    if future is not None:
        future.result()


async def await_done(future: Future | None) -> None:
    """wait_done for async code."""
    if future is not None:
        await asyncio.wrap_future(future)


class MeteredStream:
    """`Stream[RawMessageStreamEvent]` that settles its call; everything else is the SDK's stream."""

    def __init__(self, inner: Any, end: End) -> None:
        self._inner = inner
        self._once = _Once(end)
        self._iterator = self._events()

    def _events(self) -> Iterator[Any]:
        try:
            for event in self._inner:
                self._once.tracker.see(event)
                yield event
        except GeneratorExit:  # dropped unfinished (garbage collection): settle, do not block
            self._once.finish()
            raise
        except BaseException as error:
            wait_done(self._once.finish(error))
            raise
        wait_done(self._once.finish())

    def __iter__(self) -> Iterator[Any]:
        return self._iterator

    def __next__(self) -> Any:
        return next(self._iterator)

    def __enter__(self) -> MeteredStream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._inner.close()
        finally:
            wait_done(self._once.finish())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class AsyncMeteredStream:
    """`AsyncStream[RawMessageStreamEvent]` that settles its call."""

    def __init__(self, inner: Any, end: End) -> None:
        self._inner = inner
        self._once = _Once(end)
        self._iterator = self._events()

    async def _events(self) -> AsyncIterator[Any]:
        try:
            async for event in self._inner:
                self._once.tracker.see(event)
                yield event
        except GeneratorExit:
            self._once.finish()
            raise
        except BaseException as error:
            await await_done(self._once.finish(error))
            raise
        await await_done(self._once.finish())

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterator

    async def __anext__(self) -> Any:
        return await self._iterator.__anext__()

    async def __aenter__(self) -> AsyncMeteredStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.close()

    async def close(self) -> None:
        try:
            await self._inner.close()
        finally:
            await await_done(self._once.finish())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class MeteredStreamManager:
    """`messages.stream(...)`: the call is admitted (or refused) when the `with` block starts the request."""

    def __init__(self, start: Callable[[], tuple[Any, End]]) -> None:
        self._start = start
        self._manager: Any = None
        self._stream: Any = None
        self._once: _Once | None = None

    def __enter__(self) -> Any:
        self._manager, end = self._start()
        self._once = _Once(end)
        try:
            self._stream = self._manager.__enter__()
        except BaseException as error:
            wait_done(self._once.finish(error))
            raise
        return self._stream

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            return self._manager.__exit__(exc_type, exc, tb)
        finally:
            if self._once is not None:
                wait_done(self._once.finish(exc, tracker_of(self._stream)))


class AsyncMeteredStreamManager:
    """`async with client.messages.stream(...)`: admitted when the block starts the request."""

    def __init__(self, start: Callable[[], Awaitable[tuple[Any, End]]]) -> None:
        self._start = start
        self._manager: Any = None
        self._stream: Any = None
        self._once: _Once | None = None

    async def __aenter__(self) -> Any:
        self._manager, end = await self._start()
        self._once = _Once(end)
        try:
            self._stream = await self._manager.__aenter__()
        except BaseException as error:
            await await_done(self._once.finish(error))
            raise
        return self._stream

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> Any:
        try:
            return await self._manager.__aexit__(exc_type, exc, tb)
        finally:
            if self._once is not None:
                await await_done(self._once.finish(exc, tracker_of(self._stream)))
