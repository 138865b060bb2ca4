"""Builders of tiny, deterministic models and tokenizers for tests and demos (offline)."""

from .kinds import build_math_shepherd_prm, build_multilabel_rm, build_qwen2_prm
from .models import build_chat_rm, build_polar_model, build_qwen2_seq_cls
from .policy import build_judge_model, build_policy
from .tokenizer import CHATML_TEMPLATE, SPECIAL_TOKENS, build_internlm2_tokenizer, build_tokenizer

__all__ = [
    "build_judge_model",
    "build_policy",
    "build_chat_rm",
    "build_polar_model",
    "build_qwen2_seq_cls",
    "build_qwen2_prm",
    "build_multilabel_rm",
    "build_math_shepherd_prm",
    "build_tokenizer",
    "build_internlm2_tokenizer",
    "CHATML_TEMPLATE",
    "SPECIAL_TOKENS",
]
