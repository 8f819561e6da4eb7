"""The proxy's budget: what was settled, what calls in flight hold, and whether a request may go (with its output
limit lowered to fit). Thread-safe, no I/O: the server calls admit() before forwarding and settle() after.
"""

from __future__ import annotations

import fnmatch
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from capguard.core import sanitize
from capguard.core.anthropic_usage import CallUsage
from capguard.core.events import Reply
from capguard.core.ids import new_id
from capguard.core.pricing import Pricer, split_provider
from capguard.core.reservations import Clamp, Hold, Reservations, clamp_max_tokens, lowered_request
from capguard.core.units import format_usd
from capguard.metering.proxy import bounds
from capguard.metering.proxy.dialects import ANTHROPIC, RESPONSES, Ask, ask, with_max_out
from capguard.metering.proxy.usage import Seen

DEFAULT_MIN_OUTPUT = 1_024  # below this a reply is rarely of use: refuse rather than send a crippled request
DEFAULT_MAX_OUTPUT = 32_000  # a request without a limit, for a model whose context window nobody knows


@dataclass(frozen=True)
class Refused:
    """A request answered with an error instead of being forwarded; `at_cap` when the budget was the reason
    (the run should stop, as at any cap)."""

    dialect: str
    model: str | None
    why: str
    at_cap: bool
    worst_micro: int | None = None
    headroom_micro: int | None = None
    at: float = 0.0
    cap: str | None = None  # at a cap: "usd" (the money cap in force) or "tokens"


@dataclass
class Admission:
    """A request let through: the body to send, its output limit, and the worst case held for it."""

    dialect: str
    ask: Ask
    model: str  # as priced (a provider prefix added when configured)
    body: dict[str, Any]
    max_out: int
    lowered: bool
    hold: Hold
    input: bounds.InputBound
    worst: bounds.WorstCost | None
    settled: bool = field(default=False, repr=False)


