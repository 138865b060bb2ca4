"""More than one float: process rewards per step, dense per-token rewards, multi-objective vectors,
pairwise and listwise preference, and spreading them onto a policy's tokens.

    python examples/reward_kinds.py                       # tiny models built offline (rmclient.testing)
    python examples/reward_kinds.py --prm Qwen/Qwen2.5-Math-PRM-7B --rm /models/rm --multi /models/multi-rm

Each model is scored in-process; add ``server_type=``/``server_address=`` to the clients to score on
vLLM (``rmclient launch vllm MODEL`` serves each kind raw) or ``rmclient serve``. It prints one JSON
object with every result (the tests run it and check the numbers against direct forward passes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from rmclient import RewardModelClient, spread


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prm", help="a process reward model (default: a tiny Qwen2ForProcessRewardModel)")
    parser.add_argument("--rm", help="an outcome reward model (default: a tiny chat RM)")
    parser.add_argument("--multi", help="a multi-objective reward model (default: a tiny 3-label head)")
    args = parser.parse_args()
    tiny = Path(tempfile.mkdtemp(prefix="rmclient-kinds-"))
    if not (args.prm and args.rm and args.multi):
        from rmclient.testing import build_chat_rm, build_multilabel_rm, build_qwen2_prm, build_tokenizer

        args.prm = args.prm or str(build_qwen2_prm(tiny / "tiny-prm"))
        args.rm = args.rm or str(build_chat_rm(tiny / "tiny-rm"))
        args.multi = args.multi or str(build_multilabel_rm(tiny / "tiny-multi"))
        policy_tokenizer = build_tokenizer(vocab_size=400, add_bos=False)  # a policy with another vocabulary
    else:
        from transformers import AutoTokenizer

        policy_tokenizer = AutoTokenizer.from_pretrained(args.rm)
    out = {}

    # 1. Process rewards: one P(correct) per step, and one float for a trainer.
    prm = RewardModelClient(args.prm, trust_remote_code=True)
    solution = "2 + 2 = 4.\n\nSo the answer is 4."
    steps = prm.score_steps({"prompt": "What is 2+2?", "output": solution, "step_separator": "\n\n"}, aggregate="min")
    out["steps"] = {"rewards": steps.rewards, "aggregate": steps.aggregate, "spans": steps.spans, "cut": steps.cut,
                    # every policy token gets the reward of the step it falls in
                    "per_policy_token": spread(steps.rewards, steps.spans, policy_tokenizer, solution)}

    # 2. Dense rewards: the head's value at every output token, with its characters.
    rm = RewardModelClient(args.rm)
    answer = "Beijing is the capital."
    dense = rm.score_tokens({"prompt": "What is the capital of China?", "output": answer})
    out["tokens"] = {"values": dense.values, "spans": dense.spans,
                     "pieces": [answer[a:b] for a, b in dense.spans]}

    # 3. Pairwise and listwise preference (Bradley-Terry on the rewards).
    c = rm.compare("What is the capital of China?", "Beijing.", "Shanghai.")
    ranking = rm.rank("What is the capital of China?", ["Beijing.", "Shanghai.", "Nanjing."])
    out["compare"] = {"p_a": c.p_a, "p_b": c.p_b, "reward_a": c.reward_a, "reward_b": c.reward_b}
    out["rank"] = {"order": ranking.order, "p_best": ranking.p_best, "rewards": ranking.rewards}

    # 4. A multi-objective head: every label, and one float by the weights you choose.
    multi = RewardModelClient(args.multi)
    samples = [{"prompt": "Hi", "output": "Hello! How can I help?"}, {"prompt": "Hi", "output": "What."}]
    out["vector"] = {"labels": multi.labels, "vectors": multi.score_vector(samples),
                     "weighted": multi(samples, weights=[0.5, 0.3, 0.2])}
    print(json.dumps(out, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
