"""What the SDK wrappers ask of a budget: the calls `capguard.budget.library.Budget` answers, as a Protocol.

capguard.budget imports the wrappers (Budget.wrap), so the wrappers name the budget by this shape, not by import.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any, Protocol, TypeVar

from capguard.core.anthropic_usage import CallUsage


class Admitted(Protocol):
    """A call the budget let go; the wrappers send its `kwargs` (max_tokens lowered, task budget added)."""

    @property
    def kwargs(self) -> dict[str, Any]: ...


AdmissionT = TypeVar("AdmissionT", bound=Admitted)


class CallBudget(Protocol[AdmissionT]):
    """Before a call: `precheck`, then `admit`; after it: `settle` (a reply) or `fail` (an error)."""

    @property
    def counts_tokens(self) -> bool: ...

    def precheck(self, model: str | None) -> None: ...

    async def aprecheck(self, model: str | None) -> None: ...

    async def aadmit(
        self, kwargs: dict[str, Any], *, prompt_tokens: int | None, beta_api: bool, default_beta: str | None = None
    ) -> AdmissionT: ...

    def admit(
        self, kwargs: dict[str, Any], *, prompt_tokens: int | None, beta_api: bool, default_beta: str | None = None
    ) -> AdmissionT: ...

    def settle(
        self,
        admission: AdmissionT,
        usage: CallUsage | None,
        *,
        message_id: str | None = None,
        model: str | None = None,
        stop_reason: str | None = None,
        complete: bool = True,
        stream: bool = False,
    ) -> Future[bool]: ...

    def fail(self, admission: AdmissionT, *, charged: bool) -> Future[bool] | None: ...
