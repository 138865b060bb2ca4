"""Small tokenizers built offline and deterministically: a byte-level BPE (GPT-2/Qwen/Llama 3 style)
and an InternLM2-like SentencePiece-style BPE (POLAR's kind)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional, Sequence, Union

#: Special tokens, at fixed ids 0.. in this order.
SPECIAL_TOKENS: List[str] = [
    "<s>",
    "</s>",
    "<pad>",
    "<|reward|>",
    "[UNUSED_TOKEN_130]",
    "<|im_start|>",
    "<|im_end|>",
]
BOS, EOS, PAD = "<s>", "</s>", "<pad>"

#: A ChatML template that emits BOS itself (as Llama 3 / Skywork templates do).
CHATML_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

#: Qwen2's pre-tokenizer pattern (its tokenizer.json; transformers 5's Qwen2Tokenizer sets it whatever the file says).
QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)

_CORPUS = [
    "What is the capital of China? Beijing. Shanghai. The capital city of a country.",
    "Please reason step by step, and put your final answer within \\boxed{}.",
    "The quick brown fox jumps over the lazy dog. 1 2 3 4 5 6 7 8 9 10",
    "user assistant system: Hello, how are you? I am fine, thank you.",
    "北京是中国的首都。上海是一座城市。 Ünïcödé text, émojis 🙂 and more.",
    "def score(sample): return reward  # code and math: x^2 + y^2 = z^2",
]


def build_tokenizer(
    out_dir: Union[str, Path, None] = None,
    *,
    vocab_size: int = 640,
    add_bos: bool = True,
    chat_template: Optional[str] = CHATML_TEMPLATE,
    extra_special_tokens: Sequence[str] = (),
):
    """Build (and optionally save) a small byte-level BPE ``PreTrainedTokenizerFast``.

    ``add_bos`` makes plain encoding prepend ``<s>`` (as Llama/InternLM2 do);
    without it the tokenizer behaves like Qwen2 (no BOS at all, Qwen2's pre-tokenizer), so
    transformers 4 and 5 tokenize it alike whatever the model type.
    ``extra_special_tokens`` (e.g. ``"<extra_0>"``) are added as special tokens after
    the trained vocabulary, so no existing id moves and each stays one id in any text.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    if add_bos:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:  # Qwen2's own split (digits one by one), which transformers 5 forces on every qwen2 tokenizer
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS, trainer=trainer)
    if add_bos:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A",
            pair=f"{BOS} $A {BOS} $B",
            special_tokens=[(BOS, tok.token_to_id(BOS))],
        )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS if add_bos else None,
        eos_token=EOS,
        pad_token=PAD,
        additional_special_tokens=SPECIAL_TOKENS[3:] + [t for t in extra_special_tokens if t not in SPECIAL_TOKENS],
    )
    if chat_template:
        fast.chat_template = chat_template if add_bos else chat_template.replace("{{ bos_token }}", "")
    if out_dir is not None:
        save_tokenizer(fast, out_dir)
    return fast


#: The replacement of " " in a SentencePiece vocabulary.
SPIECE_UNDERLINE = "\u2581"


def build_internlm2_tokenizer(
    out_dir: Union[str, Path, None] = None,
    *,
    vocab_size: int = 4096,
    chat_template: Optional[str] = CHATML_TEMPLATE,
):
    """An InternLM2-like tokenizer (POLAR's kind), trained with ``tokenizers`` on :func:`~.text.corpus`.

    It has the form of InternLM2's ``tokenization_internlm2_fast.InternLM2Converter``: a BPE with
    byte fallback (``<unk>`` ``<s>`` ``</s>`` at 0-2, then ``<0x00>``-``<0xFF>``), the normaliser
    ``Prepend("▁") + Replace(" ", "▁")`` and no pre-tokenizer, the decoder ``Replace + ByteFallback +
    Fuse + Strip(1 left)``, BOS added. Its merges follow SentencePiece's rule: a piece may start with
    "▁" but never holds one inside, while "\n" is an ordinary character, so pieces such as
    ``▁quick\n`` cross line ends. The POLAR special tokens (``<|reward|>``, ``[UNUSED_TOKEN_130]``) and
    ``<|im_start|>``/``<|im_end|>`` come after the trained vocabulary.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from .text import corpus

    head = ["<unk>", BOS, EOS] + [f"<0x{b:02X}>" for b in range(256)]
    added = SPECIAL_TOKENS[3:]
    normalizer = normalizers.Sequence([
        normalizers.Prepend(SPIECE_UNDERLINE), normalizers.Replace(" ", SPIECE_UNDERLINE),
    ])
    learner = Tokenizer(models.BPE())
    learner.normalizer = normalizer
    # split before each "▁" only: SentencePiece's split_by_whitespace, which leaves "\n" inside pieces
    learner.pre_tokenizer = pre_tokenizers.Metaspace(SPIECE_UNDERLINE, prepend_scheme="never", split=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size - len(head) - len(added), show_progress=False)
    learner.train_from_iterator(corpus(), trainer=trainer)
    learned = json.loads(learner.to_str())["model"]
    vocab = {t: i for i, t in enumerate(head)}
    for token, _ in sorted(learned["vocab"].items(), key=lambda kv: kv[1]):
        vocab.setdefault(token, len(vocab))
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in learned["merges"]]

    tok = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tok.normalizer = normalizer
    tok.decoder = decoders.Sequence([
        decoders.Replace(SPIECE_UNDERLINE, " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0),
    ])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, vocab[BOS])]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=BOS, eos_token=EOS, unk_token="<unk>", pad_token=EOS,
        additional_special_tokens=added, clean_up_tokenization_spaces=False,
    )
    if chat_template:
        fast.chat_template = chat_template
    if out_dir is not None:
        save_tokenizer(fast, out_dir)
    return fast


def save_tokenizer(tokenizer: Any, out_dir: Union[str, Path]) -> None:
    """``save_pretrained``, in a form that transformers 4 reads as well as 5.

    Engines bring their own transformers (vLLM before 0.20 runs transformers 4, which
    fails on a tokenizer saved by 5: "Failed to load the tokenizer"). transformers 5
    writes ``tokenizer_class: TokenizersBackend`` and a list of ``extra_special_tokens``,
    which 4 does not know; both read ``PreTrainedTokenizerFast``,
    ``additional_special_tokens`` and a ``chat_template`` in the config.
    """
    out = Path(out_dir)
    tokenizer.save_pretrained(str(out))
    path = out / "tokenizer_config.json"
    config = json.loads(path.read_text())
    extra = config.pop("extra_special_tokens", None)
    if isinstance(extra, list):
        config["additional_special_tokens"] = extra
    elif extra:
        config["extra_special_tokens"] = extra
    config.pop("backend", None)
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    template = out / "chat_template.jinja"
    if template.is_file():
        config["chat_template"] = template.read_text()
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False))


def compatible_config(config: dict) -> dict:
    """A model ``config.json`` dict readable by transformers 4 too (``rope_theta``, ``torch_dtype``)."""
    out = dict(config)
    rope = out.get("rope_parameters")
    if isinstance(rope, dict) and "rope_theta" in rope:
        out.setdefault("rope_theta", rope["rope_theta"])
    if "dtype" in out:
        out.setdefault("torch_dtype", out["dtype"])
    return out


def rewrite_config(out_dir: Union[str, Path]) -> None:
    """Rewrite ``out_dir/config.json`` with :func:`compatible_config`."""
    path = Path(out_dir) / "config.json"
    path.write_text(json.dumps(compatible_config(json.loads(path.read_text())), indent=2))
