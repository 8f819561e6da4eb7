"""The compiled line reader (capguard/importers/_claude_scan.c) changes nothing an import counts: the same `Scan`
(replies, malformed and suspicious counts, session facts, time span) and the same max-wins state as the Python
loop, on every captured transcript, on generated corpora, and on lines broken in every way we could think of.
The C reader must give up (None: Python decodes the line) on any line it is not certain of; when it does not, its
fields must be msgspec's."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from capguard.agents.claude import decode as claude_decode
from capguard.importers import claude_scan

compiled = pytest.importorskip("capguard.importers._claude_scan", reason="the C reader is not built")

ROOT = Path(__file__).resolve().parents[2]
SHARED = Path("/work/shared/fixtures")  # the captures of the real agents, where this machine has them
TRANSCRIPTS = sorted(
    p for base in (ROOT / "tests" / "fixtures", SHARED) if base.exists() for p in base.rglob("*.jsonl")
)


def both(monkeypatch, data: bytes, subagent: bool = False, base: int = 0, size: int | None = None):
    """(Python's Scan and counter state, the compiled reader's)."""
    out = []
    for module in (None, compiled):
        monkeypatch.setattr(claude_scan, "_compiled", module)
        counter = claude_scan.ReplyCounter(subagent=subagent)
        found = claude_scan.scan(data, base, counter, size)
        out.append((found, counter.seen))
    return out


def assert_same(monkeypatch, data: bytes, subagent: bool = False, size: int | None = None) -> None:
    python, c = both(monkeypatch, data, subagent, 100, size)
    assert c == python


def test_the_pure_python_switch_is_read(monkeypatch):
    code = "from capguard.importers import claude_scan as s; print(s._compiled is None)"
    env = {"PYTHONPATH": str(ROOT), "CAPGUARD_PURE_PYTHON": "1"}
    pure = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    env["CAPGUARD_PURE_PYTHON"] = ""
    built = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert (pure.stdout.strip(), built.stdout.strip()) == ("True", "False")


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: str(p).replace(str(ROOT), ""))
def test_every_fixture_transcript_scans_the_same(monkeypatch, path):
    data = path.read_bytes()
    data = data[: data.rfind(b"\n") + 1]
    assert_same(monkeypatch, data, path.parent.name == "subagents")


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("corpora")
    generator = ROOT / "bench" / "gen_claude_corpus.py"
    shapes = {"plain": [], "shaped": ["--streaming", "0.3", "--resumed", "0.3"], "small": ["--turns", "1-2"]}
    for name, extra in shapes.items():
        argv = [sys.executable, str(generator), "--out", str(root / name), "--target-mb", "1.5", "--projects", "2"]
        subprocess.run([*argv, "--seed", "7", *extra], check=True, capture_output=True)
    return sorted(root.rglob("*.jsonl"))


def test_generated_corpora_scan_the_same(monkeypatch, corpora):
    assert len(corpora) > 10
    for path in corpora:
        data = path.read_bytes()
        assert_same(monkeypatch, data, path.parent.name == "subagents")
        # read in two chunks as the importer reads a big file: the same lines either side of the cut
        half = data.rfind(b"\n", 0, len(data) // 2) + 1
        assert_same(monkeypatch, data, size=half)


def real_lines() -> list[bytes]:
    lines = []
    for path in TRANSCRIPTS:
        lines += [line for line in path.read_bytes().split(b"\n") if b'"usage"' in line]
    assert lines
    return lines


def msgspec_fields(line: bytes) -> tuple | None:
    """What decode.py's msgspec path reads of a line, in the C reader's order; None when it refuses the line."""
    try:
        str(line, "utf-8")
        typed = claude_decode.line_decoder.decode(line)
    except claude_decode.DECODE_ERRORS:
        return None
    message = typed.message
    usage = None if message is None else message.usage
    figures = None
    if usage is not None:
        creation, tools = usage.cache_creation, usage.server_tool_use
        figures = [
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_read_input_tokens,
            usage.cache_creation_input_tokens,
            0 if creation is None else creation.ephemeral_1h_input_tokens,
            0 if tools is None else tools.web_search_requests,
        ]
    return (
        typed.type,
        typed.isApiErrorMessage,
        typed.requestSessionId,
        typed.sessionId,
        None if message is None else message.id,
        None if message is None else message.model,
        figures,
        None if usage is None else usage.speed,
        None if usage is None else usage.inference_geo,
        typed.requestId,
        typed.requestedModel,
        typed.isAbortedMidStream,
        typed.timestamp,
        typed.cwd,
        typed.version,
    )


def assert_certain_only_when_right(line: bytes) -> None:
    """When the C reader answers for a line, msgspec and json.loads both read it, and msgspec reads the same."""
    fields = compiled.read_fields(line)
    if fields is None:
        return
    assert fields == msgspec_fields(line), line
    assert isinstance(json.loads(line), dict), line


def test_real_lines_are_read_as_msgspec_reads_them():
    lines = real_lines()
    read = [line for line in lines if compiled.read_fields(line) is not None]
    assert len(read) > 0.9 * len(lines)  # the reader is certain of what Claude Code writes
    for line in lines:
        assert_certain_only_when_right(line)


def assistant() -> dict:
    for line in real_lines():
        entry = json.loads(line)
        if entry.get("type") == "assistant" and isinstance(entry.get("message", {}).get("usage"), dict):
            return entry
    raise AssertionError("no assistant line")


def dumps(entry: object) -> bytes:
    return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()


def crafted() -> list[bytes]:
    """Lines in shapes that must each be read right or given up on."""
    base = assistant()
    line = dumps(base)
    out = [line, b"  " + line + b" \r", line + b"x", line[:-1], b"[" + line + b"]", b"\xef\xbb\xbf" + line]
    usage_at = line.index(b'"usage":{') + len(b'"usage":{')
    for text in (
        b'"input_tokens":null,',
        b'"input_tokens":-1,',
        b'"input_tokens":1.0,',
        b'"input_tokens":1e3,',
        b'"input_tokens":-0,',
        b'"input_tokens":99999999999999999999999,',
        b'"input_tokens":999999999999999999,',
        b'"input_tokens":2000000000,',
        b'"input_tokens":true,',
        b'"input_tokens":"5",',
        b'"input_tokens":5,',  # a repeated key: json.loads takes the last
        b'"inp\\u0075t_tokens":5,',
        b'"speed":"fast",',
        b'"speed":"f\\u0061st",',
        b'"speed":7,',
        b'"speed":null,',
        b'"inference_geo":"us",',
        b'"cache_creation":null,',
        b'"cache_creation":{"ephemeral_1h_input_tokens":10**9},',
        b'"cache_creation":{"ephemeral_1h_input_tokens":7,"ephemeral_1h_input_tokens":8},',
        b'"server_tool_use":{"web_search_requests":2},',
        b'"server_tool_use":[],',
        b'"server_tool_use":{"web_search_requests":null},',
        b'"extra":' + b"[" * 70 + b"]" * 70 + b",",
        b'"extra":' + b"[" * 30 + b"]" * 30 + b",",
        b'"extra":' + b"9" * 5000 + b",",
        b'"extra":1e999,',
        b'"extra":"\\ud800",',
        b'"extra":"\\ud83d\\ude00",',
        b'"extra":"\\uZZZZ",',
        b'"extra":"tab\there",',
        b'"extra":"\xed\xa0\x80",',  # an encoded surrogate
        b'"extra":"\xc0\xaf",',  # overlong
        b'"extra":"\xf4\x90\x80\x80",',  # beyond U+10FFFF
        b'"extra":"\xe2\x82",',  # cut short
        b'"extra":"caf\xc3\xa9 \xf0\x9f\x98\x80",',
        b'"extra":NaN,',
        b'"extra":01,',
        b'"extra":.5,',
        b'"extra":1.,',
        b'"extra":tru,',
    ):
        out.append(line[:usage_at] + text + line[usage_at:])
    # the same texts in place of a field's only value, and of its key
    for raw in (
        b"null",
        b"-1",
        b"1.0",
        b"1e3",
        b"-0",
        b"0",
        b"99999999999999999999999",
        b"18446744073709551621",
        b"999999999999999999",
        b"1000000000",
        b"1000000001",
        b"true",
        b'"5"',
        b"[]",
        b"{}",
        b"007",
    ):
        for path in (
            ("input_tokens",),
            ("cache_creation", "ephemeral_1h_input_tokens"),
            ("server_tool_use", "web_search_requests"),
        ):
            entry = json.loads(json.dumps(base))
            usage = entry["message"]["usage"]
            for key in path[:-1]:
                usage = usage.setdefault(key, {})
            usage[path[-1]] = "@@"
            out.append(dumps(entry).replace(b'"@@"', raw))
    for key in (b"input_tokens", b"output_tokens", b"usage", b"message", b"type", b"requestId", b"id", b"model"):
        escaped = b'"' + key[:1] + b"\\u%04x" % key[1] + key[2:] + b'"'
        out.append(line.replace(b'"' + key + b'"', escaped, 1))
    top = {
        "type": ["user", None, 3, "assist\\u0061nt"],
        "isApiErrorMessage": [True, False, None, 1, "yes"],
        "requestSessionId": [base.get("sessionId"), "other", None, 5],
        "sessionId": [None, "", "s\\u00e9", 4],
        "requestId": [None, "", "req_\\u0041", "r\u00e9q", 5],
        "requestedModel": [None, "", "m" * 300, "claude-haiku-4-5"],
        "isAbortedMidStream": [True, None, "no"],
        "timestamp": [None, "", "2026-13-45T99:00:00Z", "2026-11-23T06:05:53Z", 17],
        "cwd": [None, "/tmp/x", ["a"]],
        "version": [None, "1.0", 1.0],
        "message": [None, {}, [], "text", {"id": "m", "usage": None}, {"id": "m"}, {"usage": {}}],
    }
    for key, values in top.items():
        for value in values:
            entry = dict(base)
            entry[key] = value
            text = dumps(entry).replace(b"\\\\u", b"\\u")  # keep the escapes written above as escapes
            out.append(text)
        out.append(line[:-1] + b"," + dumps(key) + b":" + dumps(values[0]) + b"}")  # the key twice
    message = dict(base["message"])
    for key, values in {
        "id": [None, "", 3, "msg_\\u0041"],
        "model": [None, "<synthetic>", "x" * 201, 7],
        "usage": [None, [], {"output_tokens": 3}],
    }.items():
        for value in values:
            entry = dict(base)
            entry["message"] = {**message, key: value}
            out.append(dumps(entry).replace(b"\\\\u", b"\\u"))
    return out


def test_crafted_lines(monkeypatch):
    lines = crafted()
    for line in lines:
        assert_certain_only_when_right(line)
        assert_same(monkeypatch, line + b"\n")
    assert_same(monkeypatch, b"\n".join(lines) + b"\n")


def mutate(line: bytes, rng: random.Random) -> bytes:
    data = bytearray(line)
    for _ in range(rng.choice((1, 1, 2, 3))):
        at = rng.randrange(len(data) + 1)
        kind = rng.randrange(6)
        if kind == 0 and at < len(data):
            data[at] = rng.randrange(256)
        elif kind == 1 and at < len(data):
            del data[at : at + rng.randrange(1, 4)]
        elif kind == 2:
            data[at:at] = bytes([rng.choice(b'"\\{}[],:-.0123456789eEtfnu \t\x00\x80\xc3\xed\xf0\xff')])
        elif kind == 3:
            data[at:at] = rng.choice((b"\\u0041", b"\\ud800", b'"', b"\\", b"\xc3\xa9", b"null", b"1e5", b"-1"))
        elif kind == 4:
            data = data[:at]  # truncated
        else:  # a digit changed in a count, or a count made larger: max-wins sees it
            digits = [i for i, b in enumerate(data) if 0x30 <= b <= 0x39]
            if digits:
                data[rng.choice(digits)] = rng.randrange(0x30, 0x3A)
    return bytes(data).replace(b"\n", b" ")


def test_mutated_lines(monkeypatch):
    rng = random.Random(15)
    lines = real_lines()
    given_up = 0
    for round_ in range(60):
        picked = [rng.choice(lines) for _ in range(40)]
        mutated = [mutate(line, rng) if rng.random() < 0.7 else line for line in picked]
        for line in mutated:
            assert_certain_only_when_right(line)
            given_up += compiled.read_fields(line) is None
        # whole files of them: the repeat skipping and max-wins across lines
        assert_same(monkeypatch, b"\n".join(mutated) + b"\n", subagent=round_ % 5 == 0)
    assert given_up > 100  # the mutations did reach the reader's refusals


def test_repeated_blocks_are_skipped_in_c(monkeypatch):
    """The next content blocks of a counted reply (same usage, same request id) are skipped by the C reader, as by
    the Python loop: only the first block of each reply reaches Python."""
    base = assistant()
    blocks = []
    for i in range(4):
        entry = json.loads(json.dumps(base))
        entry["message"]["content"] = [{"type": "text", "text": f"block {i}"}]
        entry["uuid"] = f"b{i}"
        blocks.append(dumps(entry) + b"\n")
    data = b"".join(blocks)
    lines = compiled.Lines(data)
    yielded = []
    for start, at, end, fields in lines:
        yielded.append(start)
        lines.counted(fields[9])
    assert yielded == [0]
    assert_same(monkeypatch, data)
    # a request id that cannot be encoded as UTF-8 (a lone surrogate) skips nothing
    lines = compiled.Lines(data)
    starts = [sum(len(b) for b in blocks[:i]) for i in range(len(blocks))]
    assert [lines.counted("\ud800") or start for start, *_ in lines] == starts


# -- the common line counted in C (Lines.replies) -------------------------------------------------------------


def _reply_line(base: dict, n: int, **changes) -> dict:
    """`base` as the reply to request n (its own request and message ids), with `changes`: top-level keys, or
    `message.<key>` / `usage.<key>` (None deletes the key when given as `...`)."""
    entry = json.loads(json.dumps(base))
    entry["requestId"] = f"req_{n:04d}"
    entry["message"]["id"] = f"msg_{n:04d}"
    entry["uuid"] = f"u{n}"
    for name, value in changes.items():
        where, _, key = name.rpartition("__")
        target = entry if not where else entry["message"] if where == "message" else entry["message"]["usage"]
        if value is ...:
            target.pop(key, None)
        else:
            target[key] = value
    return entry


def counting_cases() -> list[list[dict]]:
    """Files (lists of lines, after a first line naming the session) that reach each rule of the C path."""
    base = assistant()
    session = base.get("sessionId") or "s"
    long_name = "m" * 200
    cases: list[list[dict]] = []
    singles = [
        {},
        {"type": "user"},
        {"type": None},
        {"isApiErrorMessage": True},
        {"isApiErrorMessage": False},
        {"requestSessionId": session},
        {"requestSessionId": "another-session"},
        {"requestSessionId": "another-session", "sessionId": None},
        {"requestId": ""},
        {"requestId": None},
        {"message__id": ""},
        {"message__id": ...},
        {"message__usage": None},
        {"message__model": "<synthetic>"},
        {"message__model": "", "requestedModel": ""},
        {"message__model": None},
        {"message__model": long_name},
        {"message__model": long_name + "m"},
        {"requestedModel": long_name + "m"},
        {"message__model": "é" * 150},  # 150 characters, 300 bytes
        {"requestedModel": "claude-haiku-4-5"},
        {"requestedModel": base["message"]["model"]},
        {"requestedModel": ""},
        {"isAbortedMidStream": True},
        {"usage__speed": ""},
        {"usage__speed": "fast"},
        {"usage__inference_geo": "us"},
        {"usage__inference_geo": ""},
        {"timestamp": None},
        {"timestamp": ""},
        {"timestamp": "2026-11-23T06:05:53.728Z"},
        {"timestamp": "2026-11-23T06:05:5.7281Z"},  # 24 characters, the dot one place early
        {"timestamp": "2026-11-23 06:05:53.728Z"},
        {"timestamp": "2026-11-23T06:05:53.728+"},
        {"timestamp": "2026-11-23T06:05:53.72éZ"},
        {"timestamp": "2026-11-23T06:05:53Z"},
        {"usage__input_tokens": 10**9},
        {"usage__input_tokens": 10**9 - 1},
        {"usage__input_tokens": 10**9 + 1},
        {"usage__cache_creation_input_tokens": 5, "usage__cache_creation": {"ephemeral_1h_input_tokens": 9}},
        {"usage__server_tool_use": {"web_search_requests": 3}},
    ]
    cases.append([_reply_line(base, n, **change) for n, change in enumerate(singles, 1)])
    # one request's lines: growing, repeating, shrinking, the 1-hour part growing faster than the writes
    grow = []
    for i, (out, write, hour, web) in enumerate(
        [
            (10, 100, 0, 0),
            (10, 100, 0, 0),
            (25, 100, 0, 0),
            (20, 100, 0, 0),
            (25, 100, 80, 0),
            (25, 130, 130, 0),
            (30, 130, 130, 2),
            (30, 130, 130, 2),
        ]
    ):
        entry = _reply_line(
            base,
            999,
            **{
                "usage__output_tokens": out,
                "usage__cache_creation_input_tokens": write,
                "usage__cache_creation": {"ephemeral_1h_input_tokens": hour},
                "usage__server_tool_use": {"web_search_requests": web},
            },
        )
        entry["uuid"] = f"g{i}"
        entry["extra"] = {"block": i}  # not a flat tail: no line is skipped unread
        grow.append(entry)
    cases.append(grow)
    # the same with the figures at the bound on a later line (suspicious), and with no request id (message key)
    bound = [dict(line, extra={"block": i}) for i, line in enumerate(grow)]
    bound[-1] = _reply_line(base, 999, usage__output_tokens=10**9)
    cases.append(bound)
    cases.append([_reply_line(base, 7, requestId=None), _reply_line(base, 7, requestId=None, usage__output_tokens=999)])
    return cases


@pytest.mark.parametrize("subagent", [False, True])
def test_lines_of_every_shape_count_the_same_in_c(monkeypatch, subagent):
    first = dumps(assistant())
    for case in counting_cases():
        data = b"\n".join([first, *map(dumps, case)]) + b"\n"
        assert_same(monkeypatch, data, subagent)


def test_the_common_line_is_counted_in_c(monkeypatch):
    """Of a file Claude Code wrote, only the line that names the session reaches Python; the other replies are
    counted in C, as the Python loop counts them."""
    claude = [p.read_bytes() for p in TRANSCRIPTS if "claude" in p.parts and p.parent.name != "subagents"]
    data = max(claude, key=lambda d: d.count(b'"requestId"'))
    data = data[: data.rfind(b"\n") + 1]
    lines, seen, out, left = compiled.Lines(data), {}, [], []
    while (line := lines.replies(seen, False, 0, out, not left, None)) is not None:
        left.append(line)
    python, c = both(monkeypatch, data)
    assert left == [(python[0].session_id, python[0].cwd, python[0].version)]  # the file's facts, once
    assert len(out) == len(python[0].replies) >= 5  # every reply counted in C
    assert c == python
    # when the session is known, the same replies and no facts
    lines, seen, again = compiled.Lines(data), {}, []
    assert lines.replies(seen, False, 0, again, False, None) is None
    assert again == out


def test_replies_needs_the_reply_type_first():
    code = (
        "from capguard.importers import _claude_scan as c\n"
        "try:\n    c.Lines(b'{}\\n').replies({}, False, 0, [], True, None)\n"
        "except RuntimeError as e:\n    print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert "configure" in done.stdout


# -- folding as it counts (an import of a settled transcript) --------------------------------------------------


def assert_folds_the_same(monkeypatch, data: bytes, subagent: bool = False) -> None:
    """`scan(fold=True)` with the C reader: the Python loop's replies passed through `claude_files.folded`, the same
    span, facts and counts, the same max-wins state."""
    from capguard.importers.claude_files import folded

    monkeypatch.setattr(claude_scan, "_compiled", None)
    counter = claude_scan.ReplyCounter(subagent=subagent)
    python = claude_scan.scan(data, 100, counter, fold=True)
    assert not python.folded  # the Python loop leaves folding to the importer
    monkeypatch.setattr(claude_scan, "_compiled", compiled)
    c_counter = claude_scan.ReplyCounter(subagent=subagent)
    c = claude_scan.scan(data, 100, c_counter, fold=True)
    assert c.folded
    assert c.replies == folded(python.replies)
    facts = ("malformed", "suspicious", "first_utc", "last_utc", "cwd", "version", "session_id")
    assert [getattr(c, f) for f in facts] == [getattr(python, f) for f in facts]
    assert c_counter.seen == counter.seen


@pytest.mark.parametrize("path", TRANSCRIPTS, ids=lambda p: str(p).replace(str(ROOT), ""))
def test_every_fixture_transcript_folds_the_same(monkeypatch, path):
    data = path.read_bytes()
    assert_folds_the_same(monkeypatch, data[: data.rfind(b"\n") + 1], path.parent.name == "subagents")


def test_lines_of_every_shape_fold_the_same(monkeypatch):
    base = assistant()
    first = dumps(base)
    plus = [_reply_line(base, 5, requestId="req+5", usage__output_tokens=n, extra={"b": n}) for n in (1, 2, 3)]
    odd = [  # a request whose row Python counts (a timestamp of another form) and whose corrections C counts
        _reply_line(base, 6, timestamp="2026-11-23T06:05:53Z", usage__output_tokens=1),
        _reply_line(base, 6, usage__output_tokens=4, extra={"b": 1}),
        _reply_line(base, 6, usage__output_tokens=9, extra={"b": 2}),
    ]
    late = [  # a correction later in time than its row: the span still ends there
        _reply_line(base, 8, timestamp="2026-11-23T06:05:53.000Z", usage__output_tokens=1),
        _reply_line(base, 8, timestamp="2099-01-01T00:00:00.000Z", usage__output_tokens=2, extra={"b": 1}),
        dumps({"type": "user", "timestamp": "2026-11-23T06:05:54.000Z"}).decode(),
    ]
    for case in [*counting_cases(), plus, odd, late]:
        lines = [first, *(line.encode() if isinstance(line, str) else dumps(line) for line in case)]
        for subagent in (False, True):
            assert_folds_the_same(monkeypatch, b"\n".join(lines) + b"\n", subagent)


def test_crafted_and_mutated_lines_fold_the_same(monkeypatch, corpora):
    assert_folds_the_same(monkeypatch, b"\n".join(crafted()) + b"\n")
    rng = random.Random(16)
    lines = real_lines()
    for round_ in range(40):
        picked = [rng.choice(lines) for _ in range(40)]
        mutated = [mutate(line, rng) if rng.random() < 0.5 else line for line in picked]
        assert_folds_the_same(monkeypatch, b"\n".join(mutated) + b"\n", subagent=round_ % 5 == 0)
    assert len(corpora) > 20
    for path in corpora:  # streamed and resumed sessions among them: corrections to fold
        assert_folds_the_same(monkeypatch, path.read_bytes(), "subagents" in path.parts)


def test_every_kind_of_byte_at_every_place_in_a_long_string():
    """The reader skips plain string bytes 16 at a time: a quote, an escape, a control character, a multi-byte or
    a broken character is found wherever it falls in (or across) those 16 bytes."""
    base = assistant()
    for special in (
        b'\\"',
        b"\\\\",
        b"\\n",
        b"\\u00e9",
        b"\t",
        b"\x01",
        b"\x7f",
        b"\xc3\xa9",
        b"\xe2\x82\xac",
        b"\xf0\x9f\x98\x80",
        b"\xc3",
        b"\xed\xa0\x80",
        b"\xff",
        b"\x80",
    ):
        for at in range(0, 40):
            text = b"x" * at + special + b"y" * (37 - at % 19)
            entry = dumps({**base, "extra": "@@"})
            line = entry.replace(b'"@@"', b'"' + text + b'"')
            assert_certain_only_when_right(line)
            ok = compiled.read_fields(line) is not None
            try:  # strictly valid UTF-8 and JSON: what the reader must read (json.loads of bytes lets surrogates by)
                json.loads(line.decode("utf-8"))
                valid = True
            except ValueError:
                valid = False
            assert ok == valid, (special, at)


def test_the_compiled_walk_lists_what_the_python_walk_lists(tmp_path, monkeypatch):
    """`list_jsonl` (C) finds the transcripts `claude._walk` finds, with the same stat figures: symlinked files
    followed, symlinked folders not entered, a broken link or a folder named *.jsonl skipped, any file name."""
    import os

    from capguard.importers import claude

    projects = tmp_path / "projects"
    session = projects / "-p1" / "s1"
    (session / "subagents").mkdir(parents=True)
    (projects / "-p1" / "s1.jsonl").write_bytes(b"{}\n")
    (session / "subagents" / "agent-a.jsonl").write_bytes(b"{}\n{}\n")
    (projects / "-p1" / "notes.txt").write_text("x")
    (projects / "-p1" / "notes-jsonl").write_text("x")  # not a .jsonl
    (projects / "-p1" / "folder.jsonl").mkdir()
    (projects / "-p1" / "folder.jsonl" / "inner.jsonl").write_bytes(b"1\n")
    (projects / "-p1" / "link.jsonl").symlink_to(projects / "-p1" / "s1.jsonl")
    (projects / "-p1" / "broken.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    (projects / "-p1" / "dirlink.jsonl").symlink_to(session)
    (projects / "-p2").symlink_to(projects / "-p1")  # a project folder that is a link: not entered
    deep = projects / "-p3" / "a" / "b" / "c"
    deep.mkdir(parents=True)
    (deep / "d.jsonl").write_bytes(b"")
    (projects / "-p3" / os.fsdecode(b"caf\xe9-\xff.jsonl")).write_bytes(b"2\n")
    (projects / "-p3" / "s p a c e.jsonl").write_bytes(b"3\n")
    (projects / "top.jsonl").write_bytes(b"4\n")  # beside the project folders, which threads walk
    for i in range(40):  # enough folders for both walking threads
        (projects / f"-q{i}" / "s").mkdir(parents=True)
        (projects / f"-q{i}" / "s.jsonl").write_bytes(b"5\n" * i)
        (projects / f"-q{i}" / "s" / "agent.jsonl").write_bytes(b"6\n")

    def figures(listing):
        return {path: (s.st_size, s.st_mtime_ns, s.st_ino, round(s.st_mtime, 6)) for path, s in listing.items()}

    assert claude._lister is not None
    c = claude.list_transcripts([tmp_path])
    monkeypatch.setattr(claude, "_lister", None)
    python = claude.list_transcripts([tmp_path])
    assert figures(c) == figures(python)
    assert list(c) == list(python)  # sorted alike
    assert len(c) == 8 + 80 and not any("dirlink" in p or "broken" in p or "-p2" in p for p in c)
