"""Train a small byte-level BPE tokenizer offline, for VLMs built from scratch at tiny sizes.

Byte-level BPE never produces unknown tokens (every string falls back to bytes), so instructions
with unseen words -- paraphrases, typos -- still tokenise. The image placeholder and the control
tokens are special tokens: they are never split or merged with neighbouring text.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from flowvla.extras import requires_extra

__all__ = ["SPECIAL_TOKENS", "train_bpe_tokenizer"]

#: Control tokens of a trained tokenizer, in id order (``<pad>`` is id 0).
SPECIAL_TOKENS = {"pad_token": "<pad>", "bos_token": "<bos>", "eos_token": "<eos>", "unk_token": "<unk>"}


def train_bpe_tokenizer(
    texts: Iterable[str],
    vocab_size: int = 512,
    *,
    image_token: str = "<image>",
    padding_side: str = "right",
) -> Any:
    """A ``transformers`` fast tokenizer trained on ``texts`` (deterministic, seconds, no network).

    Args:
        texts: the corpus, e.g. every instruction of a dataset.
        vocab_size: target vocabulary size (at least 256 bytes + the special tokens).
        image_token: the image placeholder, registered as a special token.
        padding_side: where batches are padded.

    Returns:
        A ``PreTrainedTokenizerFast`` with ``<pad>``, ``<bos>``, ``<eos>``, ``<unk>`` and ``image_token``.
    """
    with requires_extra("hf", "training a tokenizer"):
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
        from transformers import PreTrainedTokenizerFast

    specials = [*SPECIAL_TOKENS.values(), image_token]
    if vocab_size < 256 + len(specials):
        raise ValueError(f"vocab_size: byte-level BPE needs at least {256 + len(specials)}, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    bos = tok.token_to_id(SPECIAL_TOKENS["bos_token"])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SPECIAL_TOKENS['bos_token']} $A", special_tokens=[(SPECIAL_TOKENS["bos_token"], bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        additional_special_tokens=[image_token],
        padding_side=padding_side,
        **SPECIAL_TOKENS,
    )
