"""GRPO with TRL, rewarded by a POLAR model through rmclient.

A reward server first (or leave ``--server-type`` out to score in-process)::

    rmclient launch sglang internlm/POLAR-7B --port 30000 --trust-remote-code
    python examples/trl_grpo.py --policy Qwen/Qwen2.5-0.5B-Instruct --reward-model internlm/POLAR-7B \\
        --server-type sglang --server-address 127.0.0.1:30000

Each prompt comes with a reference answer (POLAR scores the completion against it).
Prints one JSON line per logged step: ``{"step": 1, "reward": ...}`` (TRL's
``rewards/<name>/mean``). The tests run it on tiny models (tests/test_examples.py).
"""

from __future__ import annotations

import argparse
import json
import math
from typing import Optional, Sequence

DATA = [
    {"prompt": "What is the capital of China?", "reference": "Beijing."},
    {"prompt": "What is 7 times 8?", "reference": "7 times 8 is 56."},
    {"prompt": "Name a primary colour.", "reference": "Red is a primary colour."},
    {"prompt": "Say hello, how are you?", "reference": "Hello, I am fine, thank you."},
]


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--policy", default="Qwen/Qwen2.5-0.5B-Instruct", help="the policy to train")
    p.add_argument("--reward-model", default="internlm/POLAR-7B", help="the reward model (its tokenizer and config)")
    p.add_argument("--server-type", default="transformers", help="transformers (in-process), sglang, vllm, lmdeploy")
    p.add_argument("--server-address", default=None, help="host:port of the reward server(s), comma-separated")
    p.add_argument("--max-steps", type=int, default=10)
    p.add_argument("--max-completion-length", type=int, default=64)
    p.add_argument("--output-dir", default="grpo-polar")
    p.add_argument("--cpu", action="store_true", help="train on the CPU")
    args = p.parse_args(argv)

    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from rmclient import RewardModelClient

    addresses = args.server_address.split(",") if args.server_address else None
    with RewardModelClient(args.reward_model, server_type=args.server_type, server_address=addresses,
                           trust_remote_code=True) as client:
        config = GRPOConfig(
            output_dir=args.output_dir,
            per_device_train_batch_size=2,
            num_generations=2,
            max_completion_length=args.max_completion_length,
            max_steps=args.max_steps,
            logging_steps=1,
            learning_rate=1e-5,
            report_to="none",
            save_strategy="no",
            use_cpu=args.cpu,
            bf16=not args.cpu,
            seed=0,
            disable_tqdm=True,
        )
        trainer = GRPOTrainer(
            model=args.policy,
            reward_funcs=client.as_reward_func(reference_column="reference"),
            args=config,
            train_dataset=Dataset.from_list(DATA),
        )
        trainer.train()
        key = f"rewards/{trainer.reward_func_names[0]}/mean"
        for entry in trainer.state.log_history:
            if key in entry:
                assert math.isfinite(entry[key]), entry
                print(json.dumps({"step": entry["step"], "reward": entry[key]}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
