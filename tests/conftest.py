"""Shared fixtures."""

import pytest
import torch

from gpt1 import GPT1Config

from .helpers import tiny_config


@pytest.fixture
def config() -> GPT1Config:
    torch.manual_seed(0)
    return tiny_config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0)
