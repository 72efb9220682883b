"""What a completion costs: a price table in USD per million input and output tokens.

Prices are the providers' list prices for standard (non-batch, uncached-input) usage. Override
or extend them with a JSON file named by ``RUNNER_PRICES_FILE`` or with
``ProxySettings(prices=...)``::

    {"gpt-4o": {"input": 2.5, "output": 10.0}, "my-finetune": [0.3, 1.2]}

A model is looked up by its exact name, then normalised: lower case, without a ``vendor/`` prefix
(OpenRouter), ``.`` read as ``-`` in Claude names, and without a date or ``-latest`` suffix, so
``gpt-4o-mini-2024-07-18`` and ``anthropic/claude-3.5-haiku`` find their family. A model with no
price costs 0, and the ``runner.proxy`` logger says so once per model.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.proxy.errors import ProxyConfigError

__all__ = ["DEFAULT_PRICES", "ModelPrice", "PriceTable", "parse_prices"]

logger = logging.getLogger("runner.proxy")


@dataclass(frozen=True)
class ModelPrice:
    """USD per million tokens."""

    input: float
    output: float


def _p(i: float, o: float) -> ModelPrice:
    return ModelPrice(i, o)


#: List prices in USD per million tokens, as published in 2025. Prices change: override them
#: rather than trusting this table for billing.
DEFAULT_PRICES: Mapping[str, ModelPrice] = {
    # OpenAI
    "gpt-5": _p(1.25, 10.0),
    "gpt-5-chat-latest": _p(1.25, 10.0),
    "gpt-5-mini": _p(0.25, 2.0),
    "gpt-5-nano": _p(0.05, 0.40),
    "gpt-4.1": _p(2.0, 8.0),
    "gpt-4.1-mini": _p(0.40, 1.60),
    "gpt-4.1-nano": _p(0.10, 0.40),
    "gpt-4o": _p(2.50, 10.0),
    "gpt-4o-2024-05-13": _p(5.0, 15.0),
    "gpt-4o-mini": _p(0.15, 0.60),
    "o1": _p(15.0, 60.0),
    "o1-mini": _p(1.10, 4.40),
    "o1-pro": _p(150.0, 600.0),
    "o3": _p(2.0, 8.0),
    "o3-mini": _p(1.10, 4.40),
    "o3-pro": _p(20.0, 80.0),
    "o4-mini": _p(1.10, 4.40),
    "gpt-4-turbo": _p(10.0, 30.0),
    "gpt-4": _p(30.0, 60.0),
    "gpt-3.5-turbo": _p(0.50, 1.50),
    # Anthropic
    "claude-opus-4-5": _p(5.0, 25.0),
    "claude-opus-4-1": _p(15.0, 75.0),
    "claude-opus-4": _p(15.0, 75.0),
    "claude-opus-4-0": _p(15.0, 75.0),
    "claude-sonnet-4-5": _p(3.0, 15.0),
    "claude-sonnet-4": _p(3.0, 15.0),
    "claude-sonnet-4-0": _p(3.0, 15.0),
    "claude-haiku-4-5": _p(1.0, 5.0),
    "claude-3-7-sonnet": _p(3.0, 15.0),
    "claude-3-5-sonnet": _p(3.0, 15.0),
    "claude-3-5-haiku": _p(0.80, 4.0),
    "claude-3-opus": _p(15.0, 75.0),
    "claude-3-haiku": _p(0.25, 1.25),
}

_SUFFIX = re.compile(r"(-\d{4}-\d{2}-\d{2}|-\d{8}|@\d{8}|-latest|-v\d+(:\d+)?)$")


def normalise_model(model: str) -> str:
    """``"anthropic/claude-3.5-haiku-20241022"`` -> ``"claude-3-5-haiku"``."""
    name = model.strip().lower().rsplit("/", 1)[-1]
    if name.startswith("claude"):
        name = name.replace(".", "-")
    return _SUFFIX.sub("", name)


def parse_prices(data: Any, source: str) -> dict[str, ModelPrice]:
    """``{model: {"input": x, "output": y}}`` or ``{model: [x, y]}`` -> prices; ``source`` names
    the file in the error."""
    if not isinstance(data, dict):
        raise ProxyConfigError(f"{source}: expected a JSON object mapping model -> price")
    prices = {}
    for model, value in data.items():
        try:
            if isinstance(value, dict):
                prices[str(model)] = ModelPrice(float(value["input"]), float(value["output"]))
            else:
                i, o = value
                prices[str(model)] = ModelPrice(float(i), float(o))
        except (KeyError, TypeError, ValueError):
            raise ProxyConfigError(
                f'{source}: price of {model!r} must be {{"input": <USD/Mtok>, "output": <USD/Mtok>}}'
            ) from None
    return prices


class PriceTable:
    """Looks up prices (overrides first) and turns token counts into USD."""

    def __init__(self, overrides: Mapping[str, ModelPrice] | None = None) -> None:
        self._prices = {**DEFAULT_PRICES, **(overrides or {})}
        self._normalised = {normalise_model(k): v for k, v in self._prices.items()}
        # Normalised names of the overrides win over the defaults' too.
        self._normalised.update({normalise_model(k): v for k, v in (overrides or {}).items()})
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    def price(self, model: str) -> ModelPrice | None:
        return self._prices.get(model) or self._normalised.get(normalise_model(model))

    def cost(self, input_tokens: int, output_tokens: int, *models: str) -> float:
        """USD for the first of ``models`` with a price (answered model, then requested one);
        0.0 with one warning per model when none has a price."""
        for model in models:
            if model and (price := self.price(model)) is not None:
                return (input_tokens * price.input + output_tokens * price.output) / 1_000_000
        name = next((m for m in models if m), "<no model>")
        with self._lock:
            if name in self._warned:
                return 0.0
            self._warned.add(name)
        logger.warning(
            "no price for model %r: its cost is reported as 0; add it to RUNNER_PRICES_FILE", name
        )
        return 0.0
