"""What a run produces, and reading it back: pure functions and values, no I/O of their own.

``result`` (:class:`~runner.results.result.Result`, the tally), ``stats`` and ``intervals``
(summaries and their honest intervals), ``paired`` and ``compare`` (run B against run A),
``gates``, ``gate_report`` and ``gate_outcomes`` (CI gates), ``junit``, ``stored`` (a stored run
rebuilt as its Result), ``baseline`` (the stored run ``--baseline`` compares with, read through
a :mod:`runner.backends.readers` reader) and ``format`` (how every number is written: the
summary, ``show``, ``compare`` and the web UI all use it).

May import: the backends' readers and target, and the bottom modules; never the pipeline, the
server or the CLI.
"""
