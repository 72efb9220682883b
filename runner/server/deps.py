"""What every route needs: the store, the caller's tenant, and FastAPI-shaped 422 errors."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from runner.store import Store

__all__ = ["OwnerDep", "StoreDep", "invalid", "invalid_from"]


async def _store(request: Request) -> Store:
    store: Store = request.app.state.store
    return store


async def _owner(request: Request) -> str:
    owner: str = request.state.owner  # set by AuthMiddleware before the route runs
    return owner


#: the app's store (``create_app(store)``)
StoreDep = Annotated[Store, Depends(_store)]
#: the tenant of the request's API key (``""`` when the server has no keys)
OwnerDep = Annotated[str, Depends(_owner)]


def invalid(loc: Sequence[str | int], msg: str, value: Any = None) -> RequestValidationError:
    """A 422 with FastAPI's body for a value pydantic could not have rejected by itself."""
    return RequestValidationError([{"type": "value_error", "loc": tuple(loc), "msg": msg, "input": value}])


def invalid_from(exc: ValidationError, prefix: Sequence[str | int] = ("body",)) -> RequestValidationError:
    """FastAPI's 422 for a pydantic error raised while validating a request by hand."""
    errors = []
    for err in exc.errors(include_url=False):
        e: dict[str, Any] = dict(err)
        e["loc"] = (*prefix, *e["loc"])
        if "ctx" in e:  # may hold exception objects, which do not serialise
            e["ctx"] = {k: v if isinstance(v, str | int | float | bool) else str(v) for k, v in e["ctx"].items()}
        errors.append(e)
    return RequestValidationError(errors)
