"""An LLM proxy that speaks Parea's ``/completion`` API: provider calls, caching, retries, cost.

The pieces, in the order a request meets them::

    models      CompletionsSchema in, CompletionsResponseSchema out (the wire format)
    settings    ProxySettings: keys, base URLs, prices, retry policy (env read here only)
    engine      Proxy.complete() / Proxy.stream(): validate, cache, single-flight, log
    cache       the cache key rule; MemoryCompletionCache, SQLiteCompletionCache, StoreCompletionCache
    providers   OpenAI-compatible and Anthropic request building and response parsing
    upstream    the shared httpx client, retries with backoff, server-sent events
    pricing     USD per million tokens, overridable
    tracelog    the TraceLogSchema dict handed to ``log_sink``

Example::

    from runner.proxy import CompletionsSchema, Proxy, SQLiteCompletionCache

    async with Proxy(SQLiteCompletionCache("cache.db"), log_sink=print) as proxy:
        answer = await proxy.complete(CompletionsSchema.model_validate({
            "llm_configuration": {"model": "gpt-4o-mini", "provider": "openai",
                                  "messages": [{"role": "user", "content": "Hi"}]},
        }))
"""

from runner.proxy.cache import (
    CACHE_SEED_KEY,
    CompletionCache,
    MemoryCompletionCache,
    SQLiteCompletionCache,
    StoreCompletionCache,
    cache_key,
)
from runner.proxy.engine import CompletionStream, LogSink, Proxy, resolve_call
from runner.proxy.errors import ProxyConfigError
from runner.proxy.models import (
    CompletionsResponseSchema,
    CompletionsSchema,
    FunctionSchema,
    LLMInputsSchema,
    MessageSchema,
    ModelParamsSchema,
    ProviderName,
    Role,
)
from runner.proxy.pricing import DEFAULT_PRICES, ModelPrice, PriceTable
from runner.proxy.providers import PROVIDERS, Completion, LLMCall
from runner.proxy.settings import ProviderConfig, ProxySettings
from runner.proxy.upstream import is_rate_limited

__all__ = [
    "CACHE_SEED_KEY",
    "DEFAULT_PRICES",
    "PROVIDERS",
    "Completion",
    "CompletionCache",
    "CompletionStream",
    "CompletionsResponseSchema",
    "CompletionsSchema",
    "FunctionSchema",
    "LLMCall",
    "LLMInputsSchema",
    "LogSink",
    "MemoryCompletionCache",
    "MessageSchema",
    "ModelParamsSchema",
    "ModelPrice",
    "PriceTable",
    "ProviderConfig",
    "ProviderName",
    "Proxy",
    "ProxyConfigError",
    "ProxySettings",
    "Role",
    "SQLiteCompletionCache",
    "StoreCompletionCache",
    "cache_key",
    "is_rate_limited",
    "resolve_call",
]
