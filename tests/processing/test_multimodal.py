"""Multimodal prompts with real tokenizers trained offline in the test (byte-level BPE, WordPiece)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

pytest.importorskip("transformers")

from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from flowvla.processing import (
    MultimodalProcessor,
    detect_joiner,
    normalize_instruction,
    scatter_image_features,
)
from flowvla.typing import TypeCheckError
from tests.helpers_tokenizers import tiny_bpe, tiny_wordpiece

IMG = "<image>"
CORPUS = [
    "pick up the black bowl between the plate and the ramekin and place it on the plate",
    "put the red mug on the left plate",
    "open the top drawer and put the bowl inside",
    "turn on the stove and put the moka pot on it",
    "put both the alphabet soup and the tomato sauce in the basket",
    "stack the left bowl on the right bowl and place them in the tray",
    f"{IMG} pick up the cube {IMG} and the ketchup {IMG}",
] * 20


@pytest.fixture(scope="module")
def bpe():
    """Byte-level BPE (GPT-2 style, no prefix space) with the image token as an added special token."""
    return tiny_bpe(CORPUS, ["[UNK]", "[PAD]", IMG], vocab_size=400)


@pytest.fixture(scope="module")
def wordpiece():
    """A trained WordPiece whose vocabulary holds ``<image>`` as a plain word (not an added token)."""
    return tiny_wordpiece(CORPUS, ["[UNK]", "[PAD]", IMG], vocab_size=300)


def text_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_joiner_is_detected_per_tokenizer(bpe, wordpiece):
    assert detect_joiner(bpe) == ""
    assert detect_joiner(wordpiece) == " "
    # Without the joiner the WordPiece merges: "<image><image>" is one unknown word.
    assert text_ids(wordpiece, IMG + IMG) == [wordpiece.unk_token_id]


def test_a_tokenizer_that_splits_the_placeholder_is_rejected():
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["[UNK]", "[PAD]"]))
    plain = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]")
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        MultimodalProcessor(plain, 4)
    # In the vocabulary as learned merges only: byte-level BPE splits it at the '<' boundary.
    vocab = {**tok.get_vocab(), IMG: len(tok.get_vocab())}
    merged = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="[UNK]"))
    merged.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    fast = PreTrainedTokenizerFast(tokenizer_object=merged, unk_token="[UNK]", pad_token="[PAD]")
    with pytest.raises(ValueError, match="special token"):
        detect_joiner(fast)


PROMPTS = {
    "start": f"{IMG}pick up the red mug",
    "middle": f"pick up {IMG} the red mug",
    "end": f"pick up the red mug{IMG}",
    "none": "pick up the red mug",
    "glued": f"pick{IMG}up",
    "whitespace": f"\tpick  up\n{IMG}\u00a0the red   mug \n",
}


@pytest.mark.parametrize("which", ["bpe", "wordpiece"])
@pytest.mark.parametrize("where", list(PROMPTS))
@pytest.mark.parametrize("num_images", [1, 2])
def test_placeholders_expand_to_one_token_per_feature(request, which, where, num_images):
    tokenizer = request.getfixturevalue(which)
    proc = MultimodalProcessor(tokenizer, image_seq_length=5)
    prompt = PROMPTS[where]
    enc = proc(prompt, num_images)
    ids, mask = enc["input_ids"][0], enc["image_token_mask"][0]
    assert int(mask.sum()) == 5 * num_images
    hits = mask.nonzero().flatten()
    assert hits[-1] - hits[0] == 5 * num_images - 1  # one contiguous block
    # The text around the block tokenises exactly as it does on its own.
    segments = prompt.split(IMG) if IMG in prompt else ["", prompt]
    before, after = ids[: hits[0]].tolist(), ids[hits[-1] + 1 :].tolist()
    assert before == text_ids(tokenizer, segments[0].rstrip(proc.joiner) if proc.joiner else segments[0])
    assert after == text_ids(tokenizer, segments[1].lstrip(proc.joiner) if proc.joiner else segments[1])


@pytest.mark.parametrize("which", ["bpe", "wordpiece"])
def test_one_placeholder_per_image_and_a_padded_batch(request, which):
    tokenizer = request.getfixturevalue(which)
    proc = MultimodalProcessor(tokenizer, image_seq_length=3)
    prompts = [f"{IMG} front {IMG}wrist: put the bowl in the basket", f"put it {IMG}"]
    enc = proc(prompts, num_images=[2, 1])
    assert enc["input_ids"].shape[0] == 2 and enc["image_token_mask"].sum(-1).tolist() == [6, 3]
    first = enc["image_token_mask"][0].nonzero().flatten().tolist()
    assert first[:3] == [0, 1, 2] and first[3] > 3  # "front" sits between the two images' blocks
    with pytest.raises(ValueError, match="placeholders for 3 images"):
        proc(prompts[0], num_images=3)


def test_count_mismatch_raises_a_clear_error(bpe):
    proc = MultimodalProcessor(bpe, image_seq_length=8)
    with pytest.raises(ValueError, match=r"sample 0: 6 '<image>' tokens after tokenisation but 8 visual"):
        proc(f"{IMG} pick up the cube", truncation=True, max_length=6)
    with pytest.raises(ValueError, match="16 visual features"):
        proc(f"{IMG} pick up the cube", num_features=16)
    with pytest.raises(TypeCheckError, match="input_ids"):
        proc.check_image_tokens(torch.zeros(3, dtype=torch.long), 1)


@given(
    words=st.lists(st.sampled_from(["pick", "up", "the", "bowl", "Red", "mug", ".", "!", ","]), max_size=6),
    spaces=st.lists(st.sampled_from([" ", "  ", "\t", "\n", "\u00a0", "\u3000"]), min_size=7, max_size=7),
    at=st.integers(0, 6),
)
def test_any_whitespace_around_placeholders_keeps_the_count(bpe, wordpiece, words, spaces, at):
    parts = [w + s for w, s in zip(words, spaces, strict=False)]
    prompt = "".join(parts[:at]) + IMG + spaces[-1] + "".join(parts[at:])
    for tokenizer in (bpe, wordpiece):
        for normalize in (False, True):
            proc = MultimodalProcessor(tokenizer, image_seq_length=4, normalize=normalize)
            assert int(proc(prompt, 2)["image_token_mask"].sum()) == 8


def test_normalize_instruction():
    assert normalize_instruction("  Pick up\tthe RED\u00a0cube.\n") == "pick up the red cube"
    assert normalize_instruction("Put it   there?!", lowercase=False) == "Put it there"
    assert normalize_instruction("stop.", strip_punctuation=False) == "stop."
    proc = MultimodalProcessor.__new__(MultimodalProcessor)  # expansion logic without a tokenizer
    proc.image_token, proc.image_seq_length, proc.joiner, proc.normalize = IMG, 2, "", True
    assert proc.expand_prompt(f"  {IMG} Pick UP\tthe cube. ") == f"{IMG}{IMG}pick up the cube"
    assert proc.expand_prompt(f"Look: {IMG} then ACT.") == f"look:{IMG}{IMG}then act"


def test_scatter_image_features_fills_slots_in_order():
    embeds = torch.zeros(2, 6, 3)
    mask = torch.tensor([[0, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 1]], dtype=torch.bool)
    feats = torch.arange(12.0).reshape(2, 2, 3)
    out = scatter_image_features(embeds, mask, feats)
    assert torch.equal(out[0, 1:3], feats[0]) and torch.equal(out[1, [0, 5]], feats[1])
    assert (out[~mask] == 0).all() and (embeds == 0).all()
    with pytest.raises(ValueError, match="image slots"):
        scatter_image_features(embeds, mask, feats[:, :1])
    with pytest.raises(TypeCheckError, match="image_features"):
        scatter_image_features(embeds, mask, torch.zeros(2, 2, 4))
