"""Shared fixtures."""

import pytest
import torch

from gpt1 import GPT1Config

from .helpers import tiny_config

# Lines a test module leaves for the end of pytest's report (test_hostile_files: what each command made of each
# mutated file).
SUMMARY = pytest.StashKey[list[str]]()


def pytest_terminal_summary(terminalreporter, config):
    for line in config.stash.get(SUMMARY, []):
        terminalreporter.write_line(line)


@pytest.fixture
def config() -> GPT1Config:
    torch.manual_seed(0)
    return tiny_config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, pad_token_id=0)
