"""What a run produces, and reading it back: pure functions and values, no I/O of their own.

``result`` (:class:`~runner.results.result.Result`, the tally), ``stats`` and ``intervals``
(summaries and their honest intervals), ``paired`` and ``compare`` (run B against run A),
``gates``, ``gate_report`` and ``gate_outcomes`` (CI gates), ``junit``, ``stored`` (a stored run's
rows rebuilt as its Result) and ``format`` (how every number is written: the summary, ``show``,
``compare``, the store's page documents and the web UI all use it).

May import: only the bottom modules (``errors``, ``scoring``, ``_json`` ...): results sit below
the store, which computes a finished run's page documents with them; never the pipeline, the
doors, the server or the CLI.
"""
