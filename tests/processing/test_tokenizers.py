"""Tokenizer files survive a change of ``transformers`` major version.

A policy trained beside ``transformers`` 5 must load beside 4.x (LeRobot 0.4 pins 4.x) and back: the
saved ``tokenizer_config.json`` is written in the form both read, and a folder written by 5 before
that (``fixtures/tokenizer_transformers5``, saved by flowvla's recipe with transformers 5.25) loads as
the same tokenizer. The LeRobot CI step runs the fixture test under 4.x too.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowvla.processing.tokenizers import (
    load_tokenizer,
    portable_tokenizer_config,
    save_tokenizer,
    train_bpe_tokenizer,
)

FIXTURE = Path(__file__).parent / "fixtures" / "tokenizer_transformers5"
#: What the fixture's tokenizer made of one instruction when it was saved (transformers 5.25).
FIXTURE_TEXT = "<image> pick up the alphabet soup and place it in the basket"
FIXTURE_IDS = [1, 4, 225, 280, 283, 267, 294, 286, 288, 293, 290, 289, 267, 292]
TEXTS = ["pick up the ketchup and place it in the basket", "open the top drawer", "turn on the stove"]


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tok = train_bpe_tokenizer(TEXTS, vocab_size=300)
    return tok, save_tokenizer(tok, tmp_path_factory.mktemp("tok") / "tokenizer")


def test_a_saved_config_has_no_key_only_one_major_version_reads(saved):
    _, folder = saved
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert config.get("tokenizer_class") != "TokenizersBackend"
    assert not isinstance(config.get("extra_special_tokens"), list)
    assert "<image>" in config["additional_special_tokens"]
    assert portable_tokenizer_config(config) == config


@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=60))
def test_a_saved_tokenizer_loads_as_the_same_tokenizer(saved, text):
    tok, folder = saved
    back = load_tokenizer(folder)
    assert back(f"<image> {text}").input_ids == tok(f"<image> {text}").input_ids
    assert back.pad_token_id == tok.pad_token_id and back.padding_side == tok.padding_side


def test_a_folder_written_by_transformers_5_loads_and_stays_untouched(tmp_path):
    folder = shutil.copytree(FIXTURE, tmp_path / "tokenizer")
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert json.loads(before["tokenizer_config.json"])["tokenizer_class"] == "TokenizersBackend"
    tok = load_tokenizer(folder)
    assert tok(FIXTURE_TEXT).input_ids == FIXTURE_IDS
    assert (tok.pad_token, tok.padding_side, tok.convert_tokens_to_ids("<image>")) == ("<pad>", "right", 4)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "tokenizer_class": st.sampled_from(
                ["TokenizersBackend", "PreTrainedTokenizerFast", "LlamaTokenizer"]
            ),
            "extra_special_tokens": st.one_of(
                st.lists(st.sampled_from(["<a>", "<b>"])), st.just({"x": "<x>"})
            ),
            "additional_special_tokens": st.lists(st.sampled_from(["<a>", "<c>"])),
            "backend": st.sampled_from(["tokenizers", "sentencepiece"]),
        },
    )
)
def test_portable_config_is_idempotent_and_keeps_every_special_token(config):
    once = portable_tokenizer_config(config)
    assert portable_tokenizer_config(once) == once
    before = set(config.get("additional_special_tokens", [])) | set(
        config["extra_special_tokens"] if isinstance(config.get("extra_special_tokens"), list) else []
    )
    assert set(once.get("additional_special_tokens", [])) == before
    assert (
        config.get("tokenizer_class") in (None, "TokenizersBackend")
        or once["tokenizer_class"] == config["tokenizer_class"]
    )
