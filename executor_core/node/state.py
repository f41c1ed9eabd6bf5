"""What a node keeps on disk in its state directory, one set of files per node name.

- ``<name>.json``: the node's credentials (hub URL and token), mode 0600.
- ``<name>.outbox.json``: finished results the hub has not acknowledged yet, so a restart
  delivers them instead of losing them.
- ``<name>.stats.json``: run counters (peak simultaneous runs, started, finished).
- ``<name>.lock``: held while the node runs; two processes must not share one outbox.

Every write goes to a temporary file that replaces the old one, so a crash never leaves a
half-written file behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

ERR_LOCKED = "another hivemind-node named {name!r} is already running with state dir {dir}"

ResultKey = tuple[str, int]


class StateError(Exception):
    """The state directory cannot be used (unwritable, locked by another process)."""


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/hivemind-node``, or ``~/.local/state/hivemind-node``."""
    base = os.environ.get("XDG_STATE_HOME") or os.path.join("~", ".local", "state")
    return Path(base).expanduser() / "hivemind-node"


def write_json(path: Path, data: Any, *, durable: bool = False) -> None:
    """Atomically replace ``path`` with ``data`` as JSON, readable by the owner only."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False, indent=1)
            if durable:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it does not exist or cannot be read as JSON."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        logger.warning("ignoring unreadable state file %s: %s", path, exc)
        return None


class NodeState:
    """The state directory of one node."""

    def __init__(self, directory: Path, name: str) -> None:
        self.directory = Path(directory)
        self.name = name
        self.credentials_path = self.directory / f"{name}.json"
        self.outbox_path = self.directory / f"{name}.outbox.json"
        self.stats_path = self.directory / f"{name}.stats.json"
        self._lock_path = self.directory / f"{name}.lock"

    def ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create state dir {self.directory}: {exc}") from None
        if not os.access(self.directory, os.W_OK):
            raise StateError(f"state dir {self.directory} is not writable")

    def stored_token(self, hubs: str | Sequence[str]) -> str | None:
        """The token stored by an earlier registration with one of ``hubs`` (several hub
        processes share one database: a token from one is good at all), if any."""
        wanted = [hubs] if isinstance(hubs, str) else list(hubs)
        data = read_json(self.credentials_path)
        if not isinstance(data, dict) or not isinstance(data.get("token"), str):
            return None
        stored = data.get("hubs") if isinstance(data.get("hubs"), list) else [data.get("hub")]
        if not set(stored) & set(wanted):
            logger.warning(
                "ignoring the token stored in %s: it is for hub %s, not %s",
                self.credentials_path,
                ",".join(map(str, stored)),
                ",".join(wanted),
            )
            return None
        return data["token"]

    def store_token(self, hubs: str | Sequence[str], token: str) -> None:
        listed = [hubs] if isinstance(hubs, str) else list(hubs)
        data = {"name": self.name, "hub": listed[0], "hubs": listed, "token": token}
        write_json(self.credentials_path, data, durable=True)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the node's lock file for the duration of the block."""
        fd = os.open(self._lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise StateError(ERR_LOCKED.format(name=self.name, dir=self.directory)) from None
            yield
        finally:
            os.close(fd)


class Outbox:
    """Finished results not yet acknowledged by the hub, persisted on every change."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._entries: dict[ResultKey, dict[str, Any]] = {}
        data = read_json(path)
        for entry in data if isinstance(data, list) else ():
            if isinstance(entry, dict) and {"session_id", "attempt"} <= set(entry):
                self._entries[(entry["session_id"], entry["attempt"])] = entry

    def add(self, result: dict[str, Any]) -> None:
        self._entries[(result["session_id"], result["attempt"])] = result
        self._save()

    def ack(self, key: ResultKey) -> dict[str, Any] | None:
        """Remove and return an acknowledged result (None when it is not, or no longer, here)."""
        result = self._entries.pop(key, None)
        if result is not None:
            self._save()
        return result

    def get(self, key: ResultKey) -> dict[str, Any] | None:
        return self._entries.get(key)

    def results(self) -> list[dict[str, Any]]:
        return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def _save(self) -> None:
        # fsync: an unacknowledged result must survive a crash of the node's machine.
        try:
            write_json(self._path, list(self._entries.values()), durable=True)
        except OSError as exc:  # still held in memory and delivered while the node lives
            logger.error("cannot persist the outbox to %s: %s", self._path, exc)


class Stats:
    """Run counters, written to the stats file whenever one changes."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self.running = 0
        self.peak_running = 0
        self.started = 0
        self.finished = 0
        self._save()

    def run_started(self) -> None:
        self.running += 1
        self.started += 1
        self.peak_running = max(self.peak_running, self.running)
        self._save()

    def run_finished(self) -> None:
        self.running -= 1
        self.finished += 1
        self._save()

    def _save(self) -> None:
        data = {
            "peak_running": self.peak_running,
            "started": self.started,
            "finished": self.finished,
        }
        try:
            write_json(self._path, data)
        except OSError as exc:  # counters are for observation; never fail a run over them
            logger.warning("cannot write %s: %s", self._path, exc)
