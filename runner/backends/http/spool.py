"""The spool: trace logs that could not reach the server, kept on disk until they can.

When logging over HTTP and the server stops answering, ``runner.backends.http.backend.HttpBackend`` keeps a few
batches in memory and writes the rest here; it keeps retrying, and delivers what is spooled when
the server is back. If the run ends first, the spool stays and ``python -m runner sync``
delivers it later (``runner.backends.http.replay``).

Where: ``<folder of the store>/spool/<experiment_uuid>.jsonl``, that is ``.runner/spool/`` in the
working directory by default, or next to ``RUNNER_DB`` when that is set (:func:`default_spool_dir`).

The file is append-only JSON lines, each appended line fsync'd before the append returns:

* ``{"spool": 1, "experiment_uuid": ..., "base_url": ...}`` — the header, first;
* ``{"batch": SEQ, "n": N, "logs": [...]}`` — one batch of N ``TraceLogSchema`` dicts;
* ``{"delivered": SEQ}`` — that batch got a 2xx (``{"refused": SEQ, "detail": ...}``: a 4xx, which
  no retry can change);
* ``{"finish": {"status": ..., "dataset_level_stats": [...]}}`` — the finish call still to make;
* ``{"finished": true}`` — it was made.

Delivering a batch twice is harmless: a trace log POST is an upsert keyed by ``trace_id`` (root
ids are deterministic per row and trial, span ids unique), so a replay after a partial delivery
stores each log once. A line torn by a crash is ignored (its batch was never acknowledged as
spooled, so it was not dropped from memory before). A file is removed only when every batch in
it was delivered (or refused) and its finish call, if any, succeeded; appends and that removal
take an exclusive ``flock`` on the file, so a concurrent ``sync`` never unlinks a fresh batch.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from runner._json import json_default, safe_log
from runner.errors import BackendError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking; run sync after the run
    fcntl = None  # type: ignore[assignment]

__all__ = ["FORMAT_VERSION", "PendingBatch", "Spool", "SpoolState", "default_spool_dir", "spool_files"]

FORMAT_VERSION = 1
_BATCH_HEAD = re.compile(rb'\{"batch":(\d+),"n":(\d+),')
_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY


def default_spool_dir(db_path: str | Path | None = None) -> Path:
    """``spool/`` beside the store (``db_path``, else ``RUNNER_DB``, else ``.runner/runner.db``)."""
    if db_path is None:
        from runner.settings import Settings

        db_path = Settings.from_env().db_path
    return (Path(db_path).expanduser().parent / "spool").absolute()


def spool_files(directory: str | Path) -> list[Path]:
    """The spool files in ``directory``, oldest first (none if it does not exist)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(d.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name))


@dataclass(frozen=True)
class PendingBatch:
    """Where one spooled, undelivered batch is in its file."""

    seq: int
    offset: int
    length: int
    n_logs: int


@dataclass
class SpoolState:
    """What a spool file holds: its header, the batches still to deliver, and the finish call."""

    experiment_uuid: str | None
    base_url: str | None
    pending: list[PendingBatch]
    finish: dict[str, Any] | None
    max_seq: int

    @property
    def pending_logs(self) -> int:
        return sum(b.n_logs for b in self.pending)


