"""The official ``parea-ai`` SDK's completion calls against ``PAREA_BASE_URL``.

Run by ``tests/test_server_completion.py`` in a subprocess whose environment points the SDK at a
runner server (which reads its provider settings from its own environment). Prints one line,
``RESULT: {json}``, with what the SDK got back.
"""

from __future__ import annotations

import json
import os

from parea import Parea, trace
from parea.schemas import Completion, LLMInputs, Message, ModelParams, Role

p = Parea(api_key=os.environ["PAREA_API_KEY"], project_name="sdk-completion")


def ask(text: str) -> Completion:
    return Completion(
        llm_configuration=LLMInputs(
            model="gpt-4o-mini",
            provider="openai",
            model_params=ModelParams(temp=0.0, max_length=32),
            messages=[Message(role=Role.user, content=text)],
        ),
        metadata={"source": "sdk"},
    )


@trace  # type: ignore[untyped-decorator]
def traced(text: str) -> str:
    return str(p.completion(ask(text)).content)


plain = p.completion(ask("hi"))
again = p.completion(ask("hi"))
chunks = list(p.stream(ask("stream me please")))
nested = traced("inside a trace")

print(
    "RESULT: "
    + json.dumps(
        {
            "plain": {
                "content": plain.content,
                "inference_id": plain.inference_id,
                "tokens": [plain.input_tokens, plain.output_tokens, plain.total_tokens],
                "cost": plain.cost,
                "cache_hit": plain.cache_hit,
                "status": plain.status,
                "provider": plain.provider,
                "model": plain.model,
            },
            "again": {"cache_hit": again.cache_hit, "cost": again.cost, "content": again.content},
            "chunks": chunks,
            "nested": nested,
        }
    ),
    flush=True,
)
