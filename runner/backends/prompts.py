"""Versioned prompts through either door: the embedded SQLite store or a server's prompt routes.

:func:`open_prompts` picks the door (``base_url`` > ``db`` > ``PAREA_BASE_URL`` > ``RUNNER_DB``)
and returns an object with the same methods and the same answers for both, so the CLI
(``python -m runner prompts ...``) and ``Experiment(prompt=...)`` never ask which one they hold.

>>> with open_prompts(db=".runner/runner.db") as prompts:         # doctest: +SKIP
...     v = prompts.push("greeter", load_spec_file("greeter.yaml"), message="first")
...     prompts.deploy("greeter", v["version"])
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from runner.backends.target import Target
from runner.errors import BackendError, ConfigError, NotFoundError

if TYPE_CHECKING:
    from runner.proxy.prompts import DeployedPrompt

__all__ = [
    "EmbeddedPrompts",
    "HttpPrompts",
    "PromptDoor",
    "load_run_prompt",
    "open_prompts",
    "resolve_prompt",
]



class PromptDoor(Protocol):
    """Prompts, versions and deployments of one tenant, wherever they are stored."""

    location: str

    def push(self, name: str, spec: dict[str, Any], message: str, author: str) -> dict[str, Any]: ...
    def list_prompts(self) -> list[dict[str, Any]]: ...
    def versions(self, name: str) -> list[dict[str, Any]]: ...
    def version(self, name: str, version: int | None) -> dict[str, Any]: ...
    def deployments(self, name: str) -> list[dict[str, Any]]: ...
    def deployment(self, deployment_id: str) -> dict[str, Any]: ...
    def deploy(self, name: str, version: int, deployment_id: str | None, author: str) -> dict[str, Any]: ...
    def rollback(self, deployment_id: str, author: str) -> dict[str, Any]: ...
    def close(self) -> None: ...
    def __enter__(self) -> PromptDoor: ...
    def __exit__(self, *exc: object) -> None: ...


class EmbeddedPrompts:
    """The SQLite store (owner ``""``, as every embedded run)."""

    def __init__(self, path: str | Path) -> None:
        from runner.store import Store

        self.location = str(path)
        self.store = Store(path)

    def __enter__(self) -> EmbeddedPrompts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def push(self, name: str, spec: dict[str, Any], message: str, author: str) -> dict[str, Any]:
        return self.store.save_prompt_version(name, spec, message=message, author=author)

    def list_prompts(self) -> list[dict[str, Any]]:
        return self.store.list_prompts()

    def versions(self, name: str) -> list[dict[str, Any]]:
        return self.store.list_prompt_versions(name)

    def version(self, name: str, version: int | None) -> dict[str, Any]:
        return self.store.get_prompt_version(name, version)

    def deployments(self, name: str) -> list[dict[str, Any]]:
        return self.store.prompt_deployments(name)

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        return self.store.get_deployment(deployment_id)

    def deploy(self, name: str, version: int, deployment_id: str | None, author: str) -> dict[str, Any]:
        return self.store.deploy_prompt(name, version, deployment_id=deployment_id, author=author)

    def rollback(self, deployment_id: str, author: str) -> dict[str, Any]:
        return self.store.rollback_deployment(deployment_id, author=author)

    def close(self) -> None:
        self.store.close()


class HttpPrompts:
    """A runner server's prompt routes (the ``prompts`` extension of ``GET /``)."""

    def __init__(self, base_url: str, api_key: str | None) -> None:
        from runner.backends.http.api import SyncApi

        self.api = SyncApi(base_url, api_key, max_retries=3)
        self.location = self.api.base_url
        if "prompts" not in self.api.extensions():
            self.api.__exit__()
            raise BackendError(
                f"the server at {self.location} does not offer versioned prompts (no 'prompts' in the extensions "
                "of GET /); use a runner server (python -m runner serve) or the local store (--db)"
            )

    def __enter__(self) -> HttpPrompts:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _get(self, path: str) -> Any:
        return self.api.request("GET", path).json()

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self.api.request("POST", path, body).json()

    def push(self, name: str, spec: dict[str, Any], message: str, author: str) -> dict[str, Any]:
        return dict(self._post("/prompts", {"name": name, "prompt": spec, "message": message, "author": author}))

    def list_prompts(self) -> list[dict[str, Any]]:
        return list(self._get("/prompts"))

    def versions(self, name: str) -> list[dict[str, Any]]:
        return list(self._get(f"/prompts/{quote(name, safe='')}")["versions"])

    def version(self, name: str, version: int | None) -> dict[str, Any]:
        if version is None:
            versions = self.versions(name)
            if not versions:
                raise NotFoundError(f"prompt {name!r} has no versions")
            return versions[-1]
        return dict(self._get(f"/prompts/{quote(name, safe='')}/versions/{int(version)}"))

    def deployments(self, name: str) -> list[dict[str, Any]]:
        return list(self._get(f"/prompts/{quote(name, safe='')}")["deployments"])

    def deployment(self, deployment_id: str) -> dict[str, Any]:
        return dict(self._get(f"/deployments/{quote(deployment_id, safe='')}"))

    def deploy(self, name: str, version: int, deployment_id: str | None, author: str) -> dict[str, Any]:
        body = {"version": version, "deployment_id": deployment_id, "author": author}
        return dict(self._post(f"/prompts/{quote(name, safe='')}/deploy", body))

    def rollback(self, deployment_id: str, author: str) -> dict[str, Any]:
        return dict(self._post(f"/deployments/{quote(deployment_id, safe='')}/rollback", {"author": author}))

    def close(self) -> None:
        self.api.__exit__()


