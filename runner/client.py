"""The Parea REST API over httpx: :class:`HttpBackend`, the runner's door to a server.

``base_url`` is the API root including ``/api/parea/v1``, exactly as ``PAREA_BASE_URL`` is for
the official SDK; the key goes in ``x-api-key``. The backend works against any server that
speaks the Parea API, and uses the runner server's extensions when ``GET /`` advertises them:

* ``trace_logs_batch``: logs go out in batches of ``batch_size`` (one request, one transaction
  each); without it, one ``POST /trace_log`` per log;
* ``experiment_uuid``: the client picks the experiment's uuid, so retrying its creation is safe;
* ``delete_traces``: ``delete_traces()`` (resuming a run) works; a plain Parea server cannot.

Logging never blocks rows: ``log()`` only appends to a buffer and hands full batches to
``max_concurrency`` background senders through a bounded queue, so it waits only when the
server is that far behind (backpressure). Connection errors, 408, 429 and 5xx are retried with
exponential backoff and full jitter, honouring ``Retry-After``; any other 4xx is not retried and
is raised as a :class:`~runner.errors.BackendError` with the server's detail by ``flush()``:
a log is never dropped silently.

>>> backend = HttpBackend("http://127.0.0.1:8765/api/parea/v1", api_key="my-key")  # doctest: +SKIP
>>> exp = await backend.create_experiment(project_name="default", name="qa", run_name=None, metadata={})
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import threading
import time
import uuid as _uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from runner.errors import BackendError, NotFoundError, RunNameError

__all__ = ["HttpBackend", "error_for", "fetch_experiment_rows", "parse_extensions", "retry_delay"]

_JSON_OPTIONS = orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY
_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_MAX_RETRY_AFTER = 60.0
_MAX_BATCH_BYTES = 8 * 1024 * 1024


# -- the I/O-free core, shared with the sync helpers in runner.client_datasets ----------------
def headers_for(api_key: str | None) -> dict[str, str]:
    headers = {"content-type": "application/json", "accept": "application/json"}
    if api_key:
        headers["x-api-key"] = api_key
    return headers


def encode(body: Any) -> bytes:
    return orjson.dumps(body, default=str, option=_JSON_OPTIONS)


def is_retryable(status_code: int) -> bool:
    return status_code in _RETRY_STATUSES or status_code >= 500


def retry_delay(attempt: int, response: httpx.Response | None, *, backoff: float, max_backoff: float) -> float:
    """Seconds to wait before retry ``attempt`` (0-based): full jitter, at least ``Retry-After``."""
    delay = random.uniform(0.0, min(max_backoff, backoff * 2**attempt))
    if response is not None:
        after = _retry_after(response.headers.get("retry-after"))
        if after is not None:
            delay = max(delay, min(after, _MAX_RETRY_AFTER))
    return delay


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500] or response.reason_phrase
    detail = body.get("detail", body) if isinstance(body, dict) else body
    if isinstance(detail, list):  # FastAPI's 422: name each bad field
        parts = []
        for err in detail[:5]:
            if isinstance(err, dict):
                loc = ".".join(str(x) for x in err.get("loc", ()) if x != "body")
                parts.append(f"{loc}: {err.get('msg')}" if loc else str(err.get("msg")))
            else:
                parts.append(str(err))
        more = f" (and {len(detail) - 5} more)" if len(detail) > 5 else ""
        return "; ".join(parts) + more
    return str(detail)


def error_for(method: str, url: str, response: httpx.Response) -> BackendError:
    """The error to raise for a refused request, with the server's ``detail``."""
    detail = _detail(response)
    status = response.status_code
    if status == 404:
        return NotFoundError(f"{method} {url}: {detail}")
    if status in (401, 403):
        return BackendError(
            f"{method} {url} was refused ({status}): {detail}; check the API key (--api-key or PAREA_API_KEY)"
        )
    return BackendError(f"{method} {url} failed with {status}: {detail}")


