"""Tiny MedPLIB objects shared by the modeling tests (CPU, random weights, seconds to build)."""

from __future__ import annotations

import pytest
import torch

from medplib.checkpoint import build_model
from medplib.conversation import SYSTEM_PROMPT
from medplib.tokenization import train_tokenizer

CORPUS = [
    SYSTEM_PROMPT,
    "USER: ASSISTANT: Please segment the liver in this image. The liver is on the left.",
    "What is seen at the area? A small lesion in the kidney. Yes. No.",
] * 8


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return train_tokenizer(CORPUS, vocab_size=400)


@pytest.fixture()
def tiny_model(tiny_tokenizer):
    torch.manual_seed(0)
    return build_model("tiny", tiny_tokenizer, seed=0).eval()


@pytest.fixture()
def tiny_dense_model(tiny_tokenizer):
    return build_model("tiny-dense", tiny_tokenizer, seed=1).eval()
