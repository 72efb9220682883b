"""Proxy settings: provider keys and base URLs, prices, retry and connection policy.

The environment is read here and nowhere else (:meth:`ProxySettings.from_env`); tests build
``ProxySettings(...)`` directly. For each provider the key and base URL come from, first to last:

1. ``provider_api_key`` in the request (key only);
2. ``<PROVIDER>_API_KEY`` / ``<PROVIDER>_BASE_URL`` (``OPENAI_API_KEY``, ``ANTHROPIC_BASE_URL``
   ..., the names the official SDKs read; Azure also reads ``AZURE_OPENAI_API_KEY``);
3. the JSON file named by ``RUNNER_PROVIDERS_FILE``:
   ``{"openai": {"api_key": "sk-...", "base_url": "https://..."}, ...}``;
4. the provider's public base URL (:data:`runner.proxy.providers.PROVIDERS`).

``RUNNER_PRICES_FILE`` names a JSON price file (see :mod:`runner.proxy.pricing`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runner.proxy.errors import ProxyConfigError
from runner.proxy.pricing import ModelPrice, parse_prices
from runner.proxy.providers import PROVIDERS

__all__ = ["PRICES_FILE_ENV", "PROVIDERS_FILE_ENV", "ProviderConfig", "ProxySettings"]

PROVIDERS_FILE_ENV = "RUNNER_PROVIDERS_FILE"
PRICES_FILE_ENV = "RUNNER_PRICES_FILE"


@dataclass(frozen=True)
class ProviderConfig:
    """Credentials and endpoint of one provider; ``None`` means "not configured"."""

    api_key: str | None = None
    #: OpenAI dialect: the URL ``/chat/completions`` is appended to (``.../v1``).
    #: Anthropic: the URL ``/v1/messages`` is appended to, as ``ANTHROPIC_BASE_URL``.
    base_url: str | None = None


@dataclass(frozen=True)
class ProxySettings:
    """Everything the proxy needs to know, immutable once built.

    Example::

        settings = ProxySettings(
            providers={"openai": ProviderConfig(api_key="sk-...", base_url="http://127.0.0.1:8000/v1")},
            max_retries=1,
            backoff_base=0.001,
        )
    """

    #: Per provider name (``"openai"``, ``"anthropic"`` ...).
    providers: Mapping[str, ProviderConfig] = field(default_factory=dict)
    #: Extra or replacement prices, by model name.
    prices: Mapping[str, ModelPrice] = field(default_factory=dict)
    #: Retries after the first attempt, for 429, 5xx, timeouts and connection errors.
    max_retries: int = 3
    #: Backoff before retry ``n`` (from 0) is uniform in ``[0, backoff_base * 2**n]`` ("full
    #: jitter"), capped at ``backoff_max``; a ``Retry-After`` header replaces it (same cap).
    backoff_base: float = 0.5
    backoff_max: float = 60.0
    #: Seconds to wait for a connection, and between bytes of a response.
    connect_timeout: float = 10.0
    read_timeout: float = 300.0
    #: Bounds of the shared connection pool; requests beyond ``max_connections`` queue. Idle
    #: connections are kept (up to ``max_keepalive_connections``, for 5 s): with fewer kept than
    #: are busy, httpx closes each connection as it goes idle and the next request opens a new one.
    max_connections: int = 1000
    max_keepalive_connections: int = 1000
    #: Anthropic requires ``max_tokens``; used when the request has no ``max_length``.
    anthropic_max_tokens: int = 4096

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ProxyConfigError(f"max_retries must be >= 0, not {self.max_retries}")
        unknown = sorted(set(self.providers) - set(PROVIDERS))
        if unknown:
            raise ProxyConfigError(
                f"unknown provider(s) {', '.join(unknown)} in proxy settings; "
                f"known: {', '.join(sorted(PROVIDERS))}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ProxySettings:
        """Settings from the environment (``os.environ`` unless given); keyword arguments win."""
        env = os.environ if environ is None else environ
        from_file: dict[str, ProviderConfig] = {}
        if path := env.get(PROVIDERS_FILE_ENV):
            from_file = _read_providers_file(path)
        providers = {}
        for name, spec in PROVIDERS.items():
            base = from_file.get(name, ProviderConfig())
            key = _first(env, spec.key_env, *spec.key_env_aliases) or base.api_key
            url = _first(env, spec.base_url_env, *spec.base_url_env_aliases) or base.base_url
            if key or url:
                providers[name] = ProviderConfig(api_key=key, base_url=url)
        prices: dict[str, ModelPrice] = {}
        if path := env.get(PRICES_FILE_ENV):
            prices = parse_prices(_read_json(path, PRICES_FILE_ENV), f"{PRICES_FILE_ENV}={path}")
        kwargs: dict[str, Any] = {"providers": providers, "prices": prices, **overrides}
        return cls(**kwargs)

    def resolve(self, provider: str, request_key: str | None = None) -> tuple[str | None, str]:
        """``(api_key, base_url)`` for a request to ``provider``.

        Raises :class:`ProxyConfigError`, naming the env var to set, when the provider needs a
        key or a base URL that nothing provides.
        """
        spec = PROVIDERS[provider]
        config = self.providers.get(provider, ProviderConfig())
        key = request_key or config.api_key
        if not key and spec.key_required:
            raise ProxyConfigError(
                f"no API key for provider {provider!r}: set {spec.key_env} (or add it to the "
                f"{PROVIDERS_FILE_ENV} file, or send provider_api_key in the request)"
            )
        base_url = config.base_url or spec.default_base_url
        if not base_url:
            raise ProxyConfigError(
                f"no base URL for provider {provider!r}: set {spec.base_url_env} "
                f"(or add it to the {PROVIDERS_FILE_ENV} file)"
            )
        return key, base_url


def _first(env: Mapping[str, str], *names: str) -> str | None:
    return next((env[n] for n in names if env.get(n)), None)


def _read_json(path: str, env_var: str) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ProxyConfigError(f"cannot read {env_var}={path}: {exc.strerror}") from None
    except ValueError as exc:
        raise ProxyConfigError(f"{env_var}={path} is not valid JSON: {exc}") from None


def _read_providers_file(path: str) -> dict[str, ProviderConfig]:
    data = _read_json(path, PROVIDERS_FILE_ENV)
    where = f"{PROVIDERS_FILE_ENV}={path}"
    if not isinstance(data, dict):
        raise ProxyConfigError(f"{where}: expected a JSON object mapping provider -> settings")
    out = {}
    for name, entry in data.items():
        if name not in PROVIDERS:
            known = ", ".join(sorted(PROVIDERS))
            raise ProxyConfigError(f"{where}: unknown provider {name!r}; known: {known}")
        if not isinstance(entry, dict) or set(entry) - {"api_key", "base_url"}:
            raise ProxyConfigError(f'{where}: {name!r} must be {{"api_key": "...", "base_url": "..."}}')
        out[name] = ProviderConfig(api_key=entry.get("api_key"), base_url=entry.get("base_url"))
    return out
