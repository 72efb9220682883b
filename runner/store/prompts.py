"""Versioned prompts and their deployments (issue 23).

A prompt is a name; each save is a new, numbered, immutable version (its spec, a commit message,
an author). A deployment (``deployment_id``, Parea's form ``p-`` + 21 characters) points at one
version of one prompt; deploying again moves it, :meth:`PromptQueries.rollback_deployment` moves
it back to the version it pointed at before, and every move is kept as an event. Saving a spec
identical to the latest version stores nothing (the latest version is returned), so a retried
push does not make a second version. Everything is per owner, like the rest of the store.
"""

from __future__ import annotations

import re
import secrets
import sqlite3
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import orjson

from runner._json import nul_free
from runner.errors import ConfigError, NotFoundError

__all__ = ["DEPLOYMENT_ID_RE", "PROMPT_NAME_RE", "SPEC_KEYS", "PromptQueries", "new_deployment_id", "parse_ref"]

SPEC_KEYS = ("model", "provider", "model_params", "messages", "functions", "function_call")
PROMPT_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
DEPLOYMENT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,99}$")

# an optional backslash (the escape), then {{ name }}


def parse_ref(ref: str) -> tuple[str, int | None]:
    """``NAME@VERSION`` -> ``(NAME, VERSION)``; ``NAME`` -> ``(NAME, None)``."""
    name, sep, version = ref.strip().rpartition("@") if "@" in ref else (ref.strip(), "", "")
    if not PROMPT_NAME_RE.match(name):
        raise ConfigError(
            f"invalid prompt name {name!r}: use 1-100 letters, digits, '.', '-' or '_' (NAME or NAME@VERSION)"
        )
    if not sep:
        return name, None
    if not version.isdigit() or int(version) < 1:
        raise ConfigError(f"invalid prompt version in {ref!r}: write NAME@N with N a version number (1, 2, ...)")
    return name, int(version)


def new_deployment_id() -> str:
    """A fresh deployment id in Parea's form, e.g. ``p-qZrnFesaeCpqcXJ_yL3wi``."""
    return "p-" + secrets.token_urlsafe(16)[:21]


def _sorted_json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def _dumps(value: Any) -> str:
    """A spec's text, keys sorted (equal specs are equal text), NUL characters and lone surrogates
    as U+FFFD as in every JSON column (:func:`runner.store.common.dumps`)."""
    return nul_free(value, _sorted_json)[0]


