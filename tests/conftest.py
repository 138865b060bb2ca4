"""Shared fixtures: tiny models built offline, once per session."""

from __future__ import annotations

import logging

import pytest

from rmclient.testing import build_chat_rm, build_polar_model

logging.getLogger("transformers").setLevel(logging.ERROR)


@pytest.fixture(scope="session")
def polar_path(tmp_path_factory) -> str:
    return str(build_polar_model(tmp_path_factory.mktemp("models") / "tiny-polar"))


@pytest.fixture(scope="session")
def chat_path(tmp_path_factory) -> str:
    return str(build_chat_rm(tmp_path_factory.mktemp("models") / "tiny-chat-rm"))


@pytest.fixture(scope="session")
def qwen_like_path(tmp_path_factory) -> str:
    """No BOS, no reward token: a Qwen-like outcome RM."""
    return str(build_chat_rm(tmp_path_factory.mktemp("models") / "tiny-qwen-rm", reward_token=False, add_bos=False))


@pytest.fixture(scope="session")
def polar_tokenizer(polar_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(polar_path)
