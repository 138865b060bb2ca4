"""verl: a custom reward function file that scores with a POLAR model through rmclient.

Point verl at this file; the reward workers read the client settings from their environment::

    export RMCLIENT_MODEL=internlm/POLAR-7B RMCLIENT_SERVER_TYPE=sglang RMCLIENT_SERVER_ADDRESS=10.0.0.1:30000
    python3 -m verl.trainer.main_ppo ... \\
        reward.custom_reward_function.path=examples/verl_reward.py \\
        reward.custom_reward_function.name=compute_score            # or compute_score_batch with
                                                                    # reward_model.reward_manager=batch

POLAR style: ``ground_truth`` is the reference, ``extra_info["prompt"]`` the prompt and the
response (after its last ``</think>``) the output. ``python examples/verl_reward.py`` scores
two samples the way verl's naive reward manager calls the function. The tests load this
file the way verl does (tests/test_examples.py).
"""

from __future__ import annotations

import os

from rmclient import RewardModelClient
from rmclient.integrations.verl import make_compute_score, make_compute_score_batch

client = RewardModelClient(
    os.environ.get("RMCLIENT_MODEL", "internlm/POLAR-7B"),
    server_type=os.environ.get("RMCLIENT_SERVER_TYPE", "sglang"),
    server_address=os.environ.get("RMCLIENT_SERVER_ADDRESS", "127.0.0.1:30000").split(","),
    trust_remote_code=True,
)
compute_score = make_compute_score(client, strip_think=True)
compute_score_batch = make_compute_score_batch(client, strip_think=True)


if __name__ == "__main__":
    import json

    prompt = [{"role": "user", "content": "What is the capital of China?"}]
    for solution in ("<think>It is Beijing.</think>Beijing.", "<think>hmm</think>Shanghai."):
        reward = compute_score(data_source="demo", solution_str=solution, ground_truth="Beijing.",
                               extra_info={"prompt": prompt})
        print(json.dumps({"solution": solution, "reward": reward}))
