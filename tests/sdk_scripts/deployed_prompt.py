"""The official ``parea-ai`` SDK's deployed-prompt calls against ``PAREA_BASE_URL``.

Run by ``tests/test_prompts_server.py`` in a subprocess; ``DEPLOYMENT_ID`` names the deployment.
Prints one line, ``RESULT: {json}``, with what the SDK got back.
"""

from __future__ import annotations

import json
import os

from parea import Parea
from parea.schemas import Completion, UseDeployedPrompt

p = Parea(api_key=os.environ["PAREA_API_KEY"], project_name="sdk-prompts")
deployment_id = os.environ["DEPLOYMENT_ID"]

unfilled = p.get_prompt(UseDeployedPrompt(deployment_id=deployment_id))
filled = p.get_prompt(UseDeployedPrompt(deployment_id=deployment_id, llm_inputs={"name": "Ada", "place": "Paris"}))
answer = p.completion(Completion(deployment_id=deployment_id, llm_inputs={"name": "Ada", "place": "Paris"}))


def prompt_fields(r: object) -> dict[str, object]:
    prompt = getattr(r, "prompt", None)
    return {
        "deployment_id": getattr(r, "deployment_id", None),
        "version_number": getattr(r, "version_number", None),
        "name": getattr(r, "name", None),
        "model": getattr(r, "model", None),
        "provider": getattr(r, "provider", None),
        "model_params": getattr(r, "model_params", None),
        "raw_messages": getattr(prompt, "raw_messages", None),
        "messages": getattr(prompt, "messages", None),
        "inputs": getattr(prompt, "inputs", None),
    }


print(
    "RESULT: "
    + json.dumps(
        {
            "unfilled": prompt_fields(unfilled),
            "filled": prompt_fields(filled),
            "answer": {"content": answer.content, "status": answer.status, "model": answer.model,
                       "inference_id": answer.inference_id},
        }
    ),
    flush=True,
)
