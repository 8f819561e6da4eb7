"""The largest usage line of a request wins across files, whatever order they are read in.

Each worker counts a file's lines max-wins (`claude_scan.ReplyCounter`): a request's first line gives row `<key>`,
each later larger line a correction `<key>+<n>` with the increase. A request can also have lines in several files:
a resumed session's transcript starts with a copy of its history (each reply by its final line), and the original
holds the same request's streaming snapshots. Counted file by file, the copy's final line and the original's
corrections would both go in (the ledger keeps the first `<key>` it gets, and the corrections are new keys), and
which went first would depend on which worker finished first.

So the importing process, once every file is read, settles each request found in more than one file, or already in
the ledger: it replays max-wins over the running largest figures of each file's rows, files in a fixed order (the
time of the request's first line in the file, then the path), starting from what the ledger holds for the key. The
request then adds exactly max(all its lines) - (what the ledger has), to the run of the file where it was seen
first; the rows of a request seen in one file only (almost all) are kept as the worker made them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from capguard.agents.claude.logs import max_wins
from capguard.importers.unit_prices import UnitPricer

# Fields of a row as `ledger.bulk.stamp_rows` gives it
_RUN, _KEY, _AT, _MODEL, _FILE, _OFFSET, _DETAILS = 2, 3, 4, 5, 12, 13, 14
_COUNTS = slice(6, 10)  # input, output, cache read, cache write
_EXTRA = ("cache_write_1h", "web_searches")  # the two figures a row keeps in its details


@dataclass
class Requests:
    """Which file saw each request first, and the requests seen in more than one file: fed each file's request
    keys as they come."""

    first_file: dict[str, str] = field(default_factory=dict)
    shared: set[str] = field(default_factory=set)

    def add_file(self, path: str, keys: list[str]) -> None:
        """One file's rows, given by their requests' keys (each once in a file: its first row; a correction follows
        it in the same file): with dict and set operations rather than a loop over every row, as most keys are
        new."""
        first = self.first_file
        fresh = dict.fromkeys(keys, path)
        for key in fresh.keys() & first.keys():  # seen before: the earlier file stays first
            if first[key] != path:
                self.shared.add(key)
            del fresh[key]
        first.update(fresh)


@dataclass
class Settled:
    """What settling changes: the rows written for the settled requests (`stale`, their ids) give way to `new`
    (unstamped), and the rows that stand (`keep`, from the file where a request came first) must be in the ledger
    (a copy's row with the same key may have been written first, and kept them out); `found`: how many rows the settled requests give without the ledger, instead of the `len(stale)`
    the workers found (a copy's rows no longer count; those the ledger had count as known); the runs whose rows
    changed."""

    stale: list[str] = field(default_factory=list)
    keep: list[tuple] = field(default_factory=list)  # stamped rows that stand: written, or to write if skipped
    new: list[tuple] = field(default_factory=list)
    found: int = 0
    runs: set[str] = field(default_factory=set)


def settle(
    groups: list[list[tuple]], settle_keys: set[str], known: dict[str, list[int]], pricer: UnitPricer
) -> Settled:
    """The rows of `groups` for the requests in `settle_keys` re-derived across files, continuing from `known`
    (request key -> the ledger's [input, output, cache read, cache write, 1h part, web searches, corrections])."""
    out = Settled()
    if not settle_keys:
        return out
    by_key: dict[str, dict[str, list[tuple]]] = {}  # request -> file -> its rows
    for rows in groups:
        for row in rows:
            key = row[_KEY].partition("+")[0]  # the request's key: `claude:<id>` of `claude:<id>+<n>` too
            if key in settle_keys:
                by_key.setdefault(key, {}).setdefault(row[_FILE], []).append(row)
    for key, files in by_key.items():
        ordered = sorted(files.values(), key=_file_order)
        for rows in ordered:
            out.runs.update(row[_RUN] for row in rows)
        if key in known:  # continue from the ledger's figures: every row of the import re-derived
            rows_out = _replay(key, ordered, {key: list(known[key])}, pricer)
            out.stale += [row[0] for rows in ordered for row in rows]
            out.new += rows_out
            out.found += len(_replay(key, ordered, {}, None))
            continue
        # the first file's rows stand as the worker made them (max-wins over its lines, as a replay would give
        # them); the other files add only what goes beyond (usually nothing: a copy of the final line)
        first, seen = ordered[0], dict[str, list[int]]()
        _replay(key, [first], seen, None)
        rows_out = _replay(key, ordered[1:], seen, pricer)
        out.stale += [row[0] for rows in ordered[1:] for row in rows]
        out.keep += first
        out.new += rows_out
        out.found += len(first) + len(rows_out)
    return out


def _replay(key: str, files: list[list[tuple]], seen: dict[str, list[int]], pricer: UnitPricer | None) -> list:
    """Max-wins over each file's running largest figures for the request, files in order: the rows it adds (just
    their keys without a `pricer`)."""
    out: list = []
    for rows in files:
        running = [0] * 6
        for row in sorted(rows, key=_correction):
            for i, value in enumerate(_figures(row)):
                running[i] += value
            counted = max_wins(seen, key, list(running))
            if counted is not None:
                out.append(counted[0] if pricer is None else _row(row, *counted, pricer))
    return out


def _file_order(rows: list[tuple]) -> tuple[str, str]:
    first = min(rows, key=_correction)
    return (first[_AT] or "", first[_FILE] or "")


def _correction(row: tuple) -> int:
    _, _, fix = row[_KEY].partition("+")
    return int(fix) if fix else 0


def _figures(row: tuple) -> list[int]:
    details = row[_DETAILS]
    if not details or not any(name in details for name in _EXTRA):  # most rows: nothing to decode
        return [*row[_COUNTS], 0, 0]
    extra = json.loads(details)
    return [*row[_COUNTS], *(int(extra.get(name, 0)) for name in _EXTRA)]


def _row(template: tuple, key: str, figures: list[int], pricer: UnitPricer) -> tuple:
    """An unstamped usage row (`ledger.bulk.UsageRow`) of `template`'s file, line and model with these figures."""
    details = json.loads(template[_DETAILS]) if template[_DETAILS] else {}
    for name in _EXTRA:
        details.pop(name, None)
    speed, geo = details.get("speed"), details.get("inference_geo")
    inp, out, read, write, write_1h, web = figures
    cost, priced_by = pricer.price(template[_MODEL], inp, out, read, write, write_1h, web, speed=speed, geo=geo)
    details.update((name, value) for name, value in zip(_EXTRA, (write_1h, web)) if value)
    text = json.dumps(details, ensure_ascii=False) if details else None
    return (
        template[_RUN],
        key,
        template[_AT],
        template[_MODEL],
        inp,
        out,
        read,
        write,
        cost,
        priced_by,
        template[_FILE],
        template[_OFFSET],
        text,
    )
