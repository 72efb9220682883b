"""The doors results go through: the embedded store, or a Parea-compatible server over HTTP.

- :mod:`~runner.backends.target`: :class:`Target` and :func:`resolve_target`, the only place the
  door is decided (argument > flag > environment > default);
- :mod:`~runner.backends.base`: the :class:`Backend` protocol the pipeline writes to;
- :mod:`~runner.backends.readers`: the synchronous readers of stored runs (``list``, ``show``,
  ``compare``), one per door, and :mod:`~runner.backends.baseline`, the run ``--baseline``
  compares with;
- :mod:`~runner.backends.embedded` and :mod:`~runner.backends.batching`: the embedded door and
  the one place logs are batched;
- :mod:`~runner.backends.http`: the server door (transport and retry policy, outbox and spool,
  rate limit, the synchronous API, replay);
- :mod:`~runner.cli.datasets` and :mod:`~runner.backends.prompts`: datasets and prompts
  through either door.

May import: the store, the proxy's prompt types, the results, and the bottom modules; never
the pipeline, the server or the CLI.
"""

from __future__ import annotations

from runner.backends.base import Backend
from runner.backends.target import Target, resolve_target

__all__ = ["Backend", "Target", "open_backend", "resolve_target"]


def open_backend(target: Target) -> Backend:
    """The backend of a resolved target (imported here, when a run starts: ``import runner``
    stays cheap)."""
    if target.base_url is not None:
        from runner.backends.http.backend import HttpBackend
        from runner.backends.http.spool import default_spool_dir

        return HttpBackend(target.base_url, target.api_key, spool_dir=default_spool_dir(target.db), target=target)
    from runner.backends.embedded import EmbeddedBackend
    from runner.store import Store

    return EmbeddedBackend(Store.shared(target.db), release_store=True)
