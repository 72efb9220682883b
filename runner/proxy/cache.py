"""The completion cache: a key derived from what the provider sees, and three stores for it.

**The cache key** is the SHA-256 of a canonical JSON (sorted keys, no spaces) of:

* ``provider`` and ``model``;
* the model params that are sent, in Parea's names, without values equal to the defaults
  (``temp: 1.0`` and no ``temp`` are the same request) — including unknown params such as
  ``seed``, which is how to ask a provider for a different sample;
* the messages as sent (``history`` prepended, ``{{placeholders}}`` filled from ``llm_inputs``);
* ``functions`` and ``function_call``;
* ``metadata["cache_seed"]`` if present, and nothing else from ``metadata``;
* the *scope*: the tenant the request is made for (on the server, the caller's API key's owner)
  and a SHA-256 fingerprint of the provider key and base URL it is sent with, so one tenant's
  cached answers never answer another tenant, nor a request bringing a different provider key.

Trace ids, names, tags, project, experiment and the rest of ``metadata`` do not change the key,
so re-running an experiment reuses its completions. To get a fresh sample per trial while keeping
re-runs cached, put the trial index in ``metadata["cache_seed"]``; to bypass the cache, send
``cache: false``. The API key and base URL are not part of the key.

Only successful completions are stored. Stores are synchronous and thread-safe: the proxy reads
on the event loop (a primary-key lookup) and writes from a worker thread. The cache of a SQLite
store is :class:`SQLiteCompletionCache` on its file; that of a PostgreSQL store is
:class:`StoreCompletionCache`, in the database, so every server worker (and every embedded run
on that database) shares it.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Protocol

import orjson

from runner.proxy.providers import Completion, LLMCall
from runner.store.migrations import COMPLETION_CACHE_TABLE
from runner.store.sqlite import Store, enable_wal

__all__ = [
    "CACHE_SEED_KEY",
    "CompletionCache",
    "MemoryCompletionCache",
    "SQLiteCompletionCache",
    "StoreCompletionCache",
    "cache_key",
    "cache_scope",
]

#: The one ``metadata`` entry that is part of the cache key.
CACHE_SEED_KEY = "cache_seed"

_KEY_VERSION = 2  # bump when the key's inputs change, so old entries are never misread


def cache_scope(tenant: str, api_key: str | None, base_url: str) -> str:
    """Who a cached answer belongs to: the tenant and a fingerprint of the provider credentials."""
    fingerprint = hashlib.sha256(f"{api_key or ''}\n{base_url}".encode()).hexdigest()
    return f"{tenant}\n{fingerprint}"


def cache_key(call: LLMCall, cache_seed: Any = None, *, scope: str = "") -> str:
    """The hex SHA-256 identifying ``call`` (and the optional seed) in a cache, for ``scope``
    (:func:`cache_scope`)."""
    payload = {
        "scope": scope,
        "v": _KEY_VERSION,
        "provider": call.provider,
        "model": call.model,
        "params": call.params,
        "messages": call.messages,
        "functions": call.functions,
        "function_call": call.function_call,
        "cache_seed": cache_seed,
    }
    canonical = orjson.dumps(payload, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS, default=str)
    return hashlib.sha256(canonical).hexdigest()


class CompletionCache(Protocol):
    """Where completions are kept between requests. Implementations must be thread-safe."""

    def get(self, key: str) -> Completion | None: ...

    def put(self, key: str, completion: Completion, *, provider: str) -> None: ...

    def close(self) -> None: ...


class MemoryCompletionCache:
    """A dict behind a lock; for tests and short-lived processes."""

    def __init__(self) -> None:
        self._entries: dict[str, Completion] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Completion | None:
        return self._entries.get(key)

    def put(self, key: str, completion: Completion, *, provider: str) -> None:
        with self._lock:
            self._entries[key] = completion

    def close(self) -> None:
        pass

    def __len__(self) -> int:
        return len(self._entries)


_SCHEMA = COMPLETION_CACHE_TABLE  # a migration of the store, so a store file has it already


class SQLiteCompletionCache:
    """Completions in table ``completion_cache`` of a SQLite file, which other tables may share.

    Each thread gets its own connection (WAL mode, so readers never wait for the writer, and a
    busy timeout for concurrent writers, in this process or another).

    Example::

        cache = SQLiteCompletionCache(".runner/runner.db")
        proxy = Proxy(cache)
    """

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 5000) -> None:
        self.path = Path(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._closed = False
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = self._conn()
        enable_wal(conn, self._busy_timeout_ms / 1000)
        conn.execute(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise RuntimeError(f"completion cache {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:
                    raise RuntimeError(f"completion cache {self.path} is closed")
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                conn.execute(f"PRAGMA busy_timeout={int(self._busy_timeout_ms)}")
                conn.execute("PRAGMA synchronous=NORMAL")
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    def get(self, key: str) -> Completion | None:
        row = self._conn().execute("SELECT value FROM completion_cache WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return _completion(row[0])

    def put(self, key: str, completion: Completion, *, provider: str) -> None:
        self._conn().execute(
            "INSERT OR REPLACE INTO completion_cache (key, provider, model, value, created_at)"
            " VALUES (?, ?, ?, ?, ?)",
            (key, provider, completion.model, orjson.dumps(asdict(completion)),
             datetime.now(timezone.utc).isoformat()),
        )

    def close(self) -> None:
        """Close every connection; later calls raise."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT count(*) FROM completion_cache").fetchone()[0])


def _completion(value: bytes | str) -> Completion:
    data = orjson.loads(value)
    return Completion(str(data["content"]), str(data["model"]), int(data["input_tokens"]), int(data["output_tokens"]))


class StoreCompletionCache:
    """Completions in table ``completion_cache`` of an open store (a migration makes it), through
    the store's own connections: a PostgreSQL store's cache is shared by every process on it.

    ``close_store=True`` closes the store with the cache (when the cache opened it).

    Example::

        cache = StoreCompletionCache(Store("postgresql://runner@db/runner"), close_store=True)
    """

    def __init__(self, store: Store, *, close_store: bool = False) -> None:
        self.store = store
        self._close_store = close_store

    def get(self, key: str) -> Completion | None:
        rows = self.store._query("SELECT value FROM completion_cache WHERE key=?", (key,))
        return _completion(bytes(rows[0][0])) if rows else None

    def put(self, key: str, completion: Completion, *, provider: str) -> None:
        with self.store.transaction() as c:
            c.execute(
                "INSERT INTO completion_cache (key, provider, model, value, created_at) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT(key) DO UPDATE SET provider=excluded.provider, model=excluded.model,"
                " value=excluded.value, created_at=excluded.created_at",
                (key, provider, completion.model, orjson.dumps(asdict(completion)),
                 datetime.now(timezone.utc).isoformat()),
            )

    def close(self) -> None:
        if self._close_store:
            self.store.close()

    def __len__(self) -> int:
        return int(self.store._query("SELECT count(*) FROM completion_cache")[0][0])
