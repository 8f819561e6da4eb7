"""Writes a deterministic corpus of Claude Code transcripts (`projects/<dir>/<session>.jsonl`) for benchmarks.

    python bench/gen_claude_corpus.py --out bench/.work/corpus/claude_1g --target-mb 1024 --seed 2

Same seed and options -> byte-identical files (no clock, no os.urandom, no hash randomisation). Lines are modelled
on the Claude Code 2.1.330 captures in tests/fixtures/claude/shared: one line per content block of each API reply
(thinking / text / tool_use) sharing message.id, requestId and usage; user lines carrying tool results (a heavy
tail up to 40 KB); attachments, api-request(-shape) and bookkeeping lines; `cost-state` at the end. Also: older
versions (2.0.x, and 1.0.x whose earlier blocks carry partial `output_tokens`: streaming snapshots, so max-wins
matters), subagent transcripts (`<session>/subagents/agent-*.jsonl` + `.meta.json`, `isSidechain`), forked
sessions that re-copy the parent's lines with `requestSessionId`, Claude's synthetic API-error replies, 1-hour
cache writes and web searches. `manifest.json` holds the ground truth: tokens per model after dedup (max-wins).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

MODELS = [  # (model, weight); dated ids as Claude Code writes them
    ("claude-sonnet-4-5-20250929", 40),
    ("claude-opus-4-5-20251101", 20),
    ("claude-sonnet-4-20250514", 10),
    ("claude-opus-4-1-20250805", 8),
    ("claude-opus-4-6", 7),
    ("claude-sonnet-4-6", 10),
    ("claude-opus-5-5", 5),
]
SUBAGENT_MODEL = "claude-haiku-4-5-20251001"
VERSIONS = [("2.1.330", 60), ("2.0.14", 25), ("1.0.98", 15)]  # 1.0.x: partial output_tokens on earlier blocks
WORDS = [
    "api",
    "auth",
    "billing",
    "cache",
    "cli",
    "core",
    "data",
    "db",
    "deploy",
    "docs",
    "engine",
    "events",
    "graph",
    "infra",
    "ingest",
    "jobs",
    "ledger",
    "metrics",
    "model",
    "parser",
    "payments",
    "proxy",
    "queue",
    "render",
    "report",
    "router",
    "sched",
    "search",
    "shop",
    "sync",
    "ui",
    "web",
    "worker",
]
TOOLS = ["Bash", "Read", "Edit", "Write", "Grep", "Glob", "TodoWrite", "WebFetch"]
BASE = datetime(2026, 3, 2, 8, 0, 0, tzinfo=timezone.utc)
CODE = """def {name}(self, {arg}):
    \"\"\"{doc}\"\"\"
    if {arg} is None:
        raise ValueError("{name}: {arg} must not be None")
    result = self._{name}_cache.get({arg})
    for item in sorted(result or [], key=lambda x: x.{attr}):
        yield item.{attr}, len(item.children) * {num}
