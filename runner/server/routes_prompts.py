"""Deployed prompts: Parea's ``POST /deployed-prompt``, and our routes to version and deploy them.

``POST /deployed-prompt`` takes ``DeploymentPromptIdSchema`` (``deployment_id``, optional
``llm_inputs``) and answers ``GetDeployedPromptResponseSchema``: the version the deployment
serves, with ``prompt.messages`` filled from ``llm_inputs`` when given (strictly: a missing
variable is a 422 naming it) and equal to ``prompt.raw_messages`` otherwise.

``POST /completion`` and ``/completion/stream`` with a ``deployment_id`` go through
:func:`resolve_deployment` first (see :func:`runner.proxy.prompts.apply_deployment`).

The extension routes (advertised as ``prompts`` in ``GET /``), per tenant like everything else:

=========================================  ===================================================
``GET /prompts``                           every prompt: latest version, deployments
``POST /prompts``                          ``{name, prompt, message, author}``: a new version
                                           (``created: false`` when equal to the latest)
``GET /prompts/{name}``                    its versions (oldest first) and deployments
``GET /prompts/{name}/versions/{n}``       one version
``POST /prompts/{name}/deploy``            ``{version, deployment_id?, author?}``: deploy or
                                           move a deployment
``GET /deployments/{id}``                  a deployment: version, spec, history
``POST /deployments/{id}/rollback``        back to the version it served before
=========================================  ===================================================
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from runner.errors import ConfigError
from runner.proxy.models import CompletionsSchema, ProviderName
from runner.proxy.prompts import (
    DeployedPrompt,
    MissingInputsError,
    apply_deployment,
    deployed_prompt_response,
    validate_spec,
)
from runner.schema import WireModel
from runner.server.deps import OwnerDep, StoreDep, invalid
from runner.store import Store

__all__ = ["deployed", "resolve_deployment", "router"]

router = APIRouter(tags=["prompts"])


class DeploymentPromptIdSchema(WireModel):
    deployment_id: str
    llm_inputs: dict[str, Any] | None = None


class PromptSchema(WireModel):
    raw_messages: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    inputs: dict[str, Any] | None = None


class GetDeployedPromptResponseSchema(WireModel):
    deployment_id: str
    version_number: float
    name: str | None = None
    functions: list[str] | None = None
    function_call: str | None = None
    prompt: PromptSchema | None = None
    model: str | None = None
    provider: ProviderName | None = None
    model_params: dict[str, Any] | None = None


class NewPromptVersionSchema(WireModel):
    name: str
    #: the version: ``model``, ``provider``, ``model_params``, ``messages``, ``functions``, ``function_call``
    prompt: dict[str, Any]
    message: str = ""
    author: str = ""


class DeploySchema(WireModel):
    version: int = Field(ge=1)
    deployment_id: str | None = None
    author: str = ""


class RollbackSchema(WireModel):
    author: str = ""


def deployed(store: Store, deployment_id: str, owner: str) -> DeployedPrompt:
    """The deployment ``deployment_id`` of ``owner`` (404 when there is none)."""
    d = store.get_deployment(deployment_id, owner)
    return DeployedPrompt(d["deployment_id"], d["name"], d["version"], d["spec"])


def _missing(exc: MissingInputsError) -> Exception:
    return invalid(("body", "llm_inputs", *exc.names[:1]), str(exc))


async def resolve_deployment(store: Store, owner: str, body: CompletionsSchema) -> CompletionsSchema:
    """``body`` with its deployment's version applied; unchanged without ``deployment_id``."""
    if not body.deployment_id:
        return body
    prompt = await run_in_threadpool(deployed, store, body.deployment_id, owner)
    try:
        return apply_deployment(body, prompt)
    except MissingInputsError as exc:
        raise _missing(exc) from None


@router.post("/deployed-prompt", response_model=GetDeployedPromptResponseSchema)
def deployed_prompt(body: DeploymentPromptIdSchema, store: StoreDep, owner: OwnerDep) -> dict[str, Any]:
    """The deployed prompt and its details; filled in from ``llm_inputs`` when given."""
    try:
        return deployed_prompt_response(deployed(store, body.deployment_id, owner), body.llm_inputs)
    except MissingInputsError as exc:
        raise _missing(exc) from None


@router.get("/prompts")
def list_prompts(store: StoreDep, owner: OwnerDep) -> list[dict[str, Any]]:
    """Extension: every prompt of the caller, by name."""
    return store.list_prompts(owner)


@router.post("/prompts")
def push_prompt(body: NewPromptVersionSchema, store: StoreDep, owner: OwnerDep) -> dict[str, Any]:
    """Extension: store a new version of a prompt (``created: false`` when it equals the latest)."""
    try:
        spec = validate_spec(body.prompt, "prompt")
    except ConfigError as exc:
        raise invalid(("body", "prompt"), str(exc)) from None
    return store.save_prompt_version(body.name, spec, message=body.message, author=body.author, owner=owner)


@router.get("/prompts/{name}")
def get_prompt(name: str, store: StoreDep, owner: OwnerDep) -> dict[str, Any]:
    """Extension: a prompt's versions, oldest first, and its deployments."""
    versions = store.list_prompt_versions(name, owner)
    return {"name": name, "versions": versions, "deployments": store.prompt_deployments(name, owner)}


@router.get("/prompts/{name}/versions/{version}")
def get_prompt_version(name: str, version: int, store: StoreDep, owner: OwnerDep) -> dict[str, Any]:
    """Extension: one version of a prompt."""
    return store.get_prompt_version(name, version, owner)


@router.post("/prompts/{name}/deploy")
def deploy_prompt(name: str, body: DeploySchema, store: StoreDep, owner: OwnerDep) -> dict[str, Any]:
    """Extension: point a deployment (``deployment_id``, else the prompt's, else a new one) at a version."""
    return store.deploy_prompt(name, body.version, deployment_id=body.deployment_id, author=body.author, owner=owner)


@router.get("/deployments/{deployment_id}")
def get_deployment(deployment_id: str, store: StoreDep, owner: OwnerDep) -> dict[str, Any]:
    """Extension: a deployment, the version it serves and its history (newest first)."""
    return store.get_deployment(deployment_id, owner)


@router.post("/deployments/{deployment_id}/rollback")
def rollback_deployment(
    deployment_id: str, store: StoreDep, owner: OwnerDep, body: RollbackSchema | None = None
) -> dict[str, Any]:
    """Extension: move the deployment back to the version it served before its last move."""
    return store.rollback_deployment(deployment_id, author=body.author if body else "", owner=owner)
