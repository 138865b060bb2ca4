"""ms-swift: a GRPO plugin file with two rewards, POLAR plus a length penalty.

    export RMCLIENT_MODEL=internlm/POLAR-7B RMCLIENT_SERVER_TYPE=sglang RMCLIENT_SERVER_ADDRESS=127.0.0.1:30000
    swift rlhf --rlhf_type grpo ... --external_plugins examples/swift_plugin.py \\
        --reward_funcs polar_and_length

The prompt scored is the conversation before the completion; POLAR's reference is the
dataset column ``answer``. The composition z-scores POLAR within each prompt group (GRPO
compares completions of one prompt), adds a small length penalty and clips the sum. For
one reward model alone, ``rmclient.integrations.SWIFT_PLUGIN`` needs no file of your own.
The tests load this file with ms-swift's own plugin loader (tests/test_examples.py).
"""

from __future__ import annotations

import os
from typing import Any, Dict, List

try:
    from swift.rewards import orms  # ms-swift 4.x
except ImportError:  # ms-swift 3.x
    from swift.plugin import orms

from rmclient import RewardModelClient
from rmclient import Member, RewardComposition
from rmclient.integrations.swift_plugin import make_orm


def length_penalty(samples: List[Dict[str, Any]]) -> List[float]:
    """-1 per 1000 characters of output."""
    return [-len(s["output"]) / 1000.0 for s in samples]


def reward() -> RewardComposition:
    polar = RewardModelClient(
        os.environ.get("RMCLIENT_MODEL", "internlm/POLAR-7B"),
        server_type=os.environ.get("RMCLIENT_SERVER_TYPE", "sglang"),
        server_address=os.environ.get("RMCLIENT_SERVER_ADDRESS", "127.0.0.1:30000").split(","),
        trust_remote_code=True,
    )
    return RewardComposition(
        [Member(polar, 1.0, normalize="group"), Member(length_penalty, 1.0, normalize=None)],
        clip=(-5.0, 5.0),
    )


orms["polar_and_length"] = make_orm(reward, reference_column="answer", strip_think=True)