class Gate:
    """Cap minus settled spend minus holds is the headroom; a request whose worst case does not fit gets a lower
    output limit, or a refusal when even `min_output` tokens do not fit. A token cap (`token_cap`, all token
    kinds) is held the same way: the prompt's bound plus the output limit. `on_event` receives each settled call as
    a `Reply` and each refusal as a `Refused` (outside the lock: it may block briefly, never call back in)."""

    def __init__(
        self,
        pricer: Pricer,
        *,
        cap_micro: int | None,
        token_cap: int | None = None,
        min_output: int = DEFAULT_MIN_OUTPUT,
        default_max_output: int = DEFAULT_MAX_OUTPUT,
        providers: dict[str, str] | None = None,
        allow: Sequence[str] = (),
        deny: Sequence[str] = (),
        on_event: Callable[[Reply | Refused], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if min_output < 1 or default_max_output < 1:
            raise ValueError("min_output and default_max_output must be positive")
        self._pricer = pricer
        self._cap = cap_micro
        self._min_output = min_output
        self._default_max = default_max_output
        self._providers = {ANTHROPIC: "anthropic", **(providers or {})}
        self._allow, self._deny = tuple(allow), tuple(deny)
        self._emit = on_event or (lambda event: None)
        self._clock = clock
        self._lock = threading.Lock()  # the supervisor sets the budget from its own thread
        self._holds = Reservations()
        self._spent = 0
        self._token_cap = token_cap
        self._tokens = 0  # settled tokens
        self._tokens_held: dict[int, int] = {}  # by hold number: prompt bound + output limit of calls in flight
        self.conversations = bounds.Conversations()

    # ---- the budget, as the supervisor sees it
    @property
    def spent_micro(self) -> int:
        return self._spent

    @property
    def held_micro(self) -> int:
        return self._holds.held_micro

    @property
    def cap_micro(self) -> int | None:
        return self._cap

    def set_cap(self, cap_micro: int | None) -> None:
        """The most this run may spend through the proxy, settled calls included (None: no USD cap)."""
        with self._lock:
            self._cap = cap_micro

    @property
    def spent_tokens(self) -> int:
        return self._tokens

    def set_token_cap(self, tokens: int | None) -> None:
        """The most tokens (all kinds) this run may use through the proxy, settled calls included."""
        with self._lock:
            self._token_cap = tokens

    def set_remaining(self, remaining_micro: int) -> None:
        """What may still be spent from now on (the monthly allowance changed): calls in flight come out of it."""
        with self._lock:
            self._cap = self._spent + max(0, remaining_micro)

    # ---- around each call
    def admit(self, dialect: str, body: dict[str, Any]) -> Admission | Refused:
        """Hold the request's worst case and return the body to send, or refuse it (emitted as an event)."""
        try:
            wants = ask(dialect, body)
            model = self._priced_name(dialect, wants.model)
            self._check_listed(wants.model)
            prompt = bounds.input_bound(dialect, body, self.conversations)
        except ValueError as err:
            return self._refuse(dialect, body.get("model"), str(err), at_cap=False)
        worst = bounds.worst_cost(self._pricer, model, prompt.tokens, wants, dialect)
        requested = wants.max_out or self._model_max(model)
        with self._lock:
            headroom = self._holds.headroom(self._spent, self._cap)
            asked, tokens_room = requested, self._tokens_room(prompt.tokens, wants.choices)
            if tokens_room is not None:
                requested = min(requested, tokens_room)
            if tokens_room is not None and (tokens_room < 1 or tokens_room < min(self._min_output, asked)):
                refusal = Refused(
                    dialect, wants.model, self._no_tokens(prompt.tokens, min(self._min_output, asked)), True,
                    at=self._clock(), cap="tokens",
                )  # fmt: skip
            elif worst is None and headroom is not None:
                why = f"capguard cannot price model {wants.model!r} (add a [prices] entry) and a USD cap is set"
                refusal = Refused(dialect, wants.model, why, False, at=self._clock())
            else:
                clamp = clamp_max_tokens(requested, self._min_output, headroom, worst.cost if worst else _free)
                if clamp is not None and clamp.max_tokens < asked and not clamp.lowered:  # lowered for the tokens
                    clamp = Clamp(clamp.max_tokens, clamp.worst_micro, True)
                sent = self._shaped(dialect, body, wants, clamp) if clamp else None
                if clamp is not None and sent is not None:
                    hold = self._holds.hold(clamp.worst_micro)
                    self._tokens_held[hold.number] = prompt.tokens + clamp.max_tokens * wants.choices
                    return Admission(dialect, wants, model, sent, clamp.max_tokens, clamp.lowered, hold, prompt, worst)
                floor = min(self._min_output, requested)
                need = worst.cost(floor) if worst else None
                refusal = Refused(
                    dialect, wants.model, self._no_room(model, floor, need, headroom or 0), True, need, headroom,
                    self._clock(), cap="usd",
                )  # fmt: skip
        self._emit(refusal)
        return refusal

    def settle(self, admission: Admission, seen: Seen | None) -> Reply | None:
        """The call ended. Its exact usage when the reply gave it; otherwise (a stream cut short, a usage that
        is no number) the bound: the prompt's bound and what was streamed, never zero. Emits the Reply."""
        if admission.settled:
            return None
        seen = seen or Seen()
        usage, charged = self._charge(admission, seen)
        key = f"proxy:{admission.dialect}:{seen.response_id or 'unanswered-' + new_id()}"
        details = {
            "meter": "proxy",
            "dialect": admission.dialect,
            "charged": charged,
            "max_out": admission.max_out,
            "lowered": admission.lowered,
            "reserved_micro": admission.hold.micro,
            "served_model": seen.model,
            "speed": usage.speed,
            "inference_geo": usage.inference_geo,
        }
        reply = Reply(
            key, admission.model,
            input_tokens=usage.total("input_tokens"), output_tokens=usage.total("output_tokens"),
            cache_read_tokens=usage.total("cache_read_tokens"), cache_write_tokens=usage.total("cache_write_tokens"),
            cache_write_1h_tokens=usage.cache_write_1h_tokens, web_search_requests=usage.web_search_requests,
            at=self._clock(), source="proxy", details=details, suspicious=seen.suspicious,
        )  # fmt: skip
        cost = self._pricer.price(reply).cost_micro
        with self._lock:
            if admission.settled:
                return None
            admission.settled = True
            self._holds.release(admission.hold)
            self._tokens_held.pop(admission.hold.number, None)
            self._spent += admission.hold.micro if cost is None else cost
            self._tokens += reply.tokens
        if charged == "usage":
            self.conversations.remember(
                admission.input.key, usage.prompt_tokens, seen.response_id if admission.dialect == RESPONSES else None,
                usage.output_tokens,
            )  # fmt: skip
        self._emit(reply)
        return reply

    def release(self, admission: Admission) -> None:
        """The call cost nothing (an upstream error without usage, no connection): give its hold back."""
        with self._lock:
            if not admission.settled:
                admission.settled = True
                self._holds.release(admission.hold)
                self._tokens_held.pop(admission.hold.number, None)

    # ---- internals
    def _charge(self, admission: Admission, seen: Seen) -> tuple[CallUsage, str]:
        if seen.complete and seen.usage is not None:
            return seen.usage, "usage"
        if admission.ask.stream and not seen.unreadable:
            output = bounds.cut_output_tokens(
                seen.output_bytes, seen.events, admission.max_out, admission.ask.hidden_reasoning
            )
        else:  # a whole reply whose usage cannot be read: it may have used its whole limit
            output = admission.max_out
        output *= admission.ask.choices
        known = seen.usage  # Anthropic's message_start: the prompt's exact usage
        if known is not None and not seen.unreadable:
            return CallUsage(known.input_tokens, output, known.cache_read_tokens, known.cache_write_tokens,
                             known.cache_write_1h_tokens, known.web_search_requests, known.speed,
                             known.inference_geo), "bound"  # fmt: skip
        if admission.worst is None:
            return CallUsage(input_tokens=admission.input.tokens, output_tokens=output), "bound"
        worst = admission.worst.reply(output // admission.ask.choices)
        return CallUsage(
            worst.input_tokens, worst.output_tokens, 0, worst.cache_write_tokens, worst.cache_write_1h_tokens
        ), "bound"

    def _shaped(self, dialect: str, body: dict[str, Any], wants: Ask, clamp: Any) -> dict[str, Any] | None:
        if not clamp.lowered:
            return body  # sent as the agent wrote it, byte for byte
        if dialect == ANTHROPIC:  # its thinking budget must stay below max_tokens
            return lowered_request(body, clamp)
        # A request without a limit is held for the model's context window (genai-prices knows no output maximum),
        # and gets a limit only when it must be lowered: the window itself would exceed most models' maximum.
        return with_max_out(dialect, body, clamp.max_tokens)

    def _priced_name(self, dialect: str, model: str) -> str:
        provider = self._providers.get(dialect)
        if provider and split_provider(model)[0] is None:
            return f"{provider}/{model}"
        return model

    def _model_max(self, model: str) -> int:
        return bounds.context_window(model) or self._default_max

    def _check_listed(self, model: str) -> None:
        name = sanitize.printable(model[:100])
        if any(fnmatch.fnmatch(model, pattern) for pattern in self._deny):
            raise ValueError(f"capguard: model {name} is denied by the configuration")
        if self._allow and not any(fnmatch.fnmatch(model, pattern) for pattern in self._allow):
            raise ValueError(f"capguard: model {name} is not in the allowed models")

    def _tokens_room(self, prompt_tokens: int, choices: int) -> int | None:
        """The most output tokens a call may ask for under the token cap (None: no token cap); under the lock."""
        if self._token_cap is None:
            return None
        left = self._token_cap - self._tokens - sum(self._tokens_held.values())
        return (left - prompt_tokens) // max(1, choices)

    def _no_tokens(self, prompt_tokens: int, floor: int) -> str:
        left = max(0, (self._token_cap or 0) - self._tokens - sum(self._tokens_held.values()))
        return (
            f"capguard: token cap of {self._token_cap:,} reached: a prompt of up to {prompt_tokens:,} tokens and a "
            f"reply of {floor:,} do not fit in the {left:,} tokens left (used {self._tokens:,}, the rest held by "
            "calls in flight). The run is stopped."
        )

    def _no_room(self, model: str, floor: int, need: int | None, headroom: int) -> str:
        cap = format_usd(self._cap or 0)
        need_text = format_usd(need) if need is not None else "more"
        return (
            f"capguard: spending cap of {cap} reached: a reply of {floor:,} tokens from {model} could cost "
            f"{need_text}, and {format_usd(headroom)} is left (spent {format_usd(self._spent)}, "
            f"{format_usd(self._holds.held_micro)} held by calls in flight). The run is stopped."
        )

    def _refuse(self, dialect: str, model: Any, why: str, *, at_cap: bool) -> Refused:
        refusal = Refused(dialect, sanitize.name(model), why, at_cap, at=self._clock())
        self._emit(refusal)
        return refusal


def _free(output_tokens: int) -> int:
    return 0
