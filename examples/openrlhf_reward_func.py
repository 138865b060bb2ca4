"""OpenRLHF: a ``--remote_rm_url`` reward function file that scores with a POLAR model.

OpenRLHF loads this file and calls ``reward_func(queries, prompts, labels)`` for each
rollout: ``queries`` are prompt + response as one decoded text, ``labels`` the dataset
column ``--label_key`` names (here POLAR's reference)::

    export RMCLIENT_MODEL=internlm/POLAR-7B RMCLIENT_SERVER_TYPE=sglang RMCLIENT_SERVER_ADDRESS=10.0.0.1:30000
    python3 -m openrlhf.cli.train_ppo_ray ... \\
        --remote_rm_url examples/openrlhf_reward_func.py --label_key reference

The response is what follows the prompt in the query, with the policy's end-of-turn
tokens (``RMCLIENT_STOP``, comma-separated; default ``<|im_end|>``, ``<|endoftext|>``,
``</s>``, ``<|eot_id|>``) cut from its end. Without ``--apply_chat_template`` the prompt
POLAR sees is the dataset's own text; with it, it includes the policy's chat markup.

An outcome reward model needs no file: ``rmclient serve MODEL --port 5000`` and
``--remote_rm_url http://HOST:5000/get_reward`` (OpenRLHF's ``serve_rm`` protocol).
The tests run this file inside OpenRLHF's own executor (tests/test_examples.py).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Dict, List, Sequence

from rmclient import RewardModelClient

STOP = [s for s in os.environ.get("RMCLIENT_STOP", "<|im_end|>,<|endoftext|>,</s>,<|eot_id|>").split(",") if s]
_lock = threading.Lock()
_client: List[RewardModelClient] = []


def client() -> RewardModelClient:
    """One client per process, built on the first call (OpenRLHF calls from worker threads)."""
    with _lock:
        if not _client:
            _client.append(RewardModelClient(
                os.environ.get("RMCLIENT_MODEL", "internlm/POLAR-7B"),
                server_type=os.environ.get("RMCLIENT_SERVER_TYPE", "sglang"),
                server_address=os.environ.get("RMCLIENT_SERVER_ADDRESS", "127.0.0.1:30000").split(","),
                trust_remote_code=True,
            ))
        return _client[0]


def response_of(query: str, prompt: str) -> str:
    """The response in ``query`` (prompt + response), without trailing end-of-turn tokens."""
    if not query.startswith(prompt):
        raise ValueError(f"the query does not start with its prompt: {query[:80]!r} / {prompt[:80]!r}")
    response = query[len(prompt):]
    cut = True
    while cut:
        cut = False
        for stop in STOP:
            if response.endswith(stop):
                response, cut = response[: -len(stop)], True
    return response


def reward_func(queries: Sequence[str], prompts: Sequence[str], labels: Sequence[Any]) -> Dict[str, Any]:
    """OpenRLHF's reward function: ``{"rewards": tensor, "scores": tensor, "extra_logs": {}}``."""
    import torch

    samples = [
        {"prompt": p, "reference": label, "output": response_of(q, p)}
        for q, p, label in zip(queries, prompts, labels)
    ]
    rewards = torch.tensor(client()(samples), dtype=torch.float32)
    return {"rewards": rewards, "scores": rewards, "extra_logs": {}}
