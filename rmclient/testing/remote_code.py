"""Tiny ``InternLM2ForRewardModel`` and ``Qwen2ForRewardModel`` checkpoints, and a reference forward.

These are the two "token reward" architectures that vLLM (and lmdeploy) serve
natively; transformers has no class for them (the published checkpoints ship
remote code). The weights are written under the names vLLM's model code loads
(``vllm/model_executor/models/internlm2.py`` and ``qwen2_rm.py``):

InternLM2ForRewardModel
    ``model.tok_embeddings``, ``model.layers.N.attention.wqkv`` (q, k, v packed per
    key/value group: ``[kv_heads, q_per_kv + 2, head_dim, hidden]``),
    ``.attention.wo``, ``.feed_forward.w1/w3/w2`` (gate/up/down),
    ``.attention_norm``, ``.ffn_norm``, ``model.norm``, ``v_head`` (hidden -> 1,
    no bias). The configuration is remote code (``configuration_internlm2.py``,
    written next to the weights): serve it with ``--trust-remote-code``.
Qwen2ForRewardModel
    a standard ``Qwen2Model`` under ``model.`` and ``score.0`` (hidden -> hidden,
    bias) -> ReLU -> ``score.2`` (hidden -> 1, bias). Its config is the built-in
    ``qwen2`` one. ``Qwen2ForProcessRewardModel`` (``rmclient.testing.kinds``) is the
    same with 2 labels; the reference head returns all of them.

The reward of a sequence is the head's output at its last token. The
reference forward maps the saved weights back onto transformers'
``LlamaModel`` / ``Qwen2Model`` and applies the head: it checks the packing
against vLLM's own split rather than re-using it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Sequence, Union

from .tokenizer import build_tokenizer, save_tokenizer

PathLike = Union[str, Path]

__all__ = [
    "build_internlm2_reward_model",
    "build_qwen2_reward_model",
    "reference_token_rewards",
    "reference_rewards",
    "CONFIGURATION_INTERNLM2",
]

#: The remote configuration of InternLM2 (the fields vLLM reads), written as configuration_internlm2.py.
CONFIGURATION_INTERNLM2 = '''"""InternLM2 configuration (a minimal stand-in for the published remote code)."""

try:
    from transformers import PreTrainedConfig as _Base
except ImportError:  # transformers < 5
    from transformers import PretrainedConfig as _Base


class InternLM2Config(_Base):
    model_type = "internlm2"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(
        self,
        vocab_size=103168,
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=None,
        hidden_act="silu",
        max_position_embeddings=2048,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        use_cache=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        reward_token_id=92527,
        tie_word_embeddings=False,
        bias=False,
        rope_theta=10000,
        rope_scaling=None,
        attn_implementation="eager",
        **kwargs,
    ):
        self.vocab_size = vocab_size
        self.max_position_embeddings = max_position_embeddings
        self.hidden_size = hidden_size
        self.intermediate_size = intermediate_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.bias = bias
        if num_key_value_heads is None:
            num_key_value_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.hidden_act = hidden_act
        self.initializer_range = initializer_range
        self.rms_norm_eps = rms_norm_eps
        self.use_cache = use_cache
        self.rope_theta = rope_theta
        self.rope_scaling = rope_scaling
        self.reward_token_id = reward_token_id
        self.attn_implementation = attn_implementation
        super().__init__(
            pad_token_id=pad_token_id,
            bos_token_id=bos_token_id,
            eos_token_id=eos_token_id,
            tie_word_embeddings=tie_word_embeddings,
            **kwargs,
        )
'''

_DIMS = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1)
# head_dim = 64 / 2 = 32: the smallest vLLM's CPU attention accepts.
_ROPE_THETA = 10000.0
_RMS_EPS = 1e-6


def _save(out_dir: Path, tensors: Dict[str, "object"], config: dict, tokenizer) -> Path:
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(out_dir / "model.safetensors"), metadata={"format": "pt"})
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    save_tokenizer(tokenizer, out_dir)
    return out_dir


def _llama_like(vocab_size: int, seed: int):
    """A seeded transformers LlamaModel whose weights become the InternLM2 backbone."""
    import torch
    from transformers import LlamaConfig, LlamaModel

    cfg = LlamaConfig(
        vocab_size=vocab_size,
        max_position_embeddings=4096,
        rms_norm_eps=_RMS_EPS,
        rope_theta=_ROPE_THETA,
        tie_word_embeddings=False,
        **_DIMS,
    )
    torch.manual_seed(seed)
    model = LlamaModel(cfg).to(torch.float32)
    with torch.no_grad():  # non-trivial norms, so a wrong mapping shows
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
    return cfg, model


def build_internlm2_reward_model(out_dir: PathLike, *, seed: int = 2) -> Path:
    """A tiny InternLM2ForRewardModel (remote configuration, BOS-adding tokenizer)."""
    import torch

    out = Path(out_dir)
    tok = build_tokenizer(add_bos=True)
    cfg, llama = _llama_like(len(tok), seed)
    h, nh, nkv = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
    hd, groups = h // nh, nh // nkv
    sd = llama.state_dict()
    t: Dict[str, torch.Tensor] = {"model.tok_embeddings.weight": sd["embed_tokens.weight"], "model.norm.weight": sd["norm.weight"]}
    for i in range(cfg.num_hidden_layers):
        p, q = f"layers.{i}.", f"model.layers.{i}."
        wq = sd[p + "self_attn.q_proj.weight"].view(nkv, groups, hd, h)
        wk = sd[p + "self_attn.k_proj.weight"].view(nkv, 1, hd, h)
        wv = sd[p + "self_attn.v_proj.weight"].view(nkv, 1, hd, h)
        t[q + "attention.wqkv.weight"] = torch.cat([wq, wk, wv], dim=1).reshape(nkv * (groups + 2) * hd, h)
        t[q + "attention.wo.weight"] = sd[p + "self_attn.o_proj.weight"]
        t[q + "feed_forward.w1.weight"] = sd[p + "mlp.gate_proj.weight"]
        t[q + "feed_forward.w3.weight"] = sd[p + "mlp.up_proj.weight"]
        t[q + "feed_forward.w2.weight"] = sd[p + "mlp.down_proj.weight"]
        t[q + "attention_norm.weight"] = sd[p + "input_layernorm.weight"]
        t[q + "ffn_norm.weight"] = sd[p + "post_attention_layernorm.weight"]
    gen = torch.Generator().manual_seed(seed + 1000)
    t["v_head.weight"] = torch.randn(1, h, generator=gen)
    config = {
        "architectures": ["InternLM2ForRewardModel"],
        "auto_map": {"AutoConfig": "configuration_internlm2.InternLM2Config"},
        "model_type": "internlm2",
        "vocab_size": len(tok),
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "rms_norm_eps": _RMS_EPS,
        "rope_theta": _ROPE_THETA,
        "rope_scaling": None,
        "bias": False,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "reward_token_id": tok.convert_tokens_to_ids("[UNUSED_TOKEN_130]"),
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        **_DIMS,
    }
    _save(out, t, config, tok)
    (out / "configuration_internlm2.py").write_text(CONFIGURATION_INTERNLM2)
    return out


def build_qwen2_reward_model(out_dir: PathLike, *, seed: int = 3) -> Path:
    """A tiny Qwen2ForRewardModel (built-in qwen2 config, tokenizer without BOS)."""
    return _qwen2_checkpoint(Path(out_dir), build_tokenizer(add_bos=False), seed=seed)


def _qwen2_checkpoint(
    out: Path, tok, *, seed: int, arch: str = "Qwen2ForRewardModel", num_labels: int = 1, **config_extra
) -> Path:
    """A seeded ``Qwen2Model`` under ``model.`` and the ``score.0``/ReLU/``score.2`` head (``num_labels`` out)."""
    import torch
    from transformers import Qwen2Config, Qwen2Model

    cfg = Qwen2Config(
        vocab_size=len(tok),
        max_position_embeddings=4096,
        rms_norm_eps=_RMS_EPS,
        rope_theta=_ROPE_THETA,
        tie_word_embeddings=False,
        use_sliding_window=False,
        **_DIMS,
    )
    torch.manual_seed(seed)
    model = Qwen2Model(cfg).to(torch.float32)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.normal_(0.0, 0.1)
    t = {"model." + k: v for k, v in model.state_dict().items()}
    gen = torch.Generator().manual_seed(seed + 1000)
    h = cfg.hidden_size
    t["score.0.weight"] = torch.randn(h, h, generator=gen) / h**0.5
    t["score.0.bias"] = torch.randn(h, generator=gen) * 0.1
    t["score.2.weight"] = torch.randn(num_labels, h, generator=gen)
    t["score.2.bias"] = torch.randn(num_labels, generator=gen) * 0.1
    config = {
        "architectures": [arch],
        "model_type": "qwen2",
        "vocab_size": len(tok),
        "hidden_act": "silu",
        "max_position_embeddings": 4096,
        "max_window_layers": _DIMS["num_hidden_layers"],
        "rms_norm_eps": _RMS_EPS,
        "rope_theta": _ROPE_THETA,
        "rope_scaling": None,
        "sliding_window": None,
        "use_sliding_window": False,
        "attention_dropout": 0.0,
        "bos_token_id": None,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "num_labels": num_labels,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        **_DIMS,
        **config_extra,
    }
    return _save(out, t, config, tok)


def _load(model_dir: Path):
    from safetensors.torch import load_file

    return json.loads((model_dir / "config.json").read_text()), load_file(str(model_dir / "model.safetensors"))


def _backbone_and_head(model_dir: Path):
    """(transformers backbone, head function hidden -> [tokens, num_labels]) built from the saved weights."""
    import torch

    config, t = _load(model_dir)
    arch = config["architectures"][0]
    dims = {k: config[k] for k in _DIMS}
    common = dict(
        vocab_size=config["vocab_size"],
        max_position_embeddings=config["max_position_embeddings"],
        rms_norm_eps=config["rms_norm_eps"],
        rope_theta=config["rope_theta"],
        tie_word_embeddings=False,
        **dims,
    )
    if arch == "InternLM2ForRewardModel":
        from transformers import LlamaConfig, LlamaModel

        cfg = LlamaConfig(**common)
        h, nh, nkv = cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads
        hd, groups = h // nh, nh // nkv
        sd = {"embed_tokens.weight": t["model.tok_embeddings.weight"], "norm.weight": t["model.norm.weight"]}
        for i in range(cfg.num_hidden_layers):
            p, q = f"layers.{i}.", f"model.layers.{i}."
            wqkv = t[q + "attention.wqkv.weight"].view(nkv, groups + 2, hd, h)
            sd[p + "self_attn.q_proj.weight"] = wqkv[:, :groups].reshape(nkv * groups * hd, h)
            sd[p + "self_attn.k_proj.weight"] = wqkv[:, groups].reshape(nkv * hd, h)
            sd[p + "self_attn.v_proj.weight"] = wqkv[:, groups + 1].reshape(nkv * hd, h)
            sd[p + "self_attn.o_proj.weight"] = t[q + "attention.wo.weight"]
            sd[p + "mlp.gate_proj.weight"] = t[q + "feed_forward.w1.weight"]
            sd[p + "mlp.up_proj.weight"] = t[q + "feed_forward.w3.weight"]
            sd[p + "mlp.down_proj.weight"] = t[q + "feed_forward.w2.weight"]
            sd[p + "input_layernorm.weight"] = t[q + "attention_norm.weight"]
            sd[p + "post_attention_layernorm.weight"] = t[q + "ffn_norm.weight"]
        model = LlamaModel(cfg)
        v_head = t["v_head.weight"]

        def head(hidden):
            return hidden @ v_head.T

    elif arch in ("Qwen2ForRewardModel", "Qwen2ForProcessRewardModel"):  # the PRM: all num_labels columns
        from transformers import Qwen2Config, Qwen2Model

        cfg = Qwen2Config(use_sliding_window=False, **common)
        sd = {k[len("model."):]: v for k, v in t.items() if k.startswith("model.")}
        model = Qwen2Model(cfg)
        w0, b0, w2, b2 = t["score.0.weight"], t["score.0.bias"], t["score.2.weight"], t["score.2.bias"]

        def head(hidden):
            return torch.relu(hidden @ w0.T + b0) @ w2.T + b2

    else:
        raise ValueError(f"{model_dir}: not a model built by rmclient.testing.remote_code ({arch})")
    missing, unexpected = model.load_state_dict(sd, strict=False)
    missing = [m for m in missing if "rotary_emb" not in m]
    if missing or unexpected:
        raise ValueError(f"weight mapping incomplete: missing {missing}, unexpected {unexpected}")
    return model.to(torch.float32).eval(), head


def reference_token_rewards(model_dir: PathLike, input_ids: Sequence[Sequence[int]]) -> List[List[float]]:
    """The head's output at every token of each sequence (float32, one sequence at a time)."""
    import torch

    model, head = _backbone_and_head(Path(model_dir))
    out: List[List[float]] = []
    with torch.no_grad():
        for ids in input_ids:
            hidden = model(input_ids=torch.tensor([list(ids)], dtype=torch.long)).last_hidden_state[0]
            out.append(head(hidden.float())[:, 0].tolist())
    return out


def reference_rewards(model_dir: PathLike, input_ids: Sequence[Sequence[int]]) -> List[float]:
    """The reward of each sequence: the head's output at its last token."""
    return [r[-1] for r in reference_token_rewards(model_dir, input_ids)]
