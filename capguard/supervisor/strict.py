"""Strict mode for one run: the metering proxy in front of the agent's providers, its budget kept equal to the
run's caps, its events handed to the supervisor's loop (the same meter, caps, spool and ledger as file events).

The proxy serves on a thread of capguard's own process: if it stops, its port closes and the agent gets connection
refused (never an unmetered path), and `problem()` tells the supervisor to stop the run (meter_error).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from capguard.agents.base import Front
from capguard.core import model_caps
from capguard.core.caps import Caps, month_binds, usd_ceiling
from capguard.core.enums import StopReason
from capguard.core.errors import ProxyUnavailable
from capguard.core.events import Reply
from capguard.core.model_caps import ModelRules
from capguard.core.pricing import Priced, Pricer
from capguard.core.redact import shown_url
from capguard.metering.proxy import Gate, MeteringProxy, Refused
from capguard.metering.proxy.dialects import CHAT

log = logging.getLogger(__name__)
__all__ = ["StrictMeter", "call_row", "model_refusal", "refusal_row", "shown_url", "stop_reason"]


class StrictMeter:
    """The run's proxy and its budget. Events (a settled call's `Reply`, a `Refused`) go to the sink given by
    `connect` (the supervisor's queue); any that come before are kept for it."""

    def __init__(
        self,
        fronts: Sequence[Front],
        pricer: Pricer,
        caps: Caps,
        *,
        models: ModelRules | None = None,
        task_budget: int | None = None,
    ) -> None:
        if not fronts:
            raise ValueError("strict mode needs a provider to front")
        self.fronts = list(fronts)
        providers = {CHAT: "openai"} if any(f.dialect == CHAT for f in fronts) else None
        self.gate = Gate(
            pricer,
            cap_micro=usd_ceiling(caps),
            token_cap=caps.tokens,
            models=models,  # allow/deny and the per-model caps of [models]
            task_budget=task_budget,
            providers=providers,
            on_event=self._event,
        )
        self.proxy = MeteringProxy(
            self.gate,
            {f.mount: f.upstream for f in fronts},
            dialects={f.mount: f.dialect for f in fronts},
            secret_headers={f.mount: (f.header, f.restore) for f in fronts if f.header},
            providers={f.mount: f.provider for f in fronts if f.provider},
            signers={f.mount: f.signer for f in fronts if f.signer is not None},
        )
        self._lock = threading.Lock()
        self._sink: Callable[[Reply | Refused], None] | None = None
        self._early: list[Reply | Refused] = []
        self._started = False
        self._stopped = False

    # ---- lifecycle
    def start(self) -> dict[str, str]:
        """Serve; returns the agent's base-URL variables pointing at the proxy (they hold the run's secret)."""
        try:
            self.proxy.start()
        except OSError as err:
            raise ProxyUnavailable(
                f"capguard's metering proxy could not listen on 127.0.0.1 ({err.strerror or err}); the agent was"
                " not started (--meter files meters from its logs instead)"
            ) from None
        self._started = True
        log.info("strict mode: the metering proxy serves on 127.0.0.1:%d", self.proxy.port)
        env = {name: self.proxy.base_url(f.mount) + f.path for f in self.fronts for name in f.env}
        env.update({f.secret_env: self.proxy.secret for f in self.fronts if f.header and f.secret_env})
        env.update({name: value for f in self.fronts for name, value in f.child_env})
        return env

    def urls(self) -> dict[str, str]:
        """The proxy's URL of each front's mount, once serving: without the secret where it goes in a header."""
        return {
            f.mount: self.proxy.header_url(f.mount) if f.header else self.proxy.base_url(f.mount) for f in self.fronts
        }

    def stop(self) -> None:
        """Stop serving: calls still in flight are cut and settled at their bound (their events follow)."""
        if self._started and not self._stopped:
            self._stopped = True
            self.proxy.stop()

    def problem(self) -> str | None:
        """Why the run cannot be counted any more: the proxy stopped while the agent runs."""
        if self._started and not self._stopped and not self.proxy.alive:
            return "capguard's metering proxy stopped: the agent's requests are refused, none goes unmetered"
        return None

    # ---- events
    def connect(self, sink: Callable[[Reply | Refused], None]) -> None:
        with self._lock:
            self._sink, early, self._early = sink, self._early, []
        for event in early:
            sink(event)

    def _event(self, event: Reply | Refused) -> None:
        with self._lock:
            sink = self._sink
            if sink is None:
                self._early.append(event)
                return
        sink(event)

    # ---- the budget follows the run's caps
    def sync(self, caps: Caps) -> None:
        """The caps changed (the month was read again): the proxy's USD cap is the one in force."""
        self.gate.set_cap(usd_ceiling(caps))
        self.gate.set_token_cap(caps.tokens)


def model_refusal(model: str | None, rules: ModelRules) -> str | None:
    """Why the model named at start would be refused by the proxy ([models] allow/deny), or None."""
    return model_caps.refusal(rules, model) if model else None


def stop_reason(refusal: Refused, caps: Caps) -> StopReason | None:
    """The cap a refusal hit, as the run's stop reason (None: refused for another reason, e.g. a denied model)."""
    if not refusal.at_cap:
        return None
    if refusal.cap == "tokens":
        return StopReason.TOKENS
    if refusal.cap == "model":
        return StopReason.MODEL
    return StopReason.MONTHLY if month_binds(caps) else StopReason.USD


def call_row(reply: Reply, priced: Priced) -> dict[str, Any]:
    """One call through the proxy, for the report."""
    details = reply.details or {}
    reserved = details.get("reserved_micro")
    return {
        "model": priced.model or reply.model,
        "input_tokens": reply.input_tokens,
        "output_tokens": reply.output_tokens,
        "cache_read_tokens": reply.cache_read_tokens,
        "cache_write_tokens": reply.cache_write_tokens,
        "cost_usd": None if priced.cost_micro is None else priced.cost_micro / 1e6,
        "reserved_usd": None if reserved is None else reserved / 1e6,
        "max_tokens": details.get("max_out"),
        "lowered_max_tokens": bool(details.get("lowered")),
        "charged": details.get("charged"),  # "usage": what the server billed; "bound": cut short, or unreadable
        "prompt_bound": details.get("prompt_bound"),  # the prompt's tokens at most, as held
        "prompt_counted": bool(details.get("prompt_counted")),  # that bound was the provider's count, not bytes
    }


def refusal_row(refusal: Refused) -> dict[str, Any]:
    return {
        "model": refusal.model,
        "why": refusal.why,
        "at_cap": refusal.at_cap,
        "cap": refusal.cap,
        **({"model_cap": refusal.model_cap} if refusal.model_cap else {}),
        **(
            {
                "worst_usd": None if refusal.worst_micro is None else refusal.worst_micro / 1e6,
                "headroom_usd": None if refusal.headroom_micro is None else refusal.headroom_micro / 1e6,
                "prompt_bound": refusal.prompt_tokens,
                "prompt_counted": refusal.counted,
            }
            if refusal.at_cap
            else {}
        ),
    }
