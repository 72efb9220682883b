"""Every endpoint validates its input: schemathesis fuzzes the server, driven by Parea's reference
OpenAPI document (the operations we implement) and by our own document (our extensions).

For every generated request, valid and invalid (schemathesis' positive and negative modes): no
5xx, no hang (each answer within seconds), a status that the reference documents or that the
server assigns on purpose (400 bad name, 404 unknown id, 409 taken dataset name, 413 too large,
422 invalid), and 2xx bodies that conform to the response schema. Afterwards a known experiment
stored before the fuzzing is unchanged. Examples are derandomized, so a failure reproduces.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from runner.schema import API_PREFIX
from runner.server import create_app
from runner.store import Store
from runner.store.postgres import is_postgres_url
from tests.servers import experiment, log, serving, start_server

#: Parea's public OpenAPI document, kept in the repository (an interface description), so these
#: tests run on any clone
REFERENCE = Path(__file__).resolve().parent / "reference" / "parea-openapi.yml"
#: reference operations not fuzzed here: those calling model providers (tests/test_server_completion.py
#: covers them with fake providers)
NOT_HERE = r"/(completion|completion/stream|deployed-prompt)$"
#: our extensions, fuzzed from our own OpenAPI document
EXTENSIONS = r"/(trace_logs/batch|experiment/\{experiment_uuid\}/delete_traces|collections)$"
EXAMPLES = 15
#: the statuses the server assigns on purpose, beyond what the reference documents (200, 422)
ON_PURPOSE = frozenset({200, 400, 404, 409, 413, 422})
SLOW = 5.0  # seconds: an answer slower than this counts as a hang

def _operations(schema: Any) -> dict[str, Any]:
    return {f"{op.method.upper()} {op.path}": op for op in (r.ok() for r in schema.get_all_operations())}


def _reference() -> dict[str, Any]:
    return _operations(schemathesis.openapi.from_path(REFERENCE).exclude(path_regex=NOT_HERE))


def _ours(app: Any) -> dict[str, Any]:
    schema = schemathesis.openapi.from_asgi(API_PREFIX + "/openapi.json", app).include(path_regex=EXTENSIONS)
    return _operations(schema)


REFERENCE_OPS = sorted(_reference())
EXTENSION_OPS = sorted(_ours(create_app(Store(":memory:"), allowed_hosts=["testserver"])))


class Fuzzed:
    """The app under fuzzing, its store, and a snapshot of an experiment stored beforehand."""

    def __init__(self, db: str | Path) -> None:
        self.store = Store(db)
        self.app = create_app(self.store, allowed_hosts=["testserver"])  # schemathesis' ASGI host
        self.schemas = {**_reference(), **_ours(self.app)}
        with start_server(db) as server, httpx.Client(base_url=server.base_url + "/") as api:
            exp = experiment(api, project="known", name="known")
            uid = exp["uuid"]
            logs = [log(f"k{i}", experiment_uuid=uid, scores=[{"name": "s", "score": i / 10}]) for i in range(10)]
            logs += [log(f"k{i}-c", parent=f"k{i}", experiment_uuid=uid, output="child") for i in range(10)]
            assert api.post("/trace_logs/batch", json={"logs": logs}).status_code == 200
            api.post(f"/experiment/{exp['uuid']}/finished", json={"status": "completed"})
        self.known = exp["uuid"]
        self.before = self.snapshot()

    def snapshot(self) -> tuple[Any, ...]:
        exp = self.store.get_experiment(self.known)
        rows = self.store.trace_trees([f"k{i}" for i in range(10)], "")
        return exp, rows, self.store.experiment_stats(self.known)


@pytest.fixture(scope="module")
def fuzzed(db_module: str | Path) -> Iterator[Fuzzed]:
    """The fuzzed app over a SQLite file, then over PostgreSQL (``tests/pg.py``)."""
    f = Fuzzed(db_module)
    yield f
    f.store.close()


def _fuzz(fuzzed: Fuzzed, label: str) -> None:
    problems: list[str] = []
    for mode in GenerationMode:
        try:
            _examples(fuzzed, fuzzed.schemas[label], mode, problems)()
        except Exception as exc:  # schemathesis' own check failures: report them with the rest
            if "Unsatisfiable" not in type(exc).__name__:  # no negative cases exist for some operations
                problems.append(f"{mode.value}: {exc}"[:1500])
    assert not problems, "\n".join(problems[:5])


def _examples(fuzzed: Fuzzed, op: Any, mode: GenerationMode, problems: list[str]) -> Callable[[], None]:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy(generation_mode=mode))
    def check(case: Any) -> None:
        started = time.monotonic()
        response = case.call(app=fuzzed.app)
        took = time.monotonic() - started
        where = f"{mode.value} {case.method} {case.formatted_path} body={str(case.body)[:200]!r}"
        if response.status_code not in ON_PURPOSE | {201, 204}:  # a 5xx among others
            problems.append(f"{response.status_code} for {where}: {response.text[:300]}")
        if took > SLOW:
            problems.append(f"{took:.1f} s for {where}")
        if response.status_code < 300:
            case.validate_response(response, checks=[response_schema_conformance, content_type_conformance])

    return check


@pytest.mark.parametrize("label", REFERENCE_OPS)
def test_reference_operation(fuzzed: Fuzzed, label: str) -> None:
    _fuzz(fuzzed, label)


@pytest.mark.parametrize("label", EXTENSION_OPS)
def test_extension_operation(fuzzed: Fuzzed, label: str) -> None:
    _fuzz(fuzzed, label)


def test_the_known_experiment_is_unchanged_after_fuzzing(fuzzed: Fuzzed) -> None:
    assert fuzzed.snapshot() == fuzzed.before
    if not is_postgres_url(fuzzed.store.path):
        assert fuzzed.store._query("PRAGMA integrity_check")[0][0] == "ok"


# -- hostile bodies, over a real socket --------------------------------------------------------------------

_NESTED = 10_000


def _nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


_DEEP = _nested(_NESTED)
BODIES: dict[str, Callable[[str, str], tuple[str, str]]] = {
    "trace_log": lambda exp, p: ("/trace_log", f'{{"trace_id":"t","start_timestamp":"x","metadata":{_DEEP}}}'),
    "batch": lambda exp, p: ("/trace_logs/batch", f'{{"logs":[{{"trace_id":"t","metadata":{_DEEP}}}]}}'),
    "experiment": lambda exp, p: ("/experiment", f'{{"name":"e","project_uuid":"{p}","metadata":{_DEEP}}}'),
    "collection": lambda exp, p: (
        "/collection",
        f'{{"name":"d","column_names":["a"],"test_cases":[{{"inputs":{_DEEP}}}]}}',
    ),
    "finished": lambda exp, p: (
        f"/experiment/{exp}/finished",
        f'{{"status":"completed","dataset_level_stats":[{_DEEP}]}}',
    ),
    "experiments": lambda exp, p: ("/experiments", f'{{"metadata_filter":{_DEEP}}}'),
}


@pytest.mark.parametrize("endpoint", sorted(BODIES))
def test_json_nested_10000_deep_is_a_422(db: str | Path, endpoint: str) -> None:
    with serving(db) as api:
        exp = experiment(api)
        path, body = BODIES[endpoint](exp["uuid"], exp["project_uuid"])
        response = api.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text[:300]
        assert "nested" in response.text or "recursion" in response.text
        assert api.get("/").status_code == 200  # and the server is fine


def test_a_20_mb_body_is_a_413_and_stores_nothing(db: str | Path) -> None:
    with serving(db) as api:
        exp = experiment(api)
        logs = [log(f"t{i}", experiment_uuid=exp["uuid"], output="x" * 10_000) for i in range(2_000)]
        response = api.post("/trace_logs/batch", json={"logs": logs})  # ~20 MB
        assert response.status_code == 413
        assert "larger than" in response.json()["detail"]
        assert api.get(f"/experiment/{exp['uuid']}/stats").json() == {"parent_trace_stats": []}
        assert api.post("/trace_logs/batch", json={"logs": logs[:10]}).status_code == 200  # then all is well


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/trace_log", b'{"trace_id":"t","start_timestamp":"x","depth":123456789012345678901234567890}'),
        ("/trace_log", b'{"trace_id":"t","start_timestamp":"x","metadata":{"n":-99999999999999999999999}}'),
        ("/testcases", b'{"name":"d","test_cases":[{"inputs":{"n":123456789012345678901234567890}}]}'),
        ("/experiment", b"\xff\xfe not utf-8"),
        ("/trace_logs/batch", b"\xff\xfe not utf-8"),
    ],
    ids=["int-column", "int-in-json", "int-in-dataset", "not-utf8", "not-utf8-batch"],
)
def test_numbers_the_store_cannot_hold_and_bytes_that_are_not_utf8_are_422(
    db: str | Path, path: str, body: bytes
) -> None:
    with serving(db) as api:
        response = api.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 422, response.text[:300]