"""
PROSE = (
    "Let me look at the failing test first. The error says the fixture is missing, so I will check how the "
    "conftest builds it — probably the path changed in the last refactor. I'll read the module, then run the "
    "suite again with -x to see the first failure. The café's résumé endpoint returns 404 when the id is a "
    "UUID with upper-case letters; normalising it before the lookup fixes that. ✓ Done: all 42 tests pass. "
)


def weighted(rng: random.Random, table):
    total = sum(w for _, w in table)
    pick = rng.uniform(0, total)
    for value, w in table:
        pick -= w
        if pick <= 0:
            return value
    return table[-1][0]


def uid(rng: random.Random) -> str:
    return "%08x-%04x-4%03x-%04x-%012x" % (
        rng.getrandbits(32),
        rng.getrandbits(16),
        rng.getrandbits(12),
        0x8000 | rng.getrandbits(14),
        rng.getrandbits(48),
    )


def hexid(rng: random.Random, n: int) -> str:
    return "%0*x" % (n, rng.getrandbits(4 * n))


def b62(rng: random.Random, n: int) -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    return "".join(alphabet[rng.getrandbits(6) % 62] for _ in range(n))


def stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def dumps(entry: dict) -> bytes:
    return (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def code_text(rng: random.Random, size: int) -> str:
    parts, total = [], 0
    while total < size:
        chunk = CODE.format(
            name=rng.choice(WORDS) + "_" + rng.choice(WORDS),
            arg=rng.choice(WORDS),
            doc=PROSE[: rng.randint(20, 120)],
            attr=rng.choice(WORDS),
            num=rng.randint(1, 999),
        )
        parts.append(chunk)
        total += len(chunk)
    return "".join(parts)[:size]


def prose(rng: random.Random, size: int) -> str:
    start = rng.randint(0, len(PROSE) - 1)
    return ((PROSE[start:] + PROSE) * (size // len(PROSE) + 2))[:size]


def heavy_size(rng: random.Random) -> int:
    """Tool results: mostly small, a heavy tail up to 40 KB (file reads, test logs)."""
    return min(40_000, int(rng.paretovariate(1.2) * 180))


class Totals:
    """Ground truth: per model, the max-wins usage of each (message.id, requestId) counted once."""

    def __init__(self) -> None:
        self.by_model: dict[str, dict[str, int]] = {}
        self.replies = 0

    def add(self, model: str, usage: dict) -> None:
        row = self.by_model.setdefault(
            model, {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0, "replies": 0}
        )
        row["input"] += usage["input_tokens"]
        row["output"] += usage["output_tokens"]
        row["cache_read"] += usage["cache_read_input_tokens"]
        row["cache_write"] += usage["cache_creation_input_tokens"]
        row["replies"] += 1
        self.replies += 1


class Session:
    """One transcript file being written: its lines, the clock, the conversation's context size."""

    def __init__(self, rng, gen, *, session_id, cwd, version, model, when, sidechain=False, agent_id=None):
        self.rng, self.gen = rng, gen
        self.session_id, self.cwd, self.version, self.model = session_id, cwd, version, model
        self.when, self.sidechain, self.agent_id = when, sidechain, agent_id
        self.lines: list[bytes] = []
        self.parent = None
        self.context = rng.randint(8_000, 20_000)
        self.one_hour = rng.random() < 0.3
        self.branch = rng.choice(["main", "HEAD", "feature/" + rng.choice(WORDS), "fix/" + rng.choice(WORDS)])
        self.new = version.startswith("2.1")

    def tick(self, lo: float, hi: float) -> str:
        self.when += timedelta(milliseconds=self.rng.randint(int(lo * 1000), int(hi * 1000)))
        return stamp(self.when)

    def common(self) -> dict:
        out = {
            "userType": "external",
            "entrypoint": "cli",
            "cwd": self.cwd,
            "sessionId": self.session_id,
            "version": self.version,
            "gitBranch": self.branch,
        }
        if self.agent_id:
            out = {"agentId": self.agent_id, **out}
        return out

    def emit(self, entry: dict) -> str:
        uuid = uid(self.rng)
        line = {
            "parentUuid": self.parent,
            "isSidechain": self.sidechain,
            **entry,
            "uuid": uuid,
            "timestamp": self.tick(0.01, 0.4),
            **self.common(),
        }
        self.lines.append(dumps(line))
        self.parent = uuid
        return uuid

    def bookkeeping(self, kind: str) -> None:
        rng = self.rng
        if kind == "queue":
            self.lines.append(
                dumps(
                    {
                        "type": "queue-operation",
                        "operation": "enqueue",
                        "timestamp": stamp(self.when),
                        "sessionId": self.session_id,
                        "content": prose(rng, rng.randint(20, 80)),
                    }
                )
            )
        elif kind == "attachment":
            size = rng.choice([300, 800, 1300, 4000, 14000])
            self.emit(
                {
                    "attachment": {
                        "type": rng.choice(["deferred_tools_delta", "skill_listing", "nested_memory"]),
                        "content": code_text(rng, size),
                    },
                    "type": "attachment",
                    "rendered": [{"content": "<system-reminder>\n" + prose(rng, size // 3) + "\n</system-reminder>"}],
                    "renderedRole": "system",
                }
            )
        elif kind == "api-request":
            self.lines.append(
                dumps(
                    {
                        "type": "api-request",
                        "sessionId": self.session_id,
                        "id": uid(rng),
                        "timestamp": stamp(self.when),
                        "version": self.version,
                        "querySource": "repl_main_thread",
                        "shapeHash": hexid(rng, 16),
                        "params": {
                            "model": self.model,
                            "max_tokens": 32000,
                            "thinking": {"type": "enabled", "budget_tokens": 31999},
                        },
                        "keep": rng.randint(1, 40),
                        "tail": [uid(rng) for _ in range(rng.randint(1, 6))],
                        "cacheControl": "5m",
                        "requestDigest": hexid(rng, 64),
                    }
                )
            )
        elif kind == "shape":
            self.lines.append(
                dumps(
                    {
                        "type": "api-request-shape",
                        "sessionId": self.session_id,
                        "shapeHash": hexid(rng, 16),
                        "timestamp": stamp(self.when),
                        "version": self.version,
                        "shape": {
                            "system": prose(rng, 6000),
                            "tools": [
                                {"name": t, "description": prose(rng, 900), "input_schema": {"type": "object"}}
                                for t in TOOLS
                            ],
                        },
                    }
                )
            )
        elif kind == "last-prompt":
            self.lines.append(
                dumps(
                    {
                        "type": "last-prompt",
                        "lastPrompt": prose(rng, 60),
                        "leafUuid": self.parent,
                        "sessionId": self.session_id,
                    }
                )
            )

    def prompt(self) -> None:
        rng = self.rng
        if self.new:
            self.bookkeeping("queue")
        self.emit(
            {
                "promptId": uid(rng),
                "type": "user",
                "message": {"role": "user", "content": prose(rng, rng.randint(20, 400))},
                "permissionMode": "default",
            }
        )
        for _ in range(rng.choice([0, 0, 1, 1, 2, 4])):
            self.bookkeeping("attachment")

    def usage(self) -> dict:
        rng = self.rng
        write = rng.choice([0, 0, rng.randint(100, 4000), rng.randint(2000, 30000)])
        self.context += write + rng.randint(0, 3000)
        if self.context > 160_000:  # auto-compact: the conversation starts again from a summary
            self.context = rng.randint(20_000, 40_000)
        one_hour = write if self.one_hour else 0
        usage = {
            "input_tokens": rng.choice([1, 3, 4, 6, 8, 11, rng.randint(10, 3000)]),
            "cache_creation_input_tokens": write,
            "cache_read_input_tokens": self.context,
            "output_tokens": rng.randint(20, 1800) if rng.random() < 0.9 else rng.randint(1800, 16000),
        }
        if self.version.startswith("1.0"):
            usage["service_tier"] = "standard"
            return usage
        usage["output_tokens_details"] = {"thinking_tokens": 0}
        searches = rng.randint(1, 3) if rng.random() < 0.01 else 0
        usage["server_tool_use"] = {"web_search_requests": searches, "web_fetch_requests": 0}
        usage["service_tier"] = "standard"
        usage["cache_creation"] = {"ephemeral_1h_input_tokens": one_hour, "ephemeral_5m_input_tokens": write - one_hour}
        if self.new:
            usage.update(inference_geo="", iterations=[], speed="standard", fallback_credit=None)
        return usage

    def reply(self, *, tools: int, final: bool) -> list[tuple[str, dict]]:
        """One API reply written as one line per content block; returns its tool_use ids and names."""
        rng = self.rng
        message_id = "msg_01" + b62(rng, 22)
        request_id = "req_011C" + b62(rng, 20)
        usage = self.usage()
        self.gen.totals.add(self.model, usage)
        blocks = []
        if rng.random() < 0.35:
            blocks.append(
                {"type": "thinking", "thinking": prose(rng, rng.randint(80, 2500)), "signature": b62(rng, 300)}
            )
        if rng.random() < 0.8 or final or not tools:
            blocks.append({"type": "text", "text": prose(rng, rng.randint(20, 900))})
        used = []
        for _ in range(tools):
            name = rng.choice(TOOLS)
            tool_id = "toolu_01" + b62(rng, 22)
            if name == "Write":
                tool_input = {
                    "file_path": f"{self.cwd}/src/{rng.choice(WORDS)}.py",
                    "content": code_text(rng, rng.randint(200, 6000)),
                }
            elif name == "Edit":
                tool_input = {
                    "file_path": f"{self.cwd}/src/{rng.choice(WORDS)}.py",
                    "old_string": code_text(rng, 200),
                    "new_string": code_text(rng, 260),
                }
            elif name == "Bash":
                tool_input = {"command": f"pytest -x tests/test_{rng.choice(WORDS)}.py", "description": "Run the tests"}
            else:
                tool_input = {"pattern" if name in ("Grep", "Glob") else "file_path": f"{self.cwd}/{rng.choice(WORDS)}"}
            blocks.append({"type": "tool_use", "id": tool_id, "name": name, "input": tool_input})
            used.append((tool_id, name))
        stop = "tool_use" if used else "end_turn"
        # 1.0.x always wrote streaming snapshots; --streaming makes a share of the newer versions' replies do so too
        partial = self.version.startswith("1.0") or self.gen.shape_rng.random() < self.gen.streaming
        for i, block in enumerate(blocks):
            line_usage = usage
            if partial and i < len(blocks) - 1:  # streaming snapshot: output counted so far
                line_usage = dict(usage, output_tokens=max(1, usage["output_tokens"] * (i + 1) // (len(blocks) + 1)))
            message = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [block],
                "stop_reason": stop,
                "stop_sequence": None,
                "usage": line_usage,
            }
            entry = {"message": message, "requestId": request_id, "type": "assistant"}
            if self.new:
                entry = {
                    "message": message,
                    "apiBlockIndex": i,
                    "requestId": request_id,
                    "requestRef": uid(rng),
                    "requestedModel": self.model,
                    "promptCacheRequested": "1h" if self.one_hour else "5m",
                    "type": "assistant",
                    "effort": "medium",
                }
            self.emit(entry)
        return used

    def tool_results(self, used: list[tuple[str, dict]]) -> None:
        rng = self.rng
        for tool_id, name in used:
            size = heavy_size(rng)
            body = code_text(rng, size) if name in ("Read", "Grep") else prose(rng, size)
            failed = rng.random() < 0.06
            self.emit(
                {
                    "promptId": uid(rng),
                    "type": "user",
                    "message": {
                        "role": "user",
                        "content": [
                            {"tool_use_id": tool_id, "type": "tool_result", "content": body, "is_error": failed}
                        ],
                    },
                    "toolUseResult": {
                        "stdout": body[: size // 2],
                        "stderr": "",
                        "interrupted": False,
                        "isImage": False,
                    },
                }
            )

    def api_error(self) -> None:
        rng = self.rng
        self.emit(
            {
                "type": "assistant",
                "message": {
                    "diagnostics": None,
                    "id": uid(rng),
                    "container": None,
                    "model": "<synthetic>",
                    "role": "assistant",
                    "stop_details": None,
                    "stop_reason": "stop_sequence",
                    "stop_sequence": "",
                    "type": "message",
                    "usage": {
                        "input_tokens": 0,
                        "output_tokens": 0,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                        "server_tool_use": {"web_search_requests": 0, "web_fetch_requests": 0},
                        "service_tier": None,
                    },
                    "content": [
                        {"type": "text", "text": 'API Error: 529 {"type":"error","error":{"type":"overloaded_error"}}'}
                    ],
                },
                "error": "overloaded",
                "isApiErrorMessage": True,
            }
        )

    def turn(self, *, subagent_hook=None) -> None:
        rng = self.rng
        self.prompt()
        requests = rng.choice([1, 1, 2, 3, 4, 6, 9, 14])
        for n in range(requests):
            final = n == requests - 1
            if self.new:
                if rng.random() < 0.04:
                    self.bookkeeping("shape")
                self.bookkeeping("api-request")
            if rng.random() < 0.004:
                self.api_error()
            used = self.reply(tools=0 if final else rng.choice([1, 1, 1, 2, 3]), final=final)
            if subagent_hook and used and rng.random() < 0.05:
                subagent_hook(self)
            self.tool_results(used)
        if self.new:
            self.bookkeeping("last-prompt")

    def cost_state(self) -> None:
        self.lines.append(
            dumps(
                {
                    "type": "cost-state",
                    "sessionId": self.session_id,
                    "totalCostUSD": 0,
                    "totalDuration": int((self.when - BASE).total_seconds()),
                    "modelUsage": {},
                    "hasUnknownModelCost": False,
                }
            )
        )


class Generator:
    def __init__(
        self,
        out: Path,
        seed: int,
        target: int,
        projects: int,
        *,
        streaming: float = 0.0,
        resumed: float = 0.0,
        turns: tuple[int, int] = (1, 60),
    ) -> None:
        self.out, self.rng, self.target = out, random.Random(seed), target
        # the shape options draw from a generator of their own: at 0 the corpus is the same bytes as without them
        self.shape_rng, self.streaming, self.resumed = random.Random(seed * 7919 + 1), streaming, resumed
        self.turns = turns
        self.resumed_files: list[str] = []  # relative to OUT: the transcripts that start with a copied history
        self.totals = Totals()
        self.bytes = self.files = self.lines = self.usage_lines = 0
        rng = self.rng
        self.projects = []
        for i in range(projects):
            cwd = f"/home/dev{rng.randint(1, 9)}/src/proj{i:03d}-{rng.choice(WORDS)}"
            self.projects.append((cwd, "".join(c if c.isalnum() else "-" for c in cwd)))

    def write(self, path: Path, lines: list[bytes]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(lines)
        path.write_bytes(data)
        self.files += 1
        self.bytes += len(data)
        self.lines += len(lines)
        self.usage_lines += sum(1 for line in lines if b'"usage":{' in line)

    def session(self, when: datetime) -> None:
        rng = self.rng
        cwd, folder = rng.choice(self.projects)
        version = weighted(rng, VERSIONS)
        main = Session(rng, self, session_id=uid(rng), cwd=cwd, version=version, model=weighted(rng, MODELS), when=when)
        subagents: list[Session] = []

        def spawn(parent: Session) -> None:
            agent = Session(
                rng,
                self,
                session_id=parent.session_id,
                cwd=cwd,
                version=version,
                model=SUBAGENT_MODEL,
                when=parent.when,
                sidechain=True,
                agent_id=hexid(rng, 17),
            )
            for _ in range(rng.randint(1, 3)):
                agent.turn()
            subagents.append(agent)

        if not main.new and rng.random() < 0.5:
            main.lines.append(dumps({"type": "summary", "summary": prose(rng, 50), "leafUuid": uid(rng)}))
        if main.new:
            main.bookkeeping("shape")
        turns = max(1, int(rng.paretovariate(1.3)))
        if self.turns != (1, 60):  # the shape option: sessions' length between MIN and MAX turns
            turns = max(self.turns[0], turns)
        for _ in range(min(turns, self.turns[1])):
            main.turn(subagent_hook=spawn)
        if main.new:
            main.cost_state()
        base = self.out / "projects" / folder
        self.write(base / f"{main.session_id}.jsonl", main.lines)
        for agent in subagents:
            self.write(base / main.session_id / "subagents" / f"agent-{agent.agent_id}.jsonl", agent.lines)
            meta = {"agentType": "general-purpose", "description": "subtask", "model": SUBAGENT_MODEL, "finished": True}
            (base / main.session_id / "subagents" / f"agent-{agent.agent_id}.meta.json").write_text(json.dumps(meta))
        if main.new and rng.random() < 0.03:
            self.fork(main, base)
        if self.resumed and self.shape_rng.random() < self.resumed:
            self.resume(main, base)

    def resume(self, parent: Session, base: Path) -> None:
        """`claude --resume`: a new transcript (new session id) that starts with the parent's conversation copied,
        each reply by its last line only (its final usage: an earlier streaming snapshot's partial output is not
        copied), stamped with the original times and the new session id, then new turns. The copied replies are
        the parent's (counted once); whichever of the two files is read first, the largest line must win."""
        rng = self.rng
        child = Session(
            rng, self, session_id=uid(rng), cwd=parent.cwd, version=parent.version, model=parent.model, when=parent.when
        )
        entries = [json.loads(raw) for raw in parent.lines]
        last_line = {}
        for i, entry in enumerate(entries):
            message = entry.get("message")
            if entry.get("type") == "assistant" and isinstance(message, dict):
                last_line[message.get("id")] = i
        for i, entry in enumerate(entries):
            kind, message = entry.get("type"), entry.get("message")
            if kind == "assistant" and isinstance(message, dict) and last_line.get(message.get("id")) != i:
                continue
            if kind in ("user", "assistant"):
                entry["sessionId"] = child.session_id
                child.lines.append(dumps(entry))
        child.turn()
        self.write(base / f"{child.session_id}.jsonl", child.lines)
        self.resumed_files.append(str((base / f"{child.session_id}.jsonl").relative_to(self.out)))

    def fork(self, parent: Session, base: Path) -> None:
        """`--fork-session`: the parent's lines copied with the new session id and `requestSessionId`, then new turns."""
        rng = self.rng
        child = Session(
            rng, self, session_id=uid(rng), cwd=parent.cwd, version=parent.version, model=parent.model, when=parent.when
        )
        for raw in parent.lines:
            entry = json.loads(raw)
            if entry.get("type") in ("user", "assistant"):
                entry["sessionId"] = child.session_id
                entry["requestSessionId"] = parent.session_id
                child.lines.append(dumps(entry))
        child.turn()
        self.write(base / f"{child.session_id}.jsonl", child.lines)

    def run(self) -> None:
        when = BASE
        while self.bytes < self.target:
            when += timedelta(minutes=self.rng.randint(5, 600))
            self.session(when)

    def manifest(self, args: argparse.Namespace) -> dict:
        tokens = {m: sum(v for k, v in row.items() if k != "replies") for m, row in self.totals.by_model.items()}
        return {
            "generator": "bench/gen_claude_corpus.py",
            "seed": args.seed,
            "target_mb": args.target_mb,
            "projects": args.projects,
            "streaming": args.streaming,
            "resumed": args.resumed,
            "turns": args.turns,
            "files": self.files,
            "lines": self.lines,
            "bytes": self.bytes,
            "usage_lines": self.usage_lines,
            "unique_replies": self.totals.replies,
            "total_tokens": sum(tokens.values()),
            **({"resumed_files": self.resumed_files} if self.resumed else {}),
            "by_model": {m: {**row, "total": tokens[m]} for m, row in sorted(self.totals.by_model.items())},
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--target-mb", type=float, default=1024)
    parser.add_argument("--projects", type=int, default=120)
    parser.add_argument("--seed", type=int, default=2)
    parser.add_argument("--force", action="store_true", help="delete OUT first")
    parser.add_argument(
        "--streaming", type=float, default=0.0, help="share of 2.x replies also written as streaming snapshots"
    )
    parser.add_argument(
        "--resumed", type=float, default=0.0, help="share of sessions resumed into a new transcript (history copied)"
    )
    parser.add_argument(
        "--turns", default="1-60", help="MIN-MAX turns of a main session (few big files: 40-200; many small: 1-2)"
    )
    args = parser.parse_args(argv)
    low, _, high = args.turns.partition("-")
    if args.out.exists():
        if not args.force:
            parser.error(f"{args.out} exists; use --force to replace it")
        shutil.rmtree(args.out)
    gen = Generator(
        args.out,
        args.seed,
        int(args.target_mb * 1024 * 1024),
        args.projects,
        streaming=args.streaming,
        resumed=args.resumed,
        turns=(int(low), int(high or low)),
    )
    gen.run()
    manifest = gen.manifest(args)
    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(
        f"{args.out}: {manifest['files']} files, {manifest['lines']:,} lines, {manifest['bytes']:,} bytes, "
        f"{manifest['unique_replies']:,} replies, {manifest['total_tokens']:,} tokens",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
