"""Which rollout files are this run's: the ones a process of its tree holds open.

Codex's native binary keeps its thread's rollout file open (append mode) for as long as it runs: a new thread's
file, and the old file `codex exec resume` appends to (measured on Codex 0.169.1). So a file is this run's once a
process of capguard's tree (capguard is a subreaper: orphans included) is seen holding it, and stays so for the
run. A file held open to write only by a process outside the tree is another Codex session's (a neighbour in
another terminal) and is not charged; one an outsider only reads (`tail -f`, another capguard) is no sign of that. A file nobody holds when its lines are read (the writer already gone) cannot be told apart:
it is charged, fail safe, and the report says so.
"""

from __future__ import annotations

import enum
import os
from dataclasses import dataclass, field
from pathlib import Path

from capguard.core.events import Event, Reply
from capguard.metering.tail import Parser

ROLLOUT_PREFIX = "rollout-"


class Owner(enum.Enum):
    OWN = "own"
    FOREIGN = "foreign"
    UNKNOWN = "unknown"


def _held(procs, *, writing: bool = False) -> dict[str, object]:
    """realpath of each rollout file these processes hold open (`writing`: open to write, as Codex holds its own,
    `a+`; a reader such as `tail -f` or another capguard's tailer is no writer) -> the process holding it."""
    import psutil

    found: dict[str, object] = {}
    for proc in procs:
        try:
            for opened in proc.open_files():
                if writing and getattr(opened, "mode", "r") == "r":
                    continue  # a reader, or no mode known: not a sign of another session
                if os.path.basename(opened.path).startswith(ROLLOUT_PREFIX):
                    found.setdefault(opened.path, proc)
        except psutil.Error:
            continue
    return found


@dataclass
class Attribution:
    """The run's verdict on each rollout file, and the tally of what was left out or charged on doubt."""

    root: int = field(default_factory=os.getpid)
    own: set[str] = field(default_factory=set)
    holders: dict[str, object] = field(default_factory=dict)  # foreign file -> the outside process holding it
    dropped_replies: int = 0
    dropped_tokens: int = 0
    doubtful: set[str] = field(default_factory=set)  # files charged though no process held them when read

    def _tree(self) -> list:
        import psutil

        try:
            return psutil.Process(self.root).children(recursive=True)
        except psutil.Error:
            return []

    def whose(self, path: str) -> Owner:
        import psutil

        if path in self.own:
            return Owner.OWN
        tree = self._tree()
        self.own.update(_held(tree))  # every file the tree holds now is the run's, for the rest of the run
        if path in self.own:
            self.holders.pop(path, None)
            return Owner.OWN
        holder = self.holders.get(path)
        if holder is not None and path in _held([holder], writing=True):
            return Owner.FOREIGN
        inside = {proc.pid for proc in tree} | {self.root}  # capguard itself holds every file it follows
        outside = (proc for proc in psutil.process_iter() if proc.pid not in inside)
        holder = _held(outside, writing=True).get(path)
        if holder is not None:
            self.holders[path] = holder
            return Owner.FOREIGN
        self.holders.pop(path, None)
        return Owner.UNKNOWN

    def notes(self) -> list[str]:
        found = []
        if self.dropped_replies:
            found.append(
                f"{self.dropped_replies} replies ({self.dropped_tokens} tokens) written by another Codex session"
                " (a rollout file only a process outside this run held open to write) were not charged"
            )
        if self.doubtful:
            found.append(
                f"{len(self.doubtful)} rollout file(s) were charged though no process held them open to write when"
                " read (their writer had exited): they could be another session's"
            )
        return found


class OwnThreads:
    """A rollout file's parser whose events count only when the file is this run's (or cannot be told apart)."""

    def __init__(self, path: Path, parser: Parser, attribution: Attribution):
        self.path = os.path.realpath(path)
        self.parser = parser
        self.attribution = attribution
        self._checked = False

    def feed(self, line: bytes, offset: int) -> list[Event]:
        events = self.parser.feed(line, offset)
        if not self._checked:
            # the first line read is checked even when it carries no usage: its writer is still running then
            self._checked = True
            self.attribution.whose(self.path)
        if not events:
            return events
        owner = self.attribution.whose(self.path)
        if owner is Owner.FOREIGN:
            replies = [event for event in events if isinstance(event, Reply)]
            self.attribution.dropped_replies += len(replies)
            self.attribution.dropped_tokens += sum(reply.tokens for reply in replies)
            return []
        if owner is Owner.UNKNOWN and any(isinstance(event, Reply) for event in events):
            self.attribution.doubtful.add(self.path)
        return events
