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

**Rate limits.** Every request holds a slot of the process-wide adaptive limiter of this server
(:mod:`runner.ratelimit`): a 429 halves how many requests are in flight and pauses new ones for
its ``Retry-After``; successes bring the concurrency back up.

**When the server goes away.** A batch that still fails after the retries, and every batch after
it while the server stays away, goes to the spool (:mod:`runner.backends.http.spool`: one fsync'd JSON-lines
file per experiment under ``spool_dir``, by default ``.runner/spool/``), and so do new batches
that find the in-memory queue full meanwhile: rows keep running. A background task keeps
retrying the oldest spooled batch with capped exponential backoff; once one gets through, the
spool is delivered and sending goes back to normal. ``flush()`` waits up to ``drain_timeout``
seconds for the spool to empty; if the server is still away, what is left stays on disk (the
finish call too), :meth:`spooled_for` says so, and ``python -m runner sync`` delivers it later.
Nothing is delivered twice into the store: a trace log POST is an upsert keyed by ``trace_id``.
A spool that cannot be written (full disk, unwritable folder) is a ``BackendError`` naming the
file, raised by ``flush()``.

>>> backend = HttpBackend("http://127.0.0.1:8765/api/parea/v1", api_key="my-key")  # doctest: +SKIP
>>> exp = await backend.create_experiment(project_name="default", name="qa", run_name=None, metadata={})
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid as _uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from runner._json import UNSTORABLE, error_log, safe_log
from runner.backends.batching import MAX_DELAY, REQUEST_LOGS, LogBuffer, LoopFeeder
from runner.backends.http.outbox import Outbox
from runner.backends.http.spool import Spool, default_spool_dir
from runner.backends.http.transport import (
    MAX_BATCH_BYTES,
    ServerUnavailable,
    detail_of,
    encode,
    error_for,
    finite_scores,
    headers_for,
    is_retryable,
    parse_extensions,
    retry_delay,
    unreachable,
)
from runner.backends.target import Target
from runner.errors import BackendError, NotFoundError, RunNameError
from runner.ratelimit import limiter_for

__all__ = [
    "HttpBackend",
    "ServerUnavailable",
    "encode",
    "error_for",
    "headers_for",
    "is_retryable",
    "parse_extensions",
    "retry_delay",
    "unreachable",
]

