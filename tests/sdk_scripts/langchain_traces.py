"""LangChain runs traced by the official ``parea-ai`` SDK's tracer against ``PAREA_BASE_URL``.

Run by ``tests/test_langchain.py`` in a subprocess whose environment points the SDK at a runner
server. The chat model is LangChain's own fake (``GenericFakeChatModel``): no network. Prints one
line, ``RESULT: {json}``, with the ids the test then reads back from the server.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from typing import Any

from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from parea import Parea, trace
from parea.schemas.models import QueryParams
from parea.utils.trace_integrations.langchain import PareaAILangchainTracer

p = Parea(api_key=os.environ["PAREA_API_KEY"], project_name="lc-project")
ids: list[str] = []


class Recorder(PareaAILangchainTracer):
    """The SDK's tracer, remembering the id of each top run it traced (for the test to read)."""

    def _persist_run(self, run: Any) -> None:
        if run.parent_run_id is None and str(run.id) not in ids:
            ids.append(str(run.id))
        super()._persist_run(run)


def model(n: int) -> GenericFakeChatModel:
    answers = [
        AIMessage(
            content=f"Paris {i}",
            usage_metadata={"input_tokens": 11, "output_tokens": 2, "total_tokens": 13},
            response_metadata={"model_name": "fake-gpt"},
        )
        for i in range(n)
    ]
    return GenericFakeChatModel(messages=iter(answers))


prompt = ChatPromptTemplate.from_messages([("system", "Answer in one word."), ("human", "{question}")])
chain = prompt | model(10) | StrOutputParser()


def explode(_: Any) -> str:
    raise ValueError("the chain fails on purpose")


failing = prompt | model(1) | RunnableLambda(explode)

# 1. a chain on its own
tracer = Recorder(tags=["lc"], metadata={"k": "v"})
plain = chain.invoke({"question": "capital of France?"}, config={"callbacks": [tracer]})
plain_id = ids[-1]

# 2. a chain inside a function traced by the SDK
@trace(name="answer")  # type: ignore[untyped-decorator]
def answer(question: str) -> str:
    return str(chain.invoke({"question": question}, config={"callbacks": [Recorder(session_id="s-1")]}))


nested = answer("capital of Italy?")
nested_id = ids[-1]

# 3. a chain that raises
with contextlib.suppress(ValueError):
    failing.invoke({"question": "boom"}, config={"callbacks": [Recorder()]})
failing_id = ids[-1]

# 4. an experiment whose function runs the chain
experiment = p.experiment(name="lc-experiment", data=[{"question": "a?"}, {"question": "b?"}], func=answer)
experiment.run(run_name="lc-1")

# the SDK's readers, on what the server made of the LangChain runs
tree = p.get_trace_log(plain_id)
llm_calls = p.get_trace_logs(
    QueryParams(
        project_name="lc-project", filter_field="trace_name", filter_operator="like", filter_value="FakeChat"
    )
)

started = time.monotonic()
missing = p.get_collection("no-such-dataset")  # against Parea: None, at once
missing_took = time.monotonic() - started

print(
    "RESULT: "
    + json.dumps(
        {
            "plain": {"id": plain_id, "output": plain},
            "nested": {"id": nested_id, "output": nested},
            "failing": {"id": failing_id},
            "experiment": experiment.experiment_uuid,
            "avg_scores": experiment.experiment_stats.avg_scores if experiment.experiment_stats else None,
            "sdk_read": {
                "children": sorted(c.trace_name for c in tree.children_logs),
                "llm_models": sorted({r.configuration.model for r in llm_calls.results}),
                "llm_roles": sorted({str(m.role) for r in llm_calls.results for m in r.configuration.messages}),
                "llm_total": llm_calls.total,
            },
            "missing_collection": None if missing is None else repr(missing),
            "missing_took": missing_took,
        }
    ),
    flush=True,
)
