"""Budgeted views of `anthropic.Anthropic` and `AsyncAnthropic`: `messages` and `beta.messages` `create`,
`stream` and `parse` go through a Budget; the rest of the client is its own, untouched.

Entry points that would spend without being metered (batches, raw responses, the tool runner) are refused.
"""

from __future__ import annotations

import functools
import inspect
from concurrent.futures import Future
from typing import Any

import anthropic

from capguard.core.anthropic_usage import StreamTracker, read_usage
from capguard.sdk.budget_api import Admitted, CallBudget
from capguard.sdk.streams import (
    AsyncMeteredStream,
    AsyncMeteredStreamManager,
    End,
    MeteredStream,
    MeteredStreamManager,
    await_done,
    wait_done,
)

_REFUSED = ("batches", "with_raw_response", "with_streaming_response", "tool_runner")
_CLIENT_REFUSED = ("with_raw_response", "with_streaming_response")  # they reach messages around the Budget


def _refuse(where: str, name: str) -> TypeError:
    return TypeError(f"capguard's Budget does not meter {where}.{name}; use messages.create(), stream() or parse()")


def wrap_client(client: Any, budget: CallBudget[Any]) -> BudgetedClient:
    if isinstance(client, BudgetedClient):
        client = client.unwrapped
    return BudgetedClient(client, budget)


class BudgetedClient:
    """The client, with every Messages call counted, clamped and recorded by `budget`."""

    def __init__(self, client: Any, budget: CallBudget[Any]) -> None:
        self._client = client
        self._budget = budget
        # create() is wrapped by a decorator that hides it is a coroutine function; count_tokens is not
        self._async = inspect.iscoroutinefunction(client.messages.count_tokens)
        headers = getattr(client, "default_headers", None) or {}
        self._default_beta = next((v for k, v in headers.items() if k.lower() == "anthropic-beta"), None)

    @property
    def unwrapped(self) -> Any:
        return self._client

    @property
    def messages(self) -> Any:
        return self._messages(self._client.messages, beta_api=False)

    @property
    def beta(self) -> _Beta:
        return _Beta(self, self._client.beta)

    def _messages(self, inner: Any, *, beta_api: bool) -> Any:
        kind = AsyncMessages if self._async else Messages
        return kind(inner, self._budget, beta_api=beta_api, default_beta=self._default_beta)

    def with_options(self, **options: Any) -> BudgetedClient:
        return BudgetedClient(self._client.with_options(**options), self._budget)

    copy = with_options

    def __getattr__(self, name: str) -> Any:
        if name in _CLIENT_REFUSED:
            raise _refuse("client", name)
        return getattr(self._client, name)


class _Beta:
    def __init__(self, owner: BudgetedClient, inner: Any) -> None:
        self._owner, self._inner = owner, inner

    @property
    def messages(self) -> Any:
        return self._owner._messages(self._inner.messages, beta_api=True)

    def __getattr__(self, name: str) -> Any:
        if name in _CLIENT_REFUSED:
            raise _refuse("client.beta", name)
        return getattr(self._inner, name)


class _MessagesBase:
    def __init__(self, inner: Any, budget: CallBudget[Any], *, beta_api: bool, default_beta: str | None) -> None:
        self._inner, self._budget = inner, budget
        self._beta_api, self._default_beta = beta_api, default_beta

    def __getattr__(self, name: str) -> Any:
        if name in _REFUSED:
            raise _refuse("messages", name)
        return getattr(self._inner, name)

    def _admission(self, kwargs: dict[str, Any], counted: int | None) -> Admitted:
        return self._budget.admit(
            kwargs, prompt_tokens=counted, beta_api=self._beta_api, default_beta=self._default_beta
        )

    def _settle(self, admission: Admitted, message: Any) -> Future:
        return self._budget.settle(
            admission,
            read_usage(message.usage),
            message_id=message.id,
            model=message.model,
            stop_reason=message.stop_reason,
        )

    def _ender(self, admission: Admitted) -> End:
        def end(tracker: StreamTracker, error: BaseException | None) -> Future | None:
            if tracker.usage is None:  # no reply started: an API error was not billed, anything else may be
                return self._budget.fail(admission, charged=not isinstance(error, anthropic.APIStatusError))
            return self._budget.settle(
                admission,
                tracker.usage,
                message_id=tracker.message_id,
                model=tracker.model,
                stop_reason=tracker.stop_reason,
                complete=tracker.complete,
                stream=True,
            )

        return end


