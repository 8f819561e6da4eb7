"""The proxy's budget: what was settled, what calls in flight hold, and whether a request may go (with its output
limit lowered to fit). Thread-safe, no I/O: the server calls admit() before forwarding and settle() after.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from capguard.core import sanitize
from capguard.core.anthropic_usage import CallUsage
from capguard.core.events import Reply
from capguard.core.ids import new_id
from capguard.core.model_caps import ModelCap, ModelRules, matches, refusal
from capguard.core.pricing import GEO_PREMIUM, PLATFORM_PREMIUMS, Pricer, split_provider
from capguard.core.reservations import Clamp, Hold, Reservations, clamp_max_tokens, lowered_request
from capguard.core.unit_prices import UnitPricer
from capguard.core.units import format_usd
from capguard.metering.proxy import bounds
from capguard.metering.proxy.dialects import ANTHROPIC, GEMINI, NO_TASK_BUDGET, RESPONSES, Ask, ask, with_max_out
from capguard.metering.proxy.task_budgets import TaskBudgets, Ticket
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
    cap: str | None = None  # at a cap: "usd" (the run's money cap in force), "tokens" (its token cap) or "model"
    model_cap: str | None = None  # for "model": the [models."glob"] whose cap binds
    prompt_tokens: int | None = None  # at a cap: the bound its prompt was held at
    counted: bool = False  # that bound was the provider's count of the prompt (not its bytes)
    # `admit(defer=True)` at a cap while other calls hold part of it: not emitted, the request may wait for them
    # to settle and ask again (Codex's TUI sends a title request beside a turn that holds the whole headroom)
    deferred: bool = False


@dataclass(frozen=True)
class Count:
    """A request whose prompt the provider should count before it is admitted (`Gate.admit_counted`): `body` is
    what its counting endpoint takes; nothing is held for it yet."""

    dialect: str
    request: dict[str, Any]
    ask: Ask
    model: str
    input: bounds.InputBound
    body: dict[str, Any]


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
    caps: tuple[_ModelBudget, ...] = ()  # the per-model caps this request's model falls under
    held_tokens: int = 0  # its prompt's bound plus max_out, held against those caps' tokens
    task: Ticket | None = None  # it carries the task budget the proxy added (the beta header goes with it)
    settled: bool = field(default=False, repr=False)


@dataclass
class _ModelBudget:
    """One `[models."glob"]` cap as the proxy holds it: settled spend and tokens, and what calls in flight hold."""

    cap: ModelCap
    spent_micro: int = 0
    held_micro: int = 0
    tokens: int = 0
    held_tokens: int = 0

    def headroom(self) -> int | None:
        return None if self.cap.usd_micro is None else max(0, self.cap.usd_micro - self.spent_micro - self.held_micro)

    def tokens_left(self) -> int | None:
        return None if self.cap.tokens is None else max(0, self.cap.tokens - self.tokens - self.held_tokens)


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
        models: ModelRules | None = None,
        task_budget: int | None = None,
        on_event: Callable[[Reply | Refused], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if min_output < 1 or default_max_output < 1:
            raise ValueError("min_output and default_max_output must be positive")
        self._pricer = pricer
        self._unit = UnitPricer(pricer)  # Pricer's figures at a fraction of its time: twice or more per request
        self._cap = cap_micro
        self._min_output = min_output
        self._default_max = default_max_output
        self._providers = {ANTHROPIC: "anthropic", GEMINI: "google", **(providers or {})}
        rules = models or ModelRules()
        self._rules = rules  # allow/deny and per-model caps: the [models] table
        self._model_budgets = [_ModelBudget(cap) for cap in rules.caps]
        self.task_budgets = None if task_budget is None else TaskBudgets(task_budget)
        self._emit = on_event or (lambda event: None)
        self._clock = clock
        self._lock = threading.Lock()  # the supervisor sets the budget from its own thread
        self._holds = Reservations()
        self._spent = 0
        self._token_cap = token_cap
        self._tokens = 0  # settled tokens
        self._tokens_held = 0  # prompt bounds + output limits of the calls in flight
        self.conversations = bounds.Conversations()
        self._counts_trusted = True
        self._ids: set[str] = set()  # the reply ids settled so far: each call's ledger key must be its own

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
    def admit(
        self,
        dialect: str,
        body: dict[str, Any],
        *,
        model: str | None = None,
        stream: bool = False,
        may_count: bool = False,
        defer: bool = False,
        provider: str | None = None,
        location: str | None = None,
        platform: str | None = None,
    ) -> Admission | Refused | Count:
        """Hold the request's worst case and return the body to send, or refuse it (emitted as an event). `model`
        and `stream`: what the path says, for an API that names them there (Gemini). With `may_count` (the server
        can ask the provider to count the prompt): a `Count` when the prompt's bound from bytes would lower the
        request's output limit or refuse it and the provider's count could tighten it; nothing is held then: the
        server asks, and passes the answer to `admit_counted`. With `defer`, a refusal at a cap while calls in flight
        hold part of it comes back `deferred` and is not emitted: what they hold returns when they settle. `provider`:
        the mount's provider for prices, over the dialect's (an OpenAI-compatible API that is not OpenAI's).
        `location`: Vertex's, from the path (its regional endpoints cost more); `platform`: the cloud that serves it
        (Route.platform)."""
        try:
            serialized = bounds.Prompt.of(dialect, body)  # once, for the cache write and the prompt's bound
            wants = ask(
                dialect, body, model=model, stream=stream, marked=serialized.marked(), location=location,
                platform=platform,
            )  # fmt: skip
            model = self._priced_name(dialect, wants.model, provider)
            self._check_listed(wants.model)
            prompt = bounds.input_bound(dialect, body, self.conversations, serialized)
        except ValueError as err:
            return self._refuse(dialect, model or body.get("model"), str(err), at_cap=False)
        except RecursionError:  # nested deeper than Python walks (the decoder allows it): nothing is sent
            why = "capguard cannot bound a request nested this deeply"
            return self._refuse(dialect, model or body.get("model"), why, at_cap=False)
        except (TypeError, AttributeError) as err:  # a field of a shape the API does not take: nothing is sent
            why = f"capguard cannot read this request: a field has a shape the API does not take ({type(err).__name__})"
            return self._refuse(dialect, model or body.get("model"), why, at_cap=False)
        return self._admit(dialect, body, wants, model, prompt, may_count and self._counts_trusted, defer)

    def admit_counted(self, first: Count, answer: Any, *, defer: bool = False) -> Admission | Refused:
        """`admit` again with the provider's answer to `first.body` (its parsed JSON; None when the count failed):
        the count with its margin as the prompt's bound, or the bytes' bound when the answer is no count."""
        prompt = bounds.counted_bound(first.input, answer)
        admission = self._admit(first.dialect, first.request, first.ask, first.model, prompt, False, defer)
        assert not isinstance(admission, Count)
        return admission

    @property
    def counts_trusted(self) -> bool:
        """False once a call was billed more prompt than its count allowed: no count is asked for after that."""
        return self._counts_trusted

    def _admit(
        self,
        dialect: str,
        body: dict[str, Any],
        wants: Ask,
        model: str,
        prompt: bounds.InputBound,
        may_count: bool,
        defer: bool = False,
    ) -> Admission | Refused | Count:
        worst = bounds.worst_cost(self._pricer, model, prompt.tokens, wants, dialect, self._unit.cost_of)
        requested = wants.max_out or self._model_max(model)
        with self._lock:
            budgets = tuple(b for b in self._model_budgets if matches(b.cap.pattern, model))
            # one admission: the least headroom of every cap this call falls under (the run's, its model's)
            headroom = _least(self._holds.headroom(self._spent, self._cap), *(b.headroom() for b in budgets))
            tokens_left = _least(self._run_tokens_left(), *(b.tokens_left() for b in budgets))
            # the output that still fits a token cap, for each completion asked
            room_out = None if tokens_left is None else (tokens_left - prompt.tokens) // max(1, wants.choices)
            if worst is None and headroom is not None:
                why = f"capguard cannot price model {wants.model!r} (add a [prices] entry) and a USD cap is set"
                refusal_ = Refused(dialect, wants.model, why, False, at=self._clock())
            else:
                floor = min(self._min_output, requested)
                fits = room_out is None or room_out >= max(1, floor)
                most = requested if room_out is None else min(requested, max(room_out, 0))
                clamp = clamp_max_tokens(most, floor, headroom, worst.cost if worst else _free) if fits else None
                binds = clamp is None or clamp.lowered or most < requested
                count = (
                    bounds.count_request(dialect, body, prompt, wants.model, wants.platform)
                    if may_count and binds
                    else None
                )
                if count is not None:  # the bytes' bound binds, and a count could loosen it: ask first
                    return Count(dialect, body, wants, model, prompt, count)
                task = None
                if self.task_budgets is not None and dialect == ANTHROPIC and wants.platform not in NO_TASK_BUDGET:
                    body, task = self.task_budgets.apply(body)
                if clamp is not None and most < requested:
                    clamp = Clamp(clamp.max_tokens, clamp.worst_micro, True)  # lowered for a token cap
                sent = self._shaped(dialect, body, wants, clamp) if clamp else None
                if clamp is not None and sent is not None:
                    hold = self._holds.hold(clamp.worst_micro)
                    held_tokens = prompt.tokens + clamp.max_tokens * wants.choices
                    self._tokens_held += held_tokens
                    for b in budgets:
                        b.held_micro += clamp.worst_micro
                        b.held_tokens += held_tokens
                    return Admission(
                        dialect, wants, model, sent, clamp.max_tokens, clamp.lowered, hold, prompt, worst, budgets,
                        held_tokens, task,
                    )  # fmt: skip
                need = worst.cost(floor) if worst else None
                why, cap, pattern = (
                    self._no_tokens(budgets, prompt.tokens, floor)
                    if not fits
                    else self._no_room(model, floor, need, headroom or 0, budgets)
                )
                refusal_ = Refused(
                    dialect, wants.model, why, True, need, headroom, self._clock(), cap, pattern, prompt.tokens,
                    prompt.counted,
                )  # fmt: skip
                if defer and (self._holds.held_micro > 0 or self._tokens_held > 0):
                    return replace(refusal_, deferred=True)
        self._emit(refusal_)
        return refusal_

    def settle(self, admission: Admission, seen: Seen | None) -> Reply | None:
        """The call ended. Its exact usage when the reply gave it; otherwise (a stream cut short, a usage that
        is no number) the bound: the prompt's bound and what was streamed, never zero. Emits the Reply."""
        if admission.settled:
            return None
        seen = seen or Seen()
        usage, charged = self._charge(admission, seen)
        rid = seen.response_id
        with self._lock:
            repeated = rid is not None and rid in self._ids
            if rid is not None:
                self._ids.add(rid)
        if admission.ask.geo in PLATFORM_PREMIUMS and usage.inference_geo not in GEO_PREMIUM:  # a cloud's usage
            usage = replace(usage, inference_geo=admission.ask.geo)  # says no premium ("global", nothing)
        # a server that gives two calls one id (hostile or broken): the second gets a key of its own, or the ledger
        # would drop it as a duplicate of the first (the gate counted both)
        tail = rid if rid is not None and not repeated else f"{'repeated' if repeated else 'unanswered'}-{new_id()}"
        key = f"proxy:{admission.dialect}:{tail}"
        details = {
            "meter": "proxy",
            "dialect": admission.dialect,
            "charged": charged,
            "max_out": admission.max_out,
            "lowered": admission.lowered,
            "reserved_micro": admission.hold.micro,
            "prompt_bound": admission.input.tokens,
            "prompt_counted": admission.input.counted,
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
        cost = self._unit.cost_of(reply)
        with self._lock:
            if admission.settled:
                return None
            admission.settled = True
            self._holds.release(admission.hold)
            self._tokens_held -= admission.held_tokens
            self._tokens += reply.tokens
            charged_micro = admission.hold.micro if cost is None else cost
            self._spent += charged_micro
            for budget in admission.caps:
                budget.held_micro -= admission.hold.micro
                budget.held_tokens -= admission.held_tokens
                budget.spent_micro += charged_micro
                budget.tokens += reply.tokens
        if charged == "usage" and admission.task is not None and self.task_budgets is not None:
            with self._lock:
                self.task_budgets.observe(admission.task, usage.prompt_tokens, usage.output_tokens)
        if charged == "usage" and admission.input.counted and usage.prompt_tokens > admission.input.tokens:
            self._counts_trusted = False  # the provider billed more than it counted: its counts are not bounds
        elif charged == "usage" and admission.input.tight and usage.prompt_tokens > admission.input.tokens:
            self.conversations.distrust()  # an earlier bill it was held at was too low: bills are no bounds now
        if charged == "usage":
            self.conversations.remember(
                admission.input.key, usage.prompt_tokens, seen.response_id if admission.dialect == RESPONSES else None,
                usage.output_tokens, admission.input.prefixes,
            )  # fmt: skip
        self._emit(reply)
        return reply

    def release(self, admission: Admission) -> None:
        """The call cost nothing (an upstream error without usage, no connection): give its hold back."""
        with self._lock:
            if not admission.settled:
                admission.settled = True
                self._holds.release(admission.hold)
                self._tokens_held -= admission.held_tokens
                for budget in admission.caps:
                    budget.held_micro -= admission.hold.micro
                    budget.held_tokens -= admission.held_tokens

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
        known = None if seen.unreadable else seen.usage  # Anthropic's message_start: the prompt's exact usage
        if known is not None and seen.prompt_unknown and seen.output_stated:
            output = known.output_tokens  # the figure the reply gave (only its prompt's is charged by the bound)
        elif known is not None:
            output = max(output, known.output_tokens)
        if known is not None and not seen.prompt_unknown:
            return CallUsage(known.input_tokens, output, known.cache_read_tokens, known.cache_write_tokens,
                             known.cache_write_1h_tokens, known.web_search_requests, known.speed,
                             known.inference_geo), "bound"  # fmt: skip
        if admission.worst is None:
            return CallUsage(input_tokens=admission.input.tokens, output_tokens=output), "bound"
        worst = admission.worst.reply(output // admission.ask.choices)
        rates = worst.details or {}  # priced as it was held: fast mode and US-only inference cost more
        return CallUsage(
            worst.input_tokens, worst.output_tokens, 0, worst.cache_write_tokens, worst.cache_write_1h_tokens, 0,
            rates.get("speed"), rates.get("inference_geo"),
        ), "bound"  # fmt: skip

    def _shaped(self, dialect: str, body: dict[str, Any], wants: Ask, clamp: Any) -> dict[str, Any] | None:
        if not clamp.lowered and not wants.write_limit:
            return body  # sent as the agent wrote it, byte for byte
        if dialect == ANTHROPIC:  # its thinking budget must stay below max_tokens
            return lowered_request(body, clamp)
        # A request without a limit is held for the model's context window (genai-prices knows no output maximum),
        # and gets a limit only when it must be lowered: the window itself would exceed most models' maximum.
        return with_max_out(dialect, body, clamp.max_tokens)

    def _priced_name(self, dialect: str, model: str, mount_provider: str | None = None) -> str:
        # The mount's provider is certain (a router's model names another provider, `anthropic/...`, at its prices)
        if mount_provider:
            return model if model.lower().startswith(f"{mount_provider}/") else f"{mount_provider}/{model}"
        provider = self._providers.get(dialect)
        if provider and split_provider(model)[0] is None:
            return f"{provider}/{model}"
        return model

    def _model_max(self, model: str) -> int:
        return bounds.context_window(model) or self._default_max

    def _check_listed(self, model: str) -> None:
        why = refusal(self._rules, model, sanitize.printable(model[:100]))
        if why is not None:
            raise ValueError(f"capguard: {why}")

    def _run_tokens_left(self) -> int | None:
        """What the run's token cap leaves (None: no token cap); under the lock."""
        return None if self._token_cap is None else max(0, self._token_cap - self._tokens - self._tokens_held)

    def _no_room(
        self, model: str, floor: int, need: int | None, headroom: int, budgets: Sequence[_ModelBudget]
    ) -> tuple[str, str, str | None]:
        need_text = format_usd(need) if need is not None else "more"
        binding = [b for b in budgets if b.headroom() is not None and b.headroom() == headroom]
        global_room = self._holds.headroom(self._spent, self._cap)
        if binding and (global_room is None or headroom < global_room):
            b = binding[0]
            why = (
                f"capguard: the {format_usd(b.cap.usd_micro or 0)} cap on {b.cap.pattern} reached: a reply of "
                f"{floor:,} tokens from {model} could cost {need_text}, and {format_usd(headroom)} is left of it "
                f"(spent {format_usd(b.spent_micro)}, {format_usd(b.held_micro)} held by calls in flight). "
                "The run is stopped."
            )
            return why, "model", b.cap.pattern
        cap = format_usd(self._cap or 0)
        why = (
            f"capguard: spending cap of {cap} reached: a reply of {floor:,} tokens from {model} could cost "
            f"{need_text}, and {format_usd(headroom)} is left (spent {format_usd(self._spent)}, "
            f"{format_usd(self._holds.held_micro)} held by calls in flight). The run is stopped."
        )
        return why, "usd", None

    def _no_tokens(self, budgets: Sequence[_ModelBudget], prompt: int, floor: int) -> tuple[str, str, str | None]:
        """Why a call does not fit the token cap that binds (the run's, or its model's when that leaves less)."""
        run_left = self._run_tokens_left()
        capped = [b for b in budgets if b.tokens_left() is not None]
        b = min(capped, key=lambda b: b.tokens_left() or 0) if capped else None
        if b is not None and (run_left is None or (b.tokens_left() or 0) < run_left):
            why = (
                f"capguard: the {b.cap.tokens:,}-token cap on {b.cap.pattern} reached: this request's prompt (up to "
                f"{prompt:,} tokens) and a reply of {floor:,} do not fit the {b.tokens_left():,} tokens left. "
                "The run is stopped."
            )
            return why, "model", b.cap.pattern
        why = (
            f"capguard: token cap of {self._token_cap or 0:,} reached: a prompt of up to {prompt:,} tokens and a "
            f"reply of {floor:,} do not fit in the {run_left or 0:,} tokens left (used {self._tokens:,}, the rest "
            "held by calls in flight). The run is stopped."
        )
        return why, "tokens", None

    def _refuse(self, dialect: str, model: Any, why: str, *, at_cap: bool) -> Refused:
        refusal = Refused(dialect, sanitize.name(model), why, at_cap, at=self._clock())
        self._emit(refusal)
        return refusal


def _free(output_tokens: int) -> int:
    return 0


def _least(*values: int | None) -> int | None:
    """The smallest of the caps' headrooms that are set (None: no cap binds)."""
    present = [v for v in values if v is not None]
    return min(present) if present else None
