"""One row's journey, in order::

    Experiment.plan() ──> RunPlan ──> Run.execute()                      (run, plan)
                                        │ records(): the data as rows      (dataset, resume)
                                        ▼
                    executor ──> Engine: a fixed pool of workers pulling rows lazily
                    (this process,         │ func(**row) inside a root Span      (engine, tracing)
                     or Dask)              │ scorers on the finished row         (scoring)
                                           ▼
                                         Sink: tally, progress bar, backend.log()  (sink)
                                           ▼
                          Backend (protocol): batched in one place, stored within a second
                                           ▼
                    Run: dataset-level evals, then backend.finish_experiment()

``resume`` reopens a stored run (``resume=True``, shards and ``finish``); ``shards`` picks a
shard's rows; ``checks`` refuses what cannot run before anything is created; ``executors`` and
``executor_tasks`` are where rows run (:func:`~runner.pipeline.executors.resolve_executor`).

May import: ``runner.results``, the backends' protocol and target only (``runner.backends.base``,
``runner.backends.target``), and the bottom modules (``errors``, ``settings``, ``options``,
``scoring``, ``names``, ``_json``); never an implementation of a door, the server or the CLI.
"""
