"""The entry points: ``python -m runner`` (``main``: the parser; ``run``, ``config``, ``show``,
``compare``, ``datasets``, ``sync``, ``db``, ``prompts``, ``shards``, ``docs``: the commands) and
the pytest plugin (``pytest_plugin``).

May import everything below it; nothing imports it (except ``runner.__main__``).
"""
