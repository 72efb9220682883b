"""The PostgreSQL dialect seam: the store's SQLite-style SQL, made to run on PostgreSQL.

The store's queries are written once, for SQLite. On PostgreSQL every statement goes through
:func:`translate` (cached per statement text), which rewrites the few SQLite idioms the store
uses; SQLite functions PostgreSQL lacks (``json_extract``, ``json_patch``, ``json_each`` of a
text, ``instr``, ``total``) are created by :data:`COMPAT_FUNCTIONS` with the same meaning. What it rewrites:

- ``?`` and ``?NNN`` placeholders become psycopg's named ones (``%`` is escaped);
- ``x -> '$.field'`` becomes ``(x::json -> 'field')::text`` (the field as JSON text);
- ``rowid IN (SELECT value FROM json_each(?))`` and ``json_each(?)`` over a JSON array;
- ``json_extract(value, '$.score')`` (a score of a ``json_each`` element) is read as a number;
- ``LIKE`` becomes ``COLLATE "C" ILIKE``: SQLite's LIKE ignores the case of ASCII letters only,
  and so does ILIKE under the C collation (under another it folds ``Ü`` to ``ü`` too);
- ``COLLATE BINARY`` (SQLite's byte order) becomes ``COLLATE "C"``; ``char(10)`` becomes ``chr(10)``;
- an empty list, ``x IN ()``, becomes an empty subquery (PostgreSQL has no empty list);
- integers used as truth values in the UI's usage roll-up;
- DDL (:func:`translate_ddl`): ``INTEGER`` is ``BIGINT`` (every id is 64-bit), ``REAL`` is
  ``DOUBLE PRECISION``, ``BLOB`` is ``BYTEA``, ``INTEGER PRIMARY KEY AUTOINCREMENT`` is a 64-bit
  identity column, and ``WITHOUT ROWID`` is dropped.

SQL written for SQLite elsewhere (new migrations, new queries) keeps working unless it uses an
idiom not listed here: add a rule and a test then.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

__all__ = ["COMPAT_FUNCTIONS", "serial_tables", "translate", "translate_ddl"]

_PLACEHOLDER = re.compile(r"\?(\d*)")
_JSON_FIELD = re.compile(r"([A-Za-z_][\w.]*) -> '\$\.(\w+)'")
_ROWID_IN_JSON = re.compile(r"rowid IN \(SELECT value FROM json_each\(\?\)\)")
_JSON_EACH = re.compile(r"json_each\(\?\)")

_REWRITES: tuple[tuple[re.Pattern[str], str], ...] = (
    (_ROWID_IN_JSON, "rowid IN (SELECT value::bigint FROM json_array_elements_text(?::json))"),
    (_JSON_EACH, "json_array_elements_text(?::json) AS value"),
    (_JSON_FIELD, r"(\1::json -> '\2')::text"),
    (re.compile(r"\b(NOT\s+)?LIKE\b"), r'COLLATE "C" \1ILIKE'),
    (re.compile(r"\bCOLLATE BINARY\b"), 'COLLATE "C"'),
    (re.compile(r"\bchar\(10\)"), "chr(10)"),
    (re.compile(r"\bIN \(\)"), "IN (SELECT NULL WHERE false)"),  # SQLite's empty list
    # a score read out of a JSON element is a number (SQLite's json_extract gives one)
    (re.compile(r"json_extract\((\w+\.)?value,\s*'\$\.score'\)"), r"runner_float(json_extract(\1value,'$.score'))"),
    (
        re.compile(r"WHERE input_tokens OR output_tokens OR cost OR total_tokens"),
        "WHERE (input_tokens <> 0 OR output_tokens <> 0 OR cost <> 0 OR total_tokens <> 0)",
    ),
)


_SUBQUERY = re.compile(r"\bFROM\s*\(\s*SELECT\b", re.IGNORECASE)
_ALIAS = re.compile(r"\s*(AS\b|(?!(WHERE|GROUP|ORDER|LIMIT|UNION|JOIN|ON|LEFT|INNER|OFFSET|HAVING)\b)[A-Za-z_])",
                    re.IGNORECASE)


def _alias_subqueries(sql: str) -> str:
    """``FROM (SELECT ...)`` with an alias, which PostgreSQL before 16 requires and SQLite not."""
    out, pos, n = [], 0, 0
    for m in _SUBQUERY.finditer(sql):
        if m.start() < pos:
            continue
        depth, i = 0, sql.index("(", m.start())
        while i < len(sql):
            depth += {"(": 1, ")": -1}.get(sql[i], 0)
            if depth == 0:
                break
            i += 1
        out.append(sql[pos : m.end()] + _alias_subqueries(sql[m.end() : i]) + ")")
        pos = i + 1
        if not _ALIAS.match(sql, pos):
            n += 1
            out.append(f" AS _sub{n}")
    out.append(sql[pos:])
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def _translate_text(sql: str) -> tuple[str, tuple[int, ...]]:
    """The PostgreSQL text of ``sql`` and, for each of its placeholders in order, the index of
    the SQLite parameter it takes."""
    for pattern, replacement in _REWRITES:
        sql = pattern.sub(replacement, sql)
    sql = _alias_subqueries(sql)
    sql = sql.replace("%", "%%")
    order: list[int] = []
    last = 0

    def place(m: re.Match[str]) -> str:
        nonlocal last
        n = int(m.group(1)) if m.group(1) else last + 1
        last = max(last, n)
        order.append(n - 1)
        return "%s"

    return _PLACEHOLDER.sub(place, sql), tuple(order)


def translate(sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> tuple[str, Sequence[Any] | dict[str, Any]]:
    """``sql`` with SQLite parameters ``params`` as PostgreSQL text and psycopg parameters.

    Named parameters (``:name``, a mapping) become ``%(name)s``."""
    if isinstance(params, dict):
        text, _ = _translate_text(sql)
        return re.sub(r"(?<!:):(\w+)", r"%(\1)s", text), params
    text, order = _translate_text(sql)
    if not order:
        return text, ()
    if list(order) == list(range(len(order))):
        return text, params
    return text, [params[i] for i in order]


_SERIAL = re.compile(r"CREATE TABLE (\w+) \(\s*id INTEGER PRIMARY KEY AUTOINCREMENT", re.IGNORECASE)


def serial_tables(migrations: Sequence[str]) -> frozenset[str]:
    """Tables whose ``id`` the database assigns (``lastrowid`` on PostgreSQL is ``RETURNING id``)."""
    return frozenset(name for m in migrations for name in _SERIAL.findall(m))


def translate_ddl(sql: str) -> str:
    """A SQLite migration as PostgreSQL DDL (64-bit integers and identity columns)."""
    sql = re.sub(
        r"\bINTEGER PRIMARY KEY AUTOINCREMENT\b", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY", sql,
        flags=re.IGNORECASE,
    )
    sql = re.sub(r"\bINTEGER\b", "BIGINT", sql)
    sql = re.sub(r"\bREAL\b", "DOUBLE PRECISION", sql)
    sql = re.sub(r"\bBLOB\b", "BYTEA", sql)
    sql = re.sub(r"\)\s*WITHOUT ROWID\b", ")", sql)  # SQLite's storage choice: every table is one here
    return sql


#: SQLite's functions the store uses, for PostgreSQL (created, or replaced, on every migrate)
COMPAT_FUNCTIONS = r"""
CREATE OR REPLACE FUNCTION runner_json_path(path text) RETURNS text[] LANGUAGE sql IMMUTABLE AS $f$
    SELECT coalesce(array_agg(coalesce(m[1], m[2], m[3]) ORDER BY n), '{}')
    FROM regexp_matches(substr(path, 2), '\.(?:"((?:[^"\\]|\\.)*)"|([^."\[]+))|\[(\d+)\]', 'g')
        WITH ORDINALITY AS t(m, n)
