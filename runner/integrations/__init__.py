"""Traced clients for the LLM SDKs people already call: ``wrap_openai`` and ``wrap_anthropic``.

>>> import openai                                                  # doctest: +SKIP
>>> from runner import wrap_openai                                 # doctest: +SKIP
>>> client = wrap_openai(openai.OpenAI())                          # doctest: +SKIP

Each module imports its SDK only when a client is wrapped, so ``import runner`` stays cheap.
:mod:`runner.integrations.record` is the shared part: one LLM call as one span, and where the
span goes (the current row, or a trace of its own in the current project).
"""