def open_prompts(*, base_url: str | None = None, api_key: str | None = None,
                 db: str | Path | None = None) -> PromptDoor:
    """The prompts door, as :func:`runner.backends.target.resolve_target` decides."""
    from runner.backends.target import resolve_target

    return open_prompts_at(resolve_target(base_url=base_url, api_key=api_key, db=db))


def open_prompts_at(target: Target) -> PromptDoor:
    """The prompts door of a resolved target."""
    if target.base_url is not None:
        return HttpPrompts(target.base_url, target.api_key)
    return EmbeddedPrompts(target.db)


def resolve_prompt(door: PromptDoor, ref: str) -> dict[str, Any]:
    """A version by ``NAME@VERSION``, or by ``NAME``: the version its deployment serves now.

    The answer is a version (``name``, ``version``, ``ref``, ``spec`` ...) plus ``deployment_id``
    (``None`` for an explicit version). A prompt without a deployment, or with several, is a
    :class:`ConfigError` saying what to write instead."""
    from runner.proxy.prompts import parse_ref

    name, version = parse_ref(ref)
    if version is not None:
        return {**door.version(name, version), "deployment_id": None}
    deployments = door.deployments(name)
    if not deployments:
        raise ConfigError(
            f"prompt {name!r} is not deployed: name a version ({name}@N) or deploy one "
            f"(python -m runner prompts deploy {name}@N)"
        )
    if len(deployments) > 1:
        ids = ", ".join(d["deployment_id"] for d in deployments)
        raise ConfigError(f"prompt {name!r} has several deployments ({ids}): name a version ({name}@N) instead")
    d = deployments[0]
    return {**door.version(name, int(d["version"])), "deployment_id": d["deployment_id"]}


def load_run_prompt(ref: str, target: Target) -> DeployedPrompt:
    """The version ``ref`` names, read where the run's results go (``target``). ``NAME`` is
    resolved to the version its deployment serves now, once: the whole run uses that version even
    if the deployment moves meanwhile."""
    from runner.proxy.prompts import DeployedPrompt

    with open_prompts_at(target) as door:
        v = resolve_prompt(door, ref)
    return DeployedPrompt(v["deployment_id"], v["name"], int(v["version"]), v["spec"])