$f$;
CREATE OR REPLACE FUNCTION json_extract(doc text, path text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
    SELECT doc::json #>> runner_json_path(path)
$f$;
CREATE OR REPLACE FUNCTION json_quote(value text) RETURNS text LANGUAGE sql IMMUTABLE AS $f$
    SELECT to_json(value)::text
$f$;
CREATE OR REPLACE FUNCTION instr(haystack text, needle text) RETURNS integer LANGUAGE sql IMMUTABLE AS $f$
    SELECT strpos(haystack, needle)
$f$;
CREATE OR REPLACE FUNCTION json_each(doc text, path text DEFAULT '$')
RETURNS TABLE(key text, value text) LANGUAGE sql IMMUTABLE AS $f$
    -- SQLite's json_each over a JSON text: an array's elements (key: the index) or an object's
    -- members; a string element is its text, anything else its JSON
    WITH d AS (SELECT doc::json #> runner_json_path(path) AS j)
    SELECT (t.n - 1)::text, CASE json_typeof(t.e) WHEN 'string' THEN t.e #>> '{}' ELSE t.e::text END
    FROM d, json_array_elements(CASE WHEN json_typeof(d.j) = 'array' THEN d.j ELSE '[]'::json END)
        WITH ORDINALITY AS t(e, n)
    UNION ALL
    SELECT o.key, CASE json_typeof(o.value) WHEN 'string' THEN o.value #>> '{}' ELSE o.value::text END
    FROM d, json_each(CASE WHEN json_typeof(d.j) = 'object' THEN d.j ELSE '{}'::json END) AS o
$f$;
CREATE OR REPLACE AGGREGATE total(double precision) (sfunc = float8pl, stype = float8, initcond = '0');
CREATE OR REPLACE FUNCTION runner_float(value text) RETURNS double precision LANGUAGE plpgsql IMMUTABLE AS $f$
BEGIN
    RETURN value::double precision;
EXCEPTION WHEN others THEN
    RETURN NULL;
END
$f$;
CREATE OR REPLACE FUNCTION json_patch(target text, patch text) RETURNS text LANGUAGE plpgsql IMMUTABLE AS $f$
DECLARE
    p json;
    t json;
    r record;
    out text := '';
    sep text := '';
BEGIN
    -- RFC 7396 like SQLite's json_patch: the target's keys in their order, then the new ones
    IF patch IS NULL THEN
        RETURN target;
    END IF;
    p := patch::json;
    IF json_typeof(p) IS DISTINCT FROM 'object' THEN
        RETURN patch;
    END IF;
    IF target IS NULL OR json_typeof(target::json) IS DISTINCT FROM 'object' THEN
        t := '{}'::json;
    ELSE
        t := target::json;
    END IF;
    FOR r IN
        SELECT a.key, a.value::text AS tv, b.value::text AS pv, b.key IS NOT NULL AS patched
        FROM json_each(t) WITH ORDINALITY AS a(key, value, n)
        LEFT JOIN json_each(p) AS b ON b.key = a.key
        ORDER BY a.n
    LOOP
        IF NOT r.patched THEN
            out := out || sep || to_json(r.key)::text || ':' || r.tv;
            sep := ',';
        ELSIF r.pv <> 'null' THEN
            out := out || sep || to_json(r.key)::text || ':' || json_patch(r.tv, r.pv);
            sep := ',';
        END IF;
    END LOOP;
    FOR r IN
        SELECT b.key, b.value::text AS pv FROM json_each(p) WITH ORDINALITY AS b(key, value, n)
        WHERE NOT EXISTS (SELECT 1 FROM json_each(t) AS a WHERE a.key = b.key)
        ORDER BY b.n
    LOOP
        IF r.pv <> 'null' THEN
            out := out || sep || to_json(r.key)::text || ':' || json_patch(NULL, r.pv);
            sep := ',';
        END IF;
    END LOOP;
    RETURN '{' || out || '}';
END
$f$;
"""