class Messages(_MessagesBase):
    """`client.messages` / `client.beta.messages` of a sync client."""

    def create(self, **kwargs: Any) -> Any:
        return self._call(self._inner.create, kwargs)

    def parse(self, **kwargs: Any) -> Any:
        return self._call(self._inner.parse, kwargs)

    def stream(self, **kwargs: Any) -> MeteredStreamManager:
        def start() -> tuple[Any, End]:
            admission = self._admit(kwargs)
            return self._inner.stream(**admission.kwargs), self._ender(admission)

        return MeteredStreamManager(start)

    def _call(self, method: Any, kwargs: dict[str, Any]) -> Any:
        admission = self._admit(kwargs)
        try:
            result = method(**admission.kwargs)
        except BaseException as error:
            wait_done(self._budget.fail(admission, charged=_maybe_billed(error)))
            raise
        if admission.kwargs.get("stream"):
            return MeteredStream(result, self._ender(admission))
        wait_done(self._settle(admission, result))
        return result

    def _admit(self, kwargs: dict[str, Any]) -> Admitted:
        self._budget.precheck(kwargs.get("model"))
        return self._admission(kwargs, self._count(kwargs) if self._budget.counts_tokens else None)

    def _count(self, kwargs: dict[str, Any]) -> int | None:
        try:
            return self._inner.count_tokens(**count_arguments(self._inner.count_tokens, kwargs)).input_tokens
        except anthropic.APIError:
            return None  # the conservative estimate takes over


class AsyncMessages(_MessagesBase):
    """`client.messages` / `client.beta.messages` of an async client."""

    async def create(self, **kwargs: Any) -> Any:
        return await self._call(self._inner.create, kwargs)

    async def parse(self, **kwargs: Any) -> Any:
        return await self._call(self._inner.parse, kwargs)

    def stream(self, **kwargs: Any) -> AsyncMeteredStreamManager:
        async def start() -> tuple[Any, End]:
            admission = await self._admit(kwargs)
            return self._inner.stream(**admission.kwargs), self._ender(admission)

        return AsyncMeteredStreamManager(start)

    async def _call(self, method: Any, kwargs: dict[str, Any]) -> Any:
        admission = await self._admit(kwargs)
        try:
            result = await method(**admission.kwargs)
        except BaseException as error:
            await await_done(self._budget.fail(admission, charged=_maybe_billed(error)))
            raise
        if admission.kwargs.get("stream"):
            return AsyncMeteredStream(result, self._ender(admission))
        await await_done(self._settle(admission, result))
        return result

    async def _admit(self, kwargs: dict[str, Any]) -> Admitted:
        # the ledger is read on its own thread and awaited: a slow read never blocks the event loop
        await self._budget.aprecheck(kwargs.get("model"))
        counted = await self._count(kwargs) if self._budget.counts_tokens else None
        return await self._budget.aadmit(
            kwargs, prompt_tokens=counted, beta_api=self._beta_api, default_beta=self._default_beta
        )

    async def _count(self, kwargs: dict[str, Any]) -> int | None:
        try:
            counted = await self._inner.count_tokens(**count_arguments(self._inner.count_tokens, kwargs))
            return counted.input_tokens
        except anthropic.APIError:
            return None


def _maybe_billed(error: BaseException) -> bool:
    """A lost connection or a timeout may have been billed; an API error status or a bad argument was not."""
    return isinstance(error, anthropic.APIConnectionError) or not isinstance(error, Exception)


def count_arguments(count_tokens: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The part of a create() request that count_tokens takes (never extra_body: it may hold create-only fields)."""
    accepted = _parameters(getattr(count_tokens, "__func__", count_tokens))
    return {k: v for k, v in kwargs.items() if k in accepted and k not in ("extra_body", "extra_query")}


@functools.lru_cache(maxsize=8)
def _parameters(function: Any) -> frozenset[str]:
    return frozenset(inspect.signature(function).parameters)
