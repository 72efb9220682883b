"""The server door: :class:`~runner.backends.http.backend.HttpBackend` and what it is made of.

``transport`` (headers, encoding, errors and the one retry policy: which statuses are retried
and how long to wait), ``api`` (the synchronous client with that policy), ``outbox`` and
``spool`` (batches kept on disk while the server is away), ``replay`` (delivering a spool
file). The adaptive limit after a 429 is :mod:`runner.ratelimit`, shared with the proxy and
the Dask workers.

May import: ``runner.backends.target``, ``runner.backends.batching`` and the bottom modules.
"""
