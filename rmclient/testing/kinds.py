"""Tiny checkpoints of the other reward-model kinds, and their reference forwards.

Qwen2ForProcessRewardModel (like Qwen/Qwen2.5-Math-PRM-7B)
    a ``Qwen2Model`` under ``model.`` and ``score.0`` (hidden -> hidden, bias) -> ReLU ->
    ``score.2`` (hidden -> 2, bias), as vLLM's ``qwen2_rm.py`` loads it; steps end with the
    special token ``<extra_0>``, a step's reward is softmax(logits)[1] there. Remote code
    (``modeling_qwen2_prm.py``) lets transformers load it with ``trust_remote_code``.
Multi-label LlamaForSequenceClassification
    ``num_labels`` > 1 with named labels (``id2label``), one raw logit per label.
Math-Shepherd PRM (like peiyi9979/math-shepherd-mistral-7b-prm)
    a plain ``LlamaForCausalLM``; steps end with the tag ``ки``, a step's reward is
    softmax over the LM logits of ``["+", "-"]`` at the tag, index 0 (P(good)).
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Sequence, Union

from .models import _save
from .remote_code import _DIMS, _backbone_and_head, _qwen2_checkpoint
from .tokenizer import build_tokenizer

PathLike = Union[str, Path]

__all__ = [
    "build_qwen2_prm",
    "build_multilabel_rm",
    "build_math_shepherd_prm",
    "reference_token_logits",
    "reference_step_rewards",
    "reference_shepherd_rewards",
    "MODELING_QWEN2_PRM",
    "PRM_STEP_TOKEN",
    "SHEPHERD_STEP_TAG",
]

#: The step separator of Qwen2.5-Math-PRM (a special token; id 151651 in the real vocabulary).
PRM_STEP_TOKEN = "<extra_0>"
#: Math-Shepherd's step tag and its good / bad tokens.
SHEPHERD_STEP_TAG, SHEPHERD_GOOD, SHEPHERD_BAD = "ки", "+", "-"

#: Remote code for the PRM, written as modeling_qwen2_prm.py (transformers 4 and 5 both load it).
MODELING_QWEN2_PRM = '''"""Qwen2ForProcessRewardModel (a minimal stand-in for the published modeling_qwen2_rm.py)."""

from torch import nn

try:
    from transformers.models.qwen2.modeling_qwen2 import Qwen2Model, Qwen2PreTrainedModel
except ImportError:  # a layout without the module path
    from transformers import Qwen2Model, Qwen2PreTrainedModel
from transformers.modeling_outputs import TokenClassifierOutput


class Qwen2ForProcessRewardModel(Qwen2PreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.num_labels = getattr(config, "num_labels", 2)
        self.model = Qwen2Model(config)
        self.score = nn.Sequential(
            nn.Linear(config.hidden_size, config.hidden_size),
            nn.ReLU(),
            nn.Linear(config.hidden_size, self.num_labels),
        )
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, **kwargs):
        outputs = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            use_cache=False,
        )
        logits = self.score(outputs[0])  # [batch, seq, num_labels]
        return TokenClassifierOutput(logits=logits)
'''


def build_qwen2_prm(out_dir: PathLike, *, seed: int = 5) -> Path:
    """A tiny Qwen2ForProcessRewardModel: no BOS, ``<extra_0>`` a special token, 2 labels.

    vLLM serves it natively (``--trust-remote-code`` for the ``auto_map``); it pools at
    ``step_tag_id`` 151651 (Qwen's ``<extra_0>``) unless told otherwise: pass
    ``--pooler-config '{"step_tag_id": ID}'`` with this tokenizer's id (``config.json``'s
    ``step_tag_id``).
    """
    out = Path(out_dir)
    tok = build_tokenizer(add_bos=False, extra_special_tokens=(PRM_STEP_TOKEN,))
    _qwen2_checkpoint(
        out, tok, seed=seed, arch="Qwen2ForProcessRewardModel", num_labels=2,
        auto_map={"AutoModel": "modeling_qwen2_prm.Qwen2ForProcessRewardModel"},
        step_tag_id=tok.convert_tokens_to_ids(PRM_STEP_TOKEN),
    )
    (out / "modeling_qwen2_prm.py").write_text(MODELING_QWEN2_PRM)
    return out


def build_multilabel_rm(
    out_dir: PathLike,
    *,
    num_labels: int = 3,
    labels: Sequence[str] = ("helpfulness", "correctness", "coherence"),
    seed: int = 6,
) -> Path:
    """A tiny multi-label ``LlamaForSequenceClassification`` (one raw logit per named label)."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    names = list(labels)
    if len(names) != num_labels:
        raise ValueError(f"{num_labels} labels, but {len(names)} names: {names}")
    tok = build_tokenizer(add_bos=True)
    config = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=4096,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        architectures=["LlamaForSequenceClassification"],
        **_DIMS,
    )
    torch.manual_seed(seed)
    model = LlamaForSequenceClassification(config).to(torch.float32)
    with torch.no_grad():  # a visible spread of rewards
        model.score.weight.normal_(0.0, 1.0)
    return _save(model, tok, Path(out_dir))