class HttpBackend:
    """A :class:`runner.backends.embedded.Backend` that sends results to a Parea-compatible server.

    ``max_concurrency`` requests at most are in flight (fewer after a 429), over as many
    kept-alive connections; up to ``max_pending_batches`` full batches wait in the queue before
    ``log()`` waits too — or, while the server is failing, before batches go to the spool in
    ``spool_dir`` (default: ``spool/`` next to the store, :func:`runner.backends.http.spool.default_spool_dir`).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        max_concurrency: int = 4,
        batch_size: int = REQUEST_LOGS,
        max_delay: float = MAX_DELAY,
        max_pending_batches: int | None = None,
        timeout: float = 30.0,
        max_retries: int = 5,
        backoff: float = 0.25,
        max_backoff: float = 10.0,
        spool_dir: str | Path | None = None,
        drain_timeout: float = 15.0,
        target: Target | None = None,
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
        #: where batches go while the server is away (resolved now: the working directory may change)
        self.spool_dir = Path(spool_dir).absolute() if spool_dir is not None else default_spool_dir()
        #: the door, for completion() and Dask workers (the store named is where the spool lives)
        self.target = target or Target(db=str(self.spool_dir.parent / "runner.db"), base_url=base_url,
                                       api_key=api_key)
        #: how long ``flush()`` waits for spooled logs to get through before leaving them on disk
        self.drain_timeout = drain_timeout
        #: what the server advertised in ``GET /`` (``None`` until asked)
        self.extensions: frozenset[str] | None = None
        #: this server's adaptive limit on requests in flight, shared by the whole process
        self.limiter = limiter_for("backend:" + self.base_url, max_concurrency)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._queue: asyncio.Queue[list[dict[str, Any]]] | None = None
        self._workers: list[asyncio.Task[None]] = []
        # finished rows' logs wait here (from the loop and from worker threads alike) until a
        # batch is full or its oldest log has waited MAX_DELAY; the pump task hands them on
        # a small buffer: worker threads wait for the senders (on the loop) early, rather than
        # race ahead of them for the GIL with thousands of logs waiting
        self._feeder = LoopFeeder(LogBuffer(batch_size, max_delay, capacity=2 * batch_size), self._enqueue)
        self._failures: list[BackendError] = []
        self._failed_logs = 0
        #: the spool files, the batches waiting in them, and the task retrying them
        self.outbox = Outbox(
            self.spool_dir,
            self.base_url,
            send_once=lambda logs: self._send(logs, retries=0),
            on_failure=self._failed,
            backoff=backoff,
            max_backoff=max_backoff,
            parallel=max_concurrency,
        )
        self._struggling = 0  # requests retrying after a connection error, 408, 429 or 5xx

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
                    max_connections=self.max_concurrency + 2,
                    max_keepalive_connections=self.max_concurrency + 2,
                ),
            )
            self._queue = asyncio.Queue(maxsize=self.max_pending_batches)
            self._workers = []
            self.outbox.rebind()
        return self._client

    async def _request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        accept: frozenset[int] = frozenset(),
        retries: int | None = None,
    ) -> httpx.Response:
        """Send ``body`` (or ``raw`` JSON bytes) with retries; returns a 2xx response (or one whose
        status is in ``accept``). Raises :class:`ServerUnavailable` when the server still did not
        answer usefully after ``retries`` (default ``max_retries``), else ``BackendError``."""
        client = self._bind()
        content = raw if raw is not None else None if body is None else encode(body)
        url = self.base_url + path
        retries = self.max_retries if retries is None else retries
        struggling = False
        try:
            for attempt in range(retries + 1):
                response: httpx.Response | None = None
                slot = await self.limiter.acquire()
                try:
                    response = await client.request(method, path.lstrip("/"), content=content)
                except httpx.TransportError as exc:
                    if attempt == retries:
                        raise unreachable(method, url, exc, attempt + 1) from exc
                else:
                    if response.status_code == 429:
                        slot.rate_limited(response.headers.get("retry-after"))
                    elif response.status_code < 400:
                        slot.succeeded()
                    if response.status_code < 400 or response.status_code in accept:
                        return response
                    if not is_retryable(response.status_code):
                        raise error_for(method, url, response)
                    if attempt == retries:
                        raise ServerUnavailable(f"{error_for(method, url, response)} (after {attempt + 1} attempt(s))")
                finally:
                    slot.release()
                if not struggling:
                    struggling = True
                    self._struggling += 1
                await asyncio.sleep(retry_delay(attempt, response, backoff=self.backoff, max_backoff=self.max_backoff))
        finally:
            if struggling:
                self._struggling -= 1
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
        queue = self._queue
        while True:
            if not queue.full():
                queue.put_nowait(batch)
                return
            if self.outbox.outage or self._struggling:
                await self.outbox.spill(batch)  # the server is failing: disk, not a wait, keeps rows going
                return
            # the server is slow, not failing: wait for room (backpressure), looking again now
            # and then in case it starts failing meanwhile
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(queue.put(batch), timeout=0.25)
                return

    async def _send_loop(self) -> None:
        queue = self._queue
        assert queue is not None
        while True:
            batch = await queue.get()
            try:
                rest = batch if self.outbox.outage else await self._send(batch)
                if rest:
                    self.outbox.outage = True
                    await self.outbox.spill(rest)
            except BackendError as exc:
                self._failed(exc, len(batch))
            except Exception as exc:  # a bug or an odd response: reported by flush(), never lost
                self._failed(BackendError(f"sending {len(batch)} log(s) failed: {exc!r}"), len(batch))
            finally:
                queue.task_done()

    async def _send(self, batch: list[dict[str, Any]], *, retries: int | None = None) -> list[dict[str, Any]]:
        """Send logs; returns those the server could not be reached for (to spool). A refusal
        (4xx) of a batch raises; in plain mode a refused log is recorded and the rest go on."""
        logs = [finite_scores(log) for log in batch]
        if "trace_logs_batch" in (self.extensions or ()):
            return await self._send_batch(logs, retries)
        for i, log in enumerate(logs):  # one refused log must not keep the others from being sent
            try:
                try:
                    body = encode(log)
                except TypeError:
                    body = encode(safe_log(log))
                try:
                    await self._request("POST", "/trace_log", raw=body, retries=retries)
                except BackendError as exc:
                    if isinstance(exc, ServerUnavailable):
                        raise
                    # refused (too big, invalid): store the row as its error, with the reason
                    reason = error_log(log, f"the server refused it: {exc}")
                    await self._request("POST", "/trace_log", raw=encode(reason), retries=retries)
            except ServerUnavailable:
                return logs[i:]
            except BackendError as exc:
                self._failed(exc, 1)
        return []

    async def _send_batch(self, logs: list[dict[str, Any]], retries: int | None) -> list[dict[str, Any]]:
        try:
            body = encode({"logs": logs})
        except TypeError:  # something JSON cannot carry (a huge int, a cycle): repair it
            logs = [safe_log(log) for log in logs]
            body = encode({"logs": logs})
        if len(body) > MAX_BATCH_BYTES and len(logs) > 1:  # huge outputs: split, keep requests sane
            return await self._send_halves(logs, retries)
        try:
            await self._request("POST", "/trace_logs/batch", raw=body, retries=retries)
        except ServerUnavailable:
            return logs
        except BackendError as exc:
            # a refusal (413, 422) of one log must not cost the others: halve until it is alone,
            # then store that row as its error with the server's reason
            if len(logs) > 1:
                return await self._send_halves(logs, retries)
            if logs[0].get("status") == "error" and str(logs[0].get("error", "")).startswith(UNSTORABLE):
                raise
            return await self._send_batch([error_log(logs[0], f"the server refused it: {exc}")], retries)
        return []

    async def _send_halves(self, logs: list[dict[str, Any]], retries: int | None) -> list[dict[str, Any]]:
        half = len(logs) // 2
        first = await self._send_batch(logs[:half], retries)
        if first:
            return first + logs[half:]
        return await self._send_batch(logs[half:], retries)

    def _failed(self, exc: BackendError, n_logs: int) -> None:
        """Record a failure for ``flush()`` to raise."""
        self._failures.append(exc)
        self._failed_logs += n_logs

    # the spool ---------------------------------------------------------------------------------
    @property
    def outage(self) -> bool:
        """The server is away: batches go to the spool until a retry of it gets through."""
        return self.outbox.outage

    @property
    def spooled(self) -> int:
        """How many trace logs wait in the spool (of this backend's runs)."""
        return self.outbox.waiting

    def spooled_for(self, experiment_uuid: str) -> tuple[int, str | None]:
        """How many logs of the experiment wait in the spool, and its spool file — ``None`` when
        nothing (neither logs nor the finish call) waits there."""
        return self.outbox.waiting_for(experiment_uuid)

    async def deliver(self, logs: list[dict[str, Any]]) -> bool:
        """Send logs now, with the retries; ``False`` if the server could not be reached (a refusal
        raises ``BackendError``). For ``python -m runner sync``."""
        try:
            await self._ready()
            return not await self._send(logs)
        except ServerUnavailable:
            return False

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
            raise RunNameError(detail_of(response))
        experiment: dict[str, Any] = response.json()
        return experiment

    async def log(self, logs: Sequence[dict[str, Any]]) -> None:
        if "trace_logs_batch" not in await self._ready():
            self._feeder.buffer.batch_size = 1  # one request per log: send each as it comes
        self._bind()
        await self._feeder.put(logs)

    def log_from_thread(self, logs: Sequence[dict[str, Any]], loop: asyncio.AbstractEventLoop) -> None:
        """``log()`` from a worker thread; blocks that thread only for backpressure."""
        if not self._feeder.put_from_thread(logs, loop):  # not feeding on that loop yet
            asyncio.run_coroutine_threadsafe(self.log(logs), loop).result()

    async def flush(self) -> None:
        """Return once everything logged so far is stored — or spooled, if the server stayed away
        for ``drain_timeout`` seconds more; raise if some of it is neither."""
        await self._flush(wait_for_spool=True)

    async def _flush(self, *, wait_for_spool: bool) -> None:
        same_loop = self._queue is not None and self._loop is asyncio.get_running_loop()
        await self._feeder.drain()
        if same_loop:
            assert self._queue is not None
            await self._queue.join()
        if same_loop and wait_for_spool:
            await self.outbox.drain(self.drain_timeout)
        if self._failures:
            first, n, logs = self._failures[0], len(self._failures), self._failed_logs
            self._failures, self._failed_logs = [], 0
            more = f" ({n - 1} more request(s) failed too)" if n > 1 else ""
            raise BackendError(f"{logs} trace log(s) were not stored on {self.location}: {first}{more}") from first

    async def finish_experiment(
        self,
        experiment_uuid: str,
        *,
        status: str,
        dataset_level_stats: Sequence[Mapping[str, Any]],
        dataset_level_errors: Mapping[str, str] | None = None,
        scorer_errors: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Flush, then ``POST /experiment/{uuid}/finished``. While logs of the experiment are still
        spooled (the server is away), or if that call cannot get through, it is recorded in the
        spool for ``python -m runner sync`` and ``[]`` is returned."""
        await self.flush()
        stats_in = [dict(s) for s in dataset_level_stats]
        body: dict[str, Any] = {"status": status, "dataset_level_stats": stats_in}
        # the run's failures: an extension our server stores with the run, sent unless the
        # server is known not to offer it (a Parea server would ignore the fields anyway)
        if self.extensions is None or "run_errors" in self.extensions:
            if dataset_level_errors is not None:
                body["dataset_level_errors"] = dict(dataset_level_errors)
            if scorer_errors is not None:
                body["scorer_errors"] = dict(scorer_errors)
        spooled, _ = self.spooled_for(experiment_uuid)
        if not spooled:
            try:
                response = await self._request("POST", self._finished_path(experiment_uuid), body)
            except ServerUnavailable:
                pass
            else:
                await self.outbox.forget(experiment_uuid)
                stats: list[dict[str, Any]] = response.json().get("parent_trace_stats") or []
                return stats
        extra = {k: v for k, v in body.items() if k not in ("status", "dataset_level_stats")}
        await self.outbox.record_finish(experiment_uuid, status, stats_in, extra)
        return []

    @staticmethod
    def _finished_path(experiment_uuid: str) -> str:
        return f"/experiment/{quote(experiment_uuid, safe='')}/finished"

    async def post_finished(self, experiment_uuid: str, body: Mapping[str, Any]) -> None:
        """``POST /experiment/{uuid}/finished`` with a recorded body (``python -m runner sync``)."""
        await self._request("POST", self._finished_path(experiment_uuid), dict(body))

    async def experiment_rows(self, experiment_uuid: str) -> list[dict[str, Any]]:
        """The experiment's root logs, after delivering what an earlier process left in its spool
        (a resumed run must see every row that finished)."""
        leftover = Spool.for_experiment(self.spool_dir, experiment_uuid, self.base_url)
        if not self.outbox.owns(experiment_uuid) and leftover.path.exists():
            from runner.backends.http.replay import deliver_spool

            report = await deliver_spool(self, leftover)
            if report.error:
                raise BackendError(f"{report.error}; run `python -m runner sync` once the server answers")
        response = await self._request("POST", f"/experiment/{quote(experiment_uuid, safe='')}/trace_logs", {})
        rows: list[dict[str, Any]] = response.json()
        for row in rows:
            row.pop("children_logs", None)  # the same shape as the embedded store's rows
        return rows

    def rows_loader(self, experiment_uuid: str) -> Callable[[], list[dict[str, Any]]]:
        from functools import partial

        from runner.backends.http.api import fetch_experiment_rows

        return partial(fetch_experiment_rows, self.base_url, self.api_key, experiment_uuid)

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
                await self._flush(wait_for_spool=False)  # finish_experiment waited already
        finally:
            workers, self._workers = self._workers, []
            feeding = self._feeder.stop()
            if feeding is not None:
                workers.append(feeding)
            client, self._client = self._client, None
            self._loop = None
            await self.outbox.close(cancel=same_loop)  # what is left stays on disk
            if same_loop:  # another loop's tasks and connections died with it
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
                if client is not None:
                    await client.aclose()