class PromptQueries:
    """Mixin of :class:`runner.store.Store` holding prompts, versions and deployments."""

    def transaction(self) -> AbstractContextManager[sqlite3.Connection]:  # pragma: no cover - in Store
        raise NotImplementedError

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:  # pragma: no cover
        raise NotImplementedError

    # -- versions ---------------------------------------------------------------------------
    def save_prompt_version(
        self, name: str, spec: Mapping[str, Any], *, message: str = "", author: str = "", owner: str = ""
    ) -> dict[str, Any]:
        """Store ``spec`` (already validated) as the next version of ``name``; ``created`` says
        whether a version was added (``False``: it equals the latest one, which is returned)."""
        from runner.store.common import now_iso

        parse_ref(name)  # the name's rules
        if "@" in name:
            raise ConfigError(f"a prompt name cannot contain '@' ({name!r}); the version is chosen for you")
        now = now_iso()
        text = _dumps(dict(spec))
        with self.transaction() as c:
            row = c.execute("SELECT id FROM prompts WHERE owner=? AND name=?", (owner, name)).fetchone()
            if row is None:
                cur = c.execute("INSERT INTO prompts(owner, name, created_at) VALUES (?,?,?)", (owner, name, now))
                prompt_id = int(cur.lastrowid or 0)
            else:
                prompt_id = int(row[0])
            last = c.execute(
                "SELECT version, spec FROM prompt_versions WHERE prompt_id=? ORDER BY version DESC LIMIT 1",
                (prompt_id,),
            ).fetchone()
            if last is not None and last[1] == text:
                version, created = int(last[0]), False
            else:
                version, created = (int(last[0]) + 1 if last else 1), True
                c.execute(
                    "INSERT INTO prompt_versions(prompt_id, version, spec, message, author, created_at)"
                    " VALUES (?,?,?,?,?,?)",
                    (prompt_id, version, text, message, author, now),
                )
        return {**self.get_prompt_version(name, version, owner), "created": created}

    def _prompt_id(self, name: str, owner: str) -> int:
        rows = self._query("SELECT id FROM prompts WHERE owner=? AND name=?", (owner, name))
        if not rows:
            raise NotFoundError(f"prompt {name!r} not found; `python -m runner prompts list` shows the prompts")
        return int(rows[0][0])

    @staticmethod
    def _version_dict(name: str, r: sqlite3.Row) -> dict[str, Any]:
        spec = orjson.loads(r["spec"])
        # stored with sorted keys (so equal specs are equal text); read back in the file's order
        spec["messages"] = [{"role": m.get("role"), "content": m.get("content"), **m} for m in spec["messages"]]
        return {
            "name": name,
            "version": r["version"],
            "ref": f"{name}@{r['version']}",
            "spec": {k: spec[k] for k in SPEC_KEYS if k in spec},
            "message": r["message"],
            "author": r["author"],
            "created_at": r["created_at"],
        }

    def get_prompt_version(self, name: str, version: int | None = None, owner: str = "") -> dict[str, Any]:
        """One version of ``name`` (``None``: the latest)."""
        prompt_id = self._prompt_id(name, owner)
        sql = "SELECT * FROM prompt_versions WHERE prompt_id=?"
        params: list[Any] = [prompt_id]
        if version is None:
            sql += " ORDER BY version DESC LIMIT 1"
        else:
            sql += " AND version=?"
            params.append(int(version))
        rows = self._query(sql, params)
        if not rows:
            raise NotFoundError(f"prompt {name!r} has no version {version}; `prompts show {name}` lists its versions")
        return self._version_dict(name, rows[0])

    def list_prompt_versions(self, name: str, owner: str = "") -> list[dict[str, Any]]:
        """Every version of ``name``, oldest first."""
        prompt_id = self._prompt_id(name, owner)
        rows = self._query("SELECT * FROM prompt_versions WHERE prompt_id=? ORDER BY version", (prompt_id,))
        return [self._version_dict(name, r) for r in rows]

    def list_prompts(self, owner: str = "") -> list[dict[str, Any]]:
        """Every prompt with its latest version and its deployments, by name."""
        rows = self._query(
            "SELECT p.id, p.name, p.created_at, max(v.version) AS latest, count(v.version) AS n_versions,"
            " max(v.created_at) AS updated_at FROM prompts p JOIN prompt_versions v ON v.prompt_id=p.id"
            " WHERE p.owner=? GROUP BY p.id ORDER BY p.name COLLATE BINARY",
            (owner,),
        )
        deployments: dict[int, list[dict[str, Any]]] = {}
        for d in self._query(
            "SELECT prompt_id, deployment_id, version FROM prompt_deployments WHERE owner=? ORDER BY created_at",
            (owner,),
        ):
            deployments.setdefault(int(d["prompt_id"]), []).append(
                {"deployment_id": d["deployment_id"], "version": d["version"]}
            )
        return [
            {
                "name": r["name"],
                "latest_version": r["latest"],
                "n_versions": r["n_versions"],
                "created_at": r["created_at"],
                "updated_at": r["updated_at"],
                "deployments": deployments.get(int(r["id"]), []),
            }
            for r in rows
        ]

    # -- deployments ------------------------------------------------------------------------
    def deploy_prompt(
        self, name: str, version: int, *, deployment_id: str | None = None, author: str = "", owner: str = ""
    ) -> dict[str, Any]:
        """Point a deployment at ``name@version``: ``deployment_id`` (created if new), else the
        prompt's only deployment (moved), else a new one. Returns :meth:`get_deployment`."""
        from runner.store.common import now_iso

        self.get_prompt_version(name, version, owner)  # 404 for an unknown version
        prompt_id = self._prompt_id(name, owner)
        if deployment_id is not None and not DEPLOYMENT_ID_RE.match(deployment_id):
            raise ConfigError(
                f"invalid deployment id {deployment_id!r}: use 1-100 letters, digits, '-' or '_' (e.g. p-greeting)"
            )
        now = now_iso()
        with self.transaction() as c:
            if deployment_id is None:
                own = c.execute(
                    "SELECT deployment_id FROM prompt_deployments WHERE owner=? AND prompt_id=?", (owner, prompt_id)
                ).fetchall()
                if len(own) > 1:
                    ids = ", ".join(r[0] for r in own)
                    raise ConfigError(
                        f"prompt {name!r} has several deployments ({ids}); say which with --deployment-id"
                    )
                deployment_id = own[0][0] if own else new_deployment_id()
            assert deployment_id is not None
            row = c.execute(
                "SELECT prompt_id, version FROM prompt_deployments WHERE owner=? AND deployment_id=?",
                (owner, deployment_id),
            ).fetchone()
            if row is None:
                c.execute(
                    "INSERT INTO prompt_deployments(owner, deployment_id, prompt_id, version, created_at, updated_at)"
                    " VALUES (?,?,?,?,?,?)",
                    (owner, deployment_id, prompt_id, version, now, now),
                )
                self._event(c, owner, deployment_id, "deploy", version, None, author, now)
            elif int(row[0]) != prompt_id:
                raise ConfigError(f"deployment {deployment_id} serves another prompt; pick another deployment id")
            elif int(row[1]) != version:
                c.execute(
                    "UPDATE prompt_deployments SET version=?, updated_at=? WHERE owner=? AND deployment_id=?",
                    (version, now, owner, deployment_id),
                )
                self._event(c, owner, deployment_id, "move", version, int(row[1]), author, now)
        return self.get_deployment(deployment_id, owner)

    @staticmethod
    def _event(c: sqlite3.Connection, owner: str, deployment_id: str, action: str, version: int,
               previous: int | None, author: str, now: str) -> None:
        c.execute(
            "INSERT INTO prompt_deployment_events(owner, deployment_id, action, version, previous_version, author,"
            " created_at) VALUES (?,?,?,?,?,?,?)",
            (owner, deployment_id, action, version, previous, author, now),
        )

    def rollback_deployment(self, deployment_id: str, *, author: str = "", owner: str = "") -> dict[str, Any]:
        """Move the deployment back to the version it served before its last move (a second
        rollback undoes the first, like ``kubectl rollout undo``)."""
        from runner.store.common import now_iso

        current = self.get_deployment(deployment_id, owner)
        previous = current["history"][0]["previous_version"] if current["history"] else None
        if previous is None:
            raise ConfigError(
                f"deployment {deployment_id} has never been moved: there is no earlier version to roll back to"
            )
        now = now_iso()
        with self.transaction() as c:
            c.execute(
                "UPDATE prompt_deployments SET version=?, updated_at=? WHERE owner=? AND deployment_id=?",
                (previous, now, owner, deployment_id),
            )
            self._event(c, owner, deployment_id, "rollback", previous, current["version"], author, now)
        return self.get_deployment(deployment_id, owner)

    def get_deployment(self, deployment_id: str, owner: str = "") -> dict[str, Any]:
        """A deployment: its prompt, the version it serves (with the spec) and its history, newest first."""
        rows = self._query(
            "SELECT d.*, p.name FROM prompt_deployments d JOIN prompts p ON p.id=d.prompt_id"
            " WHERE d.owner=? AND d.deployment_id=?",
            (owner, deployment_id),
        )
        if not rows:
            raise NotFoundError(
                f"deployment {deployment_id!r} not found; `python -m runner prompts list` shows the deployments"
            )
        d = rows[0]
        version = self.get_prompt_version(d["name"], int(d["version"]), owner)
        history = [
            {k: e[k] for k in ("action", "version", "previous_version", "author", "created_at")}
            for e in self._query(
                "SELECT * FROM prompt_deployment_events WHERE owner=? AND deployment_id=? ORDER BY id DESC",
                (owner, deployment_id),
            )
        ]
        return {
            "deployment_id": deployment_id,
            "name": d["name"],
            "version": int(d["version"]),
            "ref": version["ref"],
            "spec": version["spec"],
            "created_at": d["created_at"],
            "updated_at": d["updated_at"],
            "history": history,
        }

    def prompt_deployments(self, name: str, owner: str = "") -> list[dict[str, Any]]:
        """The deployments of ``name``, oldest first, each as :meth:`get_deployment`."""
        prompt_id = self._prompt_id(name, owner)
        ids = self._query(
            "SELECT deployment_id FROM prompt_deployments WHERE owner=? AND prompt_id=? ORDER BY created_at",
            (owner, prompt_id),
        )
        return [self.get_deployment(r[0], owner) for r in ids]