def build_math_shepherd_prm(out_dir: PathLike, *, seed: int = 7) -> Path:
    """A tiny Math-Shepherd-style PRM: ``LlamaForCausalLM``, BOS, step tag ``ки`` (one added token).

    ``config.json`` carries ``step_tag_id`` and ``returned_token_ids`` ([good "+", bad "-"]),
    the names of vLLM's pooler config (vLLM does not read them from there).
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = build_tokenizer(add_bos=True)
    tok.add_tokens([SHEPHERD_STEP_TAG])  # not special: a plain vocabulary word, as in Mistral's
    ids = {t: tok.encode(t, add_special_tokens=False) for t in (SHEPHERD_STEP_TAG, SHEPHERD_GOOD, SHEPHERD_BAD)}
    if any(len(v) != 1 for v in ids.values()):
        raise ValueError(f"step tag and good/bad tokens must be one id each: {ids}")
    config = LlamaConfig(
        vocab_size=len(tok),
        max_position_embeddings=4096,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
        architectures=["LlamaForCausalLM"],
        **_DIMS,
    )
    config.step_tag_id = ids[SHEPHERD_STEP_TAG][0]
    config.returned_token_ids = [ids[SHEPHERD_GOOD][0], ids[SHEPHERD_BAD][0]]
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    with torch.no_grad():  # visible spread of P(good)
        model.lm_head.weight.normal_(0.0, 0.3)
    return _save(model, tok, Path(out_dir))


def reference_token_logits(model_dir: PathLike, input_ids: Sequence[Sequence[int]]) -> List[List[List[float]]]:
    """Every token's raw head output (all labels) of the Qwen2 PRM, on transformers' ``Qwen2Model``."""
    import torch

    model, head = _backbone_and_head(Path(model_dir))
    out: List[List[List[float]]] = []
    with torch.no_grad():
        for ids in input_ids:
            hidden = model(input_ids=torch.tensor([list(ids)], dtype=torch.long)).last_hidden_state[0]
            out.append(head(hidden.float()).tolist())
    return out


def reference_step_rewards(
    model_dir: PathLike, input_ids: Sequence[Sequence[int]], separator_id: int
) -> List[List[float]]:
    """P(positive) (softmax over the 2 labels, column 1) at each ``separator_id`` of each sequence."""
    import torch

    out: List[List[float]] = []
    for ids, logits in zip(input_ids, reference_token_logits(model_dir, input_ids)):
        probs = torch.softmax(torch.tensor(logits), dim=-1)[:, 1].tolist()
        out.append([p for i, p in zip(ids, probs) if i == separator_id])
    return out


def reference_shepherd_rewards(model_dir: PathLike, input_ids: Sequence[Sequence[int]]) -> List[List[float]]:
    """P(good) (softmax over the LM logits of [good, bad], index 0) at each step tag of each sequence."""
    import torch
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    tag, pair = model.config.step_tag_id, list(model.config.returned_token_ids)
    out: List[List[float]] = []
    with torch.no_grad():
        for ids in input_ids:
            logits = model(input_ids=torch.tensor([list(ids)], dtype=torch.long)).logits[0]
            probs = torch.softmax(logits[:, pair].float(), dim=-1)[:, 0].tolist()
            out.append([p for i, p in zip(ids, probs) if i == tag])
    return out