def unreachable(method: str, url: str, exc: Exception, attempts: int) -> BackendError:
    return BackendError(
        f"{method} {url} failed after {attempts} attempt(s): {type(exc).__name__}: {exc or 'no response'}; "
        "is the server running (python -m runner serve) and is the base URL right?"
    )


def parse_extensions(health: Any) -> frozenset[str]:
    """The extensions a ``GET /`` body advertises (``"a,b"``); none for a plain Parea server."""
    if not isinstance(health, dict):
        return frozenset()
    raw = health.get("extensions")
    if not isinstance(raw, str):
        return frozenset()
    return frozenset(x.strip() for x in raw.split(",") if x.strip())


def _finite_scores(log: dict[str, Any]) -> dict[str, Any]:
    # NaN/inf cannot travel as JSON numbers (orjson would send null and the batch would be
    # refused); the store drops them too, so both doors keep the same scores.
    scores = log.get("scores")
    if scores and any(not _is_finite(s.get("score")) for s in scores if isinstance(s, Mapping)):
        log = {
            **log,
            "scores": [s for s in scores if not isinstance(s, Mapping) or _is_finite(s.get("score"))],
        }
    return log


def _is_finite(value: Any) -> bool:
    try:
        return math.isfinite(value)
    except TypeError:
        return True  # not a float (bool, int, str): the server coerces or refuses it


