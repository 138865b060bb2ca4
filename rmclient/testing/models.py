"""Tiny reward models built offline, deterministically, in well under a second.

They exist to test exact encodings and real forward passes; their rewards mean nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Union

from .tokenizer import build_internlm2_tokenizer, build_tokenizer, rewrite_config, save_tokenizer

PathLike = Union[str, Path]


def _llama_seq_cls(
    out_dir: Path, tokenizer, *, seed: int, hidden_size: int = 64, num_layers: int = 2, context: int = 4096,
    **config_extra
) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,  # head_dim 32: the smallest vLLM's CPU attention accepts
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=hidden_size // 32,
        num_key_value_heads=max(1, hidden_size // 64),
        max_position_embeddings=context,
        num_labels=1,
        bos_token_id=tokenizer.convert_tokens_to_ids("<s>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        architectures=["LlamaForSequenceClassification"],
        **config_extra,
    )
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config).to(torch.float32)
    with torch.no_grad():  # a visible spread of rewards, not ~0 for everything
        model.score.weight.normal_(0.0, 1.0)
    return _save(model, tokenizer, out_dir)


def _save(model, tokenizer, out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir))
    rewrite_config(out_dir)
    save_tokenizer(tokenizer, out_dir)
    return out_dir


def build_polar_model(
    out_dir: PathLike, *, seed: int = 0, hidden_size: int = 64, num_layers: int = 2, tokenizer: str = "byte_level",
    context: int = 4096,
) -> Path:
    """A POLAR-like model: Llama seq-cls head, BOS, ``<|reward|>`` and ``[UNUSED_TOKEN_130]``.

    Its config declares ``reward_token_id`` like POLAR-7B; put "polar" in the
    folder name (as the published checkpoints do) to let the client recognise it.
    The default size is tiny; benchmarks ask for a bigger one (``hidden_size`` a multiple of 64).
    ``tokenizer="internlm2"`` gives it POLAR's kind of tokenizer (:func:`build_internlm2_tokenizer`)
    instead of the small byte-level BPE; ``context`` is its ``max_position_embeddings`` (the longest
    input the client encodes for it).
    """
    builders = {"byte_level": build_tokenizer, "internlm2": build_internlm2_tokenizer}
    if tokenizer not in builders:
        raise ValueError(f"tokenizer must be one of {sorted(builders)}, got {tokenizer!r}")
    tok = builders[tokenizer](chat_template=None)
    return _llama_seq_cls(
        Path(out_dir), tok, seed=seed, hidden_size=hidden_size, num_layers=num_layers, context=context,
        reward_token_id=tok.convert_tokens_to_ids("[UNUSED_TOKEN_130]"),
    )


def build_chat_rm(
    out_dir: PathLike, *, seed: int = 1, reward_token: bool = True, add_bos: bool = True
) -> Path:
    """A chat-template outcome RM (Llama seq-cls) whose template emits BOS itself.

    ``reward_token`` declares ``reward_token_id`` in the config (InternLM2-Reward style);
    ``add_bos=False`` gives a Qwen-like tokenizer with no BOS.
    """
    tok = build_tokenizer(add_bos=add_bos)
    extra = {"reward_token_id": tok.convert_tokens_to_ids("[UNUSED_TOKEN_130]")} if reward_token else {}
    return _llama_seq_cls(Path(out_dir), tok, seed=seed, **extra)


def build_qwen2_seq_cls(out_dir: PathLike, *, seed: int = 4) -> Path:
    """A tiny ``Qwen2ForSequenceClassification`` outcome RM (no BOS, chat template, biased q/k/v).

    The Skywork-Reward-V2-Qwen / Qwen-RM family's architecture: vLLM and sglang treat it
    apart from Llama seq-cls in some versions.
    """
    import torch
    from transformers import Qwen2Config, Qwen2ForSequenceClassification

    tok = build_tokenizer(add_bos=False)
    config = Qwen2Config(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=4096,
        rope_theta=10000.0,
        rms_norm_eps=1e-6,
        use_sliding_window=False,
        tie_word_embeddings=False,
        num_labels=1,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        architectures=["Qwen2ForSequenceClassification"],
    )
    torch.manual_seed(seed)
    model = Qwen2ForSequenceClassification(config).to(torch.float32)
    with torch.no_grad():  # non-zero biases and a visible spread, so a wrong mapping shows
        for name, p in model.named_parameters():
            if name.endswith(".bias"):
                p.normal_(0.0, 0.1)
        model.score.weight.normal_(0.0, 1.0)
    return _save(model, tok, Path(out_dir))


def read_config(model_dir: PathLike) -> dict:
    """The model's config.json as a dict."""
    return json.loads((Path(model_dir) / "config.json").read_text())
