"""Chat-template recipe: the tokenizer's template, BOS once, reward token once, system prompt, truncation."""

from __future__ import annotations

from rmclient import RewardModelClient

REWARD = "[UNUSED_TOKEN_130]"


def test_bos_once_and_reward_token_once(chat_path):
    client = RewardModelClient(chat_path)
    tok = client.tokenizer
    ids = client.encode_ids({"prompt": "hi", "output": "hello"})
    rendered = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], tokenize=False
    )
    assert rendered.startswith("<s>")  # the template emits BOS itself
    expected = tok.encode(rendered, add_special_tokens=False) + [tok.convert_tokens_to_ids(REWARD)]
    assert ids == expected
    assert ids.count(tok.bos_token_id) == 1 and ids[0] == tok.bos_token_id
    assert ids.count(tok.convert_tokens_to_ids(REWARD)) == 1


def test_text_form_reproduces_ids_on_a_server_that_adds_bos(chat_path):
    client = RewardModelClient(chat_path)
    sample = {"prompt": "hi", "output": "hello"}
    assert client.tokenizer.encode(client.encode(sample)) == client.encode_ids(sample)


def test_reward_token_not_doubled(chat_path):
    client = RewardModelClient(chat_path)
    tok = client.tokenizer
    # The template ends in "\n", so a conversation can't end in the token; force it via a no-newline template.
    tok2 = type(tok).from_pretrained(chat_path)
    tok2.chat_template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    c2 = RewardModelClient(chat_path, tokenizer=tok2)
    ids = c2.encode_ids({"prompt": "hi", "output": "done" + REWARD})
    assert ids.count(tok.convert_tokens_to_ids(REWARD)) == 1 and ids[-1] == tok.convert_tokens_to_ids(REWARD)


def test_messages_form_equals_prompt_output_form(chat_path):
    client = RewardModelClient(chat_path)
    a = client.encode_ids({"prompt": [{"role": "user", "content": "q"}], "output": "a"})
    b = client.encode_ids({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
    assert a == b


def test_system_prompt(qwen_like_path):
    system = "Please reason step by step, and put your final answer within \\boxed{}."
    client = RewardModelClient(qwen_like_path, system_prompt=system)
    tok = client.tokenizer
    ids = client.encode_ids({"prompt": "1+1?", "output": "\\boxed{2}"})
    rendered = tok.apply_chat_template(
        [{"role": "system", "content": system}, {"role": "user", "content": "1+1?"},
         {"role": "assistant", "content": "\\boxed{2}"}], tokenize=False,
    )
    assert ids == tok.encode(rendered, add_special_tokens=False)  # no BOS, no reward token for this model
    assert tok.bos_token_id is None
    # A conversation that already has a system turn keeps it.
    own = client.encode_ids({"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "q"},
                                          {"role": "assistant", "content": "a"}]})
    assert tok.decode(own).startswith("<|im_start|>system\nS<|im_end|>")


def test_truncation_cuts_the_prompt_text_from_the_left(chat_path):
    client = RewardModelClient(chat_path, max_length=32)
    prompt = "".join(f"w{i} " for i in range(60))
    sample = {"prompt": prompt, "output": "the answer"}
    ids = client.encode_ids(sample)
    assert len(ids) <= 32
    text = client.tokenizer.decode(ids)
    head, tail = "<s><|im_start|>user\n", "<|im_end|>\n<|im_start|>assistant\nthe answer<|im_end|>\n" + REWARD
    assert text.startswith(head) and text.endswith(tail)  # template, output and reward token intact
    kept = text[len(head) : -len(tail)]
    assert kept and prompt.endswith(kept) and len(kept) < len(prompt)  # the prompt's tail
    # ... and it is exactly the encoding of that shorter conversation
    assert ids == RewardModelClient(chat_path).encode_ids({"prompt": kept, "output": "the answer"})


def test_truncation_keeps_the_system_prompt(qwen_like_path):
    client = RewardModelClient(qwen_like_path, max_length=40, system_prompt="SYS")
    ids = client.encode_ids({"prompt": "long " * 100, "output": "ok"})
    assert len(ids) <= 40
    assert client.tokenizer.decode(ids).startswith("<|im_start|>system\nSYS<|im_end|>\n<|im_start|>user\n")


def test_output_longer_than_max_length_keeps_bos_and_the_end(chat_path):
    client = RewardModelClient(chat_path, max_length=16)
    full = RewardModelClient(chat_path).encode_ids({"prompt": "q", "output": "long answer " * 20})
    ids = client.encode_ids({"prompt": "q", "output": "long answer " * 20})
    assert len(ids) == 16 and ids[0] == client.tokenizer.bos_token_id and ids[1:] == full[-15:]


def test_template_errors_name_the_sample(chat_path):
    from rmclient import InvalidSampleError

    tok = RewardModelClient(chat_path).tokenizer
    tok.chat_template = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('must start with user') }}{% endif %}x"
    client = RewardModelClient(chat_path, tokenizer=tok)
    bad = {"messages": [{"role": "assistant", "content": "a"}]}
    try:
        client.encode([{"prompt": "q", "output": "a"}, bad])
    except InvalidSampleError as err:
        assert (err.index, err.field) == (1, "messages") and "must start with user" in str(err)
    else:
        raise AssertionError("no error")