# -- the backend ---------------------------------------------------------------------------------
class HttpBackend:
    """A :class:`runner.backend.Backend` that sends results to a Parea-compatible server.

    ``max_concurrency`` requests at most are in flight, over as many kept-alive connections;
    up to ``max_pending_batches`` full batches wait in the queue before ``log()`` waits too.
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        max_concurrency: int = 4,
        batch_size: int = 500,
        max_pending_batches: int | None = None,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff: float = 0.25,
        max_backoff: float = 10.0,
    ) -> None:
        if max_concurrency < 1 or batch_size < 1:
            raise ValueError("max_concurrency and batch_size must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.location = self.base_url
        self.api_key = api_key
        self.max_concurrency = max_concurrency
        self.batch_size = batch_size
        self.max_pending_batches = max_pending_batches or 2 * max_concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        #: what the server advertised in ``GET /`` (``None`` until asked)
        self.extensions: frozenset[str] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._queue: asyncio.Queue[list[dict[str, Any]]] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._buffer: list[dict[str, Any]] = []
        # logs from worker threads (sync functions) gather here, under a lock, and reach the
        # loop a batch at a time: one cross-thread hop per batch instead of one per row
        self._thread_buffer: list[dict[str, Any]] = []
        self._thread_lock = threading.Lock()
        self._failures: list[BackendError] = []
        self._failed_logs = 0

    # plumbing --------------------------------------------------------------------------------
    def _bind(self) -> httpx.AsyncClient:
        """The client of the running loop (a new loop, e.g. a second ``run()``, gets a new one)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._loop = loop
            self._client = httpx.AsyncClient(
                base_url=self.base_url + "/",
                headers=headers_for(self.api_key),
                timeout=self.timeout,
                limits=httpx.Limits(
                    max_connections=self.max_concurrency + 1,
                    max_keepalive_connections=self.max_concurrency + 1,
                ),
            )
            self._queue = asyncio.Queue(maxsize=self.max_pending_batches)
            self._workers = []
        return self._client

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        accept: frozenset[int] = frozenset(),
    ) -> httpx.Response:
        """Send ``body`` (or ``raw`` JSON bytes) with retries; returns a 2xx response (or one whose
        status is in ``accept``)."""
        client = self._bind()
        content = raw if raw is not None else None if body is None else encode(body)
        url = self.base_url + path
        for attempt in range(self.max_retries + 1):
            try:
                response = await client.request(method, path.lstrip("/"), content=content)
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise unreachable(method, url, exc, attempt + 1) from exc
                await asyncio.sleep(retry_delay(attempt, None, backoff=self.backoff, max_backoff=self.max_backoff))
                continue
            if response.status_code < 400 or response.status_code in accept:
                return response
            if is_retryable(response.status_code) and attempt < self.max_retries:
                delay = retry_delay(attempt, response, backoff=self.backoff, max_backoff=self.max_backoff)
                await asyncio.sleep(delay)
                continue
            raise error_for(method, url, response)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _ready(self) -> frozenset[str]:
        """Ask ``GET /`` once which extensions the server offers."""
        if self.extensions is None:
            response = await self._request("GET", "/", accept=frozenset({404, 405}))
            try:
                health = response.json() if response.status_code < 400 else None
            except ValueError:
                health = None
            self.extensions = parse_extensions(health)
        return self.extensions

    # sending -----------------------------------------------------------------------------------
    async def _enqueue(self, batch: list[dict[str, Any]]) -> None:
        self._bind()
        assert self._queue is not None
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._send_loop(), name=f"runner-http-sender-{i}")
                for i in range(self.max_concurrency)
            ]
        await self._queue.put(batch)  # waits while the queue is full: backpressure

    async def _send_loop(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            batch = await queue.get()
            try:
                await self._send(batch)
            except BackendError as exc:
                self._failures.append(exc)
                self._failed_logs += len(batch)
            except Exception as exc:  # a bug or an odd response: reported by flush(), never lost
                self._failures.append(BackendError(f"sending {len(batch)} log(s) failed: {exc!r}"))
                self._failed_logs += len(batch)
            finally:
                queue.task_done()

    async def _send(self, batch: list[dict[str, Any]]) -> None:
        logs = [_finite_scores(log) for log in batch]
        if "trace_logs_batch" in (self.extensions or ()):
            await self._send_batch(logs)
            return
        for log in logs:  # one refused log must not keep the others from being sent
            try:
                await self._request("POST", "/trace_log", log)
            except BackendError as exc:
                self._failures.append(exc)
                self._failed_logs += 1

    async def _send_batch(self, logs: list[dict[str, Any]]) -> None:
        body = encode({"logs": logs})
        if len(body) > _MAX_BATCH_BYTES and len(logs) > 1:  # huge outputs: split, keep requests sane
            half = len(logs) // 2
            await self._send_batch(logs[:half])
            await self._send_batch(logs[half:])
            return
        await self._request("POST", "/trace_logs/batch", raw=body)

    # Backend -----------------------------------------------------------------------------------
    async def create_experiment(
        self, *, project_name: str, name: str, run_name: str | None, metadata: Mapping[str, Any]
    ) -> dict[str, Any]:
        """``POST /project`` then ``POST /experiment``; a refused run name is a ``RunNameError``."""
        extensions = await self._ready()
        project = (await self._request("POST", "/project", {"name": project_name})).json()
        body: dict[str, Any] = {
            "name": name,
            "run_name": run_name,
            "project_uuid": project["uuid"],
            "metadata": dict(metadata),
        }
        if "experiment_uuid" in extensions:
            body["uuid"] = str(_uuid.uuid4())
        response = await self._request("POST", "/experiment", body, accept=frozenset({400}))
        if response.status_code == 400:
            raise RunNameError(_detail(response))
        experiment: dict[str, Any] = response.json()
        return experiment

    async def log(self, logs: Sequence[dict[str, Any]]) -> None:
        extensions = await self._ready()
        self._buffer.extend(logs)
        # without the batch extension each log is one request: queue them one by one so that
        # max_concurrency of them are in flight at once
        size = self.batch_size if "trace_logs_batch" in extensions else 1
        if len(self._buffer) < size:
            return
        full = len(self._buffer) // size * size
        ready, self._buffer = self._buffer[:full], self._buffer[full:]
        for i in range(0, full, size):
            await self._enqueue(ready[i : i + size])

    def log_from_thread(self, logs: Sequence[dict[str, Any]], loop: asyncio.AbstractEventLoop) -> None:
        """``log()`` from a worker thread; blocks that thread only for backpressure."""
        size = self.batch_size if "trace_logs_batch" in (self.extensions or ()) else 1
        with self._thread_lock:
            self._thread_buffer.extend(logs)
            if self.extensions is not None and len(self._thread_buffer) < size:
                return
            batch, self._thread_buffer = self._thread_buffer, []
        asyncio.run_coroutine_threadsafe(self.log(batch), loop).result()

    async def flush(self) -> None:
        with self._thread_lock:
            self._buffer.extend(self._thread_buffer)
            self._thread_buffer = []
        if self._buffer:
            batch, self._buffer = self._buffer, []
            await self._enqueue(batch)
        if self._queue is not None and self._loop is asyncio.get_running_loop():
            await self._queue.join()
        if self._failures:
            first, n, logs = self._failures[0], len(self._failures), self._failed_logs
            self._failures, self._failed_logs = [], 0
            more = f" ({n - 1} more request(s) failed too)" if n > 1 else ""
            raise BackendError(f"{logs} trace log(s) were not stored on {self.location}: {first}{more}") from first

    async def finish_experiment(
        self, experiment_uuid: str, *, status: str, dataset_level_stats: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        await self.flush()
        body = {"status": status, "dataset_level_stats": [dict(s) for s in dataset_level_stats]}
        response = await self._request("POST", f"/experiment/{quote(experiment_uuid, safe='')}/finished", body)
        stats: list[dict[str, Any]] = response.json().get("parent_trace_stats") or []
        return stats

    async def experiment_rows(self, experiment_uuid: str) -> list[dict[str, Any]]:
        response = await self._request("POST", f"/experiment/{quote(experiment_uuid, safe='')}/trace_logs", {})
        rows: list[dict[str, Any]] = response.json()
        for row in rows:
            row.pop("children_logs", None)  # the same shape as the embedded store's rows
        return rows

    async def find_run(self, project_name: str, run_name: str) -> dict[str, Any] | None:
        """The run called ``run_name`` in the project, through ``POST /experiments``, or ``None``."""
        body = {"project_name": project_name, "run_name_filter": run_name}
        listed = (await self._request("POST", "/experiments", body)).json()
        runs = [e for e in listed if isinstance(e, dict) and e.get("run_name") == run_name]
        return max(runs, key=lambda e: str(e.get("created_at", ""))) if runs else None

    async def delete_traces(self, experiment_uuid: str, root_trace_ids: Sequence[str]) -> None:
        """Delete root traces with their descendants; needs the ``delete_traces`` extension."""
        await self.flush()
        if "delete_traces" not in await self._ready():
            raise BackendError(
                f"the server at {self.location} cannot delete traces (the Parea API has no such "
                "endpoint), so this run cannot be resumed there; start a new run instead"
            )
        path = f"/experiment/{quote(experiment_uuid, safe='')}/delete_traces"
        for i in range(0, len(root_trace_ids), 5000):
            await self._request("POST", path, {"root_trace_ids": list(root_trace_ids[i : i + 5000])})

    async def load_dataset(self, identifier: str | int) -> dict[str, Any]:
        try:
            response = await self._request("GET", f"/collection/{quote(str(identifier), safe='')}")
        except NotFoundError:
            collection = None
        else:
            collection = response.json()
        if not isinstance(collection, dict):  # Parea answers null for an unknown dataset
            raise NotFoundError(
                f"dataset {identifier!r} not found on {self.location}; `python -m runner datasets list` "
                "shows the datasets"
            )
        return collection

    async def aclose(self) -> None:
        same_loop = self._loop is not None and self._loop is asyncio.get_running_loop()
        try:
            if same_loop:
                await self.flush()
        finally:
            workers, self._workers = self._workers, []
            client, self._client = self._client, None
            self._loop = None
            if same_loop:  # another loop's tasks and connections died with it
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                if client is not None:
                    await client.aclose()


def fetch_experiment_rows(base_url: str, api_key: str | None, experiment_uuid: str) -> list[dict[str, Any]]:
    """The root trace logs of an experiment on a server, synchronously (to read results later)."""
    from runner.client_datasets import SyncApi

    with SyncApi(base_url, api_key) as api:
        rows: list[dict[str, Any]] = api.request(
            "POST", f"/experiment/{quote(experiment_uuid, safe='')}/trace_logs", {}
        ).json()
    for row in rows:
        row.pop("children_logs", None)
    return rows
