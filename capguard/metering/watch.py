"""File-change notifications from watchdog (inotify), handed to the supervisor's main loop.

The observer thread only enqueues paths; reading and deciding happen on the main thread.
"""

from __future__ import annotations

import enum
import logging
import queue
from collections.abc import Callable, Iterable
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

log = logging.getLogger(__name__)
POLL_INTERVAL = 0.25
# Writes only. Opens and no-write closes must not count: reading a file we watch makes both, and
# treating them as changes turns every read into another read (measured: 100% of a core while idle).
WRITES = (FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileClosedEvent)


class Wake(str, enum.Enum):
    """What wakes the run loop, the first item of each message on its queue: a watched file changed (the
    watcher's, with its path), the month was read again, the agent exited (the supervisor's own)."""

    FILE = "file"
    MONTH = "month"
    EXIT = "exit"
    PROXY = "proxy"  # strict mode: a call settled or refused by the metering proxy (the event itself)


class _Enqueue(FileSystemEventHandler):
    def __init__(self, wants: Callable[[Path], bool], sink: queue.Queue):
        self._wants = wants
        self._sink = sink

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.is_directory or not isinstance(event, WRITES):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                path = Path(raw if isinstance(raw, str) else raw.decode())
                if self._wants(path):
                    self._sink.put((Wake.FILE, path))


def nearest_existing(path: Path) -> Path:
    for candidate in [path, *path.parents]:
        if candidate.is_dir():
            return candidate
    return Path("/")


class Watcher:
    """One observer per run over the narrowest existing directories that hold the watched files."""

    def __init__(
        self,
        targets: Iterable[tuple[Path, bool]],
        wants: Callable[[Path], bool],
        sink: queue.Queue,
        *,
        poll: bool = False,
    ):
        # targets: (path, is_directory_tree); a file is watched through its directory
        self._dirs: dict[Path, bool] = {}
        for path, tree in targets:
            folder = path if tree else path.parent
            existing = nearest_existing(folder)
            recursive = tree or existing != folder
            self._dirs[existing] = self._dirs.get(existing, False) or recursive
        self._handler = _Enqueue(wants, sink)
        self._poll = poll
        self._observer = None
        self.kind = "none"

    def start(self) -> None:
        try:
            self._observer = self._start(PollingObserver(timeout=POLL_INTERVAL) if self._poll else Observer())
        except OSError as err:  # e.g. the inotify watch limit: polling still works
            log.warning("inotify unavailable (%s); polling every %.2fs", err, POLL_INTERVAL)
            self._observer = self._start(PollingObserver(timeout=POLL_INTERVAL))
        self.kind = type(self._observer).__name__

    def _start(self, observer):
        for folder, recursive in self._dirs.items():
            observer.schedule(self._handler, str(folder), recursive=recursive, event_filter=list(WRITES))
        observer.start()
        return observer

    def stop(self) -> None:
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
            self._observer = None
