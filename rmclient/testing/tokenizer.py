"""A tiny byte-level BPE tokenizer, built offline and deterministically."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Union

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
):
    """Build (and optionally save) a small byte-level BPE ``PreTrainedTokenizerFast``.

    ``add_bos`` makes plain encoding prepend ``<s>`` (as Llama/InternLM2 do);
    without it the tokenizer behaves like Qwen2 (no BOS at all).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
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
        additional_special_tokens=SPECIAL_TOKENS[3:],
    )
    if chat_template:
        fast.chat_template = chat_template if add_bos else chat_template.replace("{{ bos_token }}", "")
    if out_dir is not None:
        fast.save_pretrained(str(out_dir))
    return fast