class Spool:
    """The spool file of one experiment: :meth:`append` batches, :meth:`mark` them delivered,
    :meth:`record_finish`; :meth:`state` reads it back. Thread-safe; every write is fsync'd."""

    def __init__(self, path: str | Path, *, experiment_uuid: str | None = None, base_url: str | None = None) -> None:
        self.path = Path(path)
        self.experiment_uuid = experiment_uuid
        self.base_url = base_url
        self._lock = threading.Lock()
        self._seq: int | None = None

    @classmethod
    def for_experiment(cls, directory: str | Path, experiment_uuid: str, base_url: str) -> Spool:
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment_uuid) or "unknown"
        return cls(Path(directory) / f"{safe}.jsonl", experiment_uuid=experiment_uuid, base_url=base_url)

    # -- writing --------------------------------------------------------------------------------
    def append(self, logs: Sequence[Mapping[str, Any]]) -> PendingBatch:
        """Write one batch and fsync it; raises :class:`BackendError` naming the file if it cannot."""
        with self._lock:
            if self._seq is None:
                self._seq = self.state().max_seq if _size(self.path) else 0
            self._seq += 1
            seq = self._seq
            record = {"batch": seq, "n": len(logs), "logs": list(logs)}
            try:
                line = orjson.dumps(record, default=json_default, option=_JSON_OPTIONS) + b"\n"
            except TypeError:  # what JSON cannot carry (a lone surrogate, a huge int): repaired
                record["logs"] = [safe_log(log) for log in logs]
                line = orjson.dumps(record, default=json_default, option=_JSON_OPTIONS) + b"\n"
            offset = self._write(line, what=f"{len(logs)} trace log(s)")
        return PendingBatch(seq, offset, len(line), len(logs))

    def mark(self, seq: int, refused: str | None = None) -> None:
        """Record that batch ``seq`` was delivered (or refused for good, with the server's detail)."""
        record: dict[str, Any] = {"delivered": seq} if refused is None else {"refused": seq, "detail": refused}
        with self._lock:
            self._write(orjson.dumps(record) + b"\n", what="a delivery mark")

    def record_finish(
        self,
        status: str,
        dataset_level_stats: Sequence[Mapping[str, Any]],
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        """Record the finish call (``POST /experiment/{uuid}/finished``) still to make
        (``extra``: extension fields of its body, sent as they are)."""
        body = {**(extra or {}), "status": status, "dataset_level_stats": [dict(s) for s in dataset_level_stats]}
        line = orjson.dumps({"finish": body}, default=json_default, option=_JSON_OPTIONS) + b"\n"
        with self._lock:
            self._write(line, what="the finish call")

    def _write(self, line: bytes, *, what: str) -> int:
        """Append ``line`` under the file lock and fsync it; returns its offset."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._locked(create=True) as fd:
                end = os.lseek(fd, 0, os.SEEK_END)
                prefix = b""
                if end == 0:
                    header = {"spool": FORMAT_VERSION, "experiment_uuid": self.experiment_uuid}
                    prefix = orjson.dumps({**header, "base_url": self.base_url}) + b"\n"
                elif _last_byte(fd, end) != b"\n":
                    prefix = b"\n"  # a line torn by a crash: start afresh after it
                data = prefix + line
                written = 0
                while written < len(data):
                    written += os.write(fd, data[written:])
                os.fsync(fd)
                if end == 0:
                    _fsync_dir(self.path.parent)  # the new file's name survives a power cut too
                return end + len(prefix)
        except OSError as exc:
            raise BackendError(
                f"cannot spool {what} to {self.path}: {exc.strerror or exc}; free space there, or make the "
                "folder writable (the spool lives next to the store: set RUNNER_DB to move it)"
            ) from exc

    @contextlib.contextmanager
    def _locked(self, *, create: bool) -> Iterator[int]:
        """An fd on the file under an exclusive lock, reopened if it was unlinked meanwhile."""
        flags = os.O_RDWR | os.O_APPEND | (os.O_CREAT if create else 0)
        while True:
            fd = os.open(self.path, flags, 0o644)
            try:
                if fcntl is not None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
                if same:
                    yield fd
                    return
            finally:
                os.close(fd)  # closing releases the lock
            if not create:
                raise FileNotFoundError(self.path)

    # -- reading --------------------------------------------------------------------------------
    def read(self, batch: PendingBatch) -> list[dict[str, Any]]:
        """The logs of a spooled batch."""
        with open(self.path, "rb") as f:
            f.seek(batch.offset)
            record = orjson.loads(f.read(batch.length))
        logs: list[dict[str, Any]] = record["logs"]
        return logs

    def state(self) -> SpoolState:
        """Read the file: header, undelivered batches (in order), the finish call still to make."""
        done: set[int] = set()
        batches: list[PendingBatch] = []
        finish: dict[str, Any] | None = None
        header: dict[str, Any] = {}
        max_seq = 0
        offset = 0
        with open(self.path, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # e.g. a device: never read it whole
                raise BackendError(f"spool {self.path} is not a regular file; move it away")
            for raw in f:
                start, offset = offset, offset + len(raw)
                head = _BATCH_HEAD.match(raw)
                if head is not None:  # batch lines are the big ones: not parsed here
                    seq = int(head.group(1))
                    max_seq = max(max_seq, seq)  # torn or not: its number is not reused
                    if raw.endswith(b"]}\n"):  # else torn by a crash (and ended by a later append)
                        batches.append(PendingBatch(seq, start, len(raw), int(head.group(2))))
                    continue
                if not raw.endswith(b"\n"):
                    break  # torn by a crash
                try:
                    record = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    continue
                if not isinstance(record, dict):
                    continue
                if "delivered" in record:
                    done.add(int(record["delivered"]))
                elif "refused" in record:
                    done.add(int(record["refused"]))
                elif "finish" in record:
                    finish = record["finish"]
                elif "finished" in record:
                    finish = None
                elif "spool" in record:
                    header = record
        if self.experiment_uuid is None:
            self.experiment_uuid = header.get("experiment_uuid")
        if self.base_url is None:
            self.base_url = header.get("base_url")
        pending = [b for b in batches if b.seq not in done]
        return SpoolState(header.get("experiment_uuid"), header.get("base_url"), pending, finish, max_seq)

    def remove_if_done(self) -> bool:
        """Delete the file if nothing in it is left to deliver or call (checked under its lock)."""
        with self._lock:
            if not self.path.is_file():
                return not self.path.exists()
            try:
                with self._locked(create=False):
                    state = self.state()
                    if state.pending or state.finish is not None:
                        return False
                    self.path.unlink()
                    return True
            except FileNotFoundError:
                return True

    def mark_finished(self) -> None:
        """Record that the finish call was made."""
        with self._lock:
            self._write(b'{"finished":true}\n', what="a finish mark")


def _last_byte(fd: int, end: int) -> bytes:
    os.lseek(fd, end - 1, os.SEEK_SET)  # O_APPEND: the next write still goes to the end
    return os.read(fd, 1)


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # not every platform lets a folder be opened
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
