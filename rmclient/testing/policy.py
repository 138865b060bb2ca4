"""A tiny causal-LM policy (Llama, a few hundred KB) for trainer tests, built offline in milliseconds.

It shares the test tokenizer (with its ChatML template), so a trainer can generate with it
on CPU and hand the completions to a tiny reward model. Its generations mean nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Union

from .tokenizer import build_tokenizer, save_tokenizer

PathLike = Union[str, Path]


def build_policy(
    out_dir: PathLike, *, seed: int = 0, add_bos: bool = True, hidden_size: int = 32, max_positions: int = 512
) -> Path:
    """Save a tiny ``LlamaForCausalLM`` and its tokenizer to ``out_dir`` and return the folder.

    ``hidden_size=64`` gives a model vLLM's CPU attention serves (head size 32; 16 is refused:
    "Unsupported CPU attention configuration"), e.g. as a judge (:func:`build_judge_model`).
    """
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    tok = build_tokenizer(add_bos=add_bos)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=max_positions,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
        architectures=["LlamaForCausalLM"],
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    save_tokenizer(tok, out)  # transformers 4 (the engines' own) reads it too
    return out


def build_judge_model(out_dir: PathLike, *, seed: int = 0) -> Path:
    """A tiny chat model vLLM on CPU can serve, with room for a judge's prompt: an LLM judge for
    tests (its verdicts mean nothing)."""
    return build_policy(out_dir, seed=seed, hidden_size=64, max_positions=4096)
