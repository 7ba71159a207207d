"""Tiny real tokenizers trained in-test with the ``tokenizers`` package (no download), shared by tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

__all__ = ["tiny_bpe", "tiny_wordpiece"]


def tiny_bpe(
    corpus: Iterable[str],
    special_tokens: Sequence[str] = ("[UNK]", "[PAD]", "<image>"),
    vocab_size: int = 400,
    **named_tokens: str,
) -> PreTrainedTokenizerFast:
    """Byte-level BPE (GPT-2 style, no prefix space) whose ``special_tokens`` are added special tokens.

    Args:
        corpus: training texts.
        special_tokens: tokens that never split; the first two are the unk and pad tokens.
        vocab_size: target vocabulary size.
        **named_tokens: further roles for ``PreTrainedTokenizerFast`` (``bos_token="<bos>"`` ...).
    """
    tok = Tokenizer(models.BPE(unk_token=special_tokens[0]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(corpus), trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=special_tokens[0], pad_token=special_tokens[1], **named_tokens
    )


def tiny_wordpiece(
    corpus: Iterable[str],
    special_tokens: Sequence[str] = ("[UNK]", "[PAD]", "<image>"),
    vocab_size: int = 300,
) -> PreTrainedTokenizerFast:
    """A trained WordPiece on whitespace-split words whose special tokens are plain vocabulary words
    (not added tokens): two copies of one without a space in between form one unknown word.

    Args:
        corpus: training texts.
        special_tokens: vocabulary words; the first two are the unk and pad tokens.
        vocab_size: target vocabulary size.
    """
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(special_tokens))
    trained = Tokenizer(models.WordPiece(unk_token=special_tokens[0]))
    trained.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trained.train_from_iterator(list(corpus), trainer)
    tok = Tokenizer(models.WordPiece(vocab=trained.get_vocab(), unk_token=special_tokens[0]))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token=special_tokens[0], pad_token=special_tokens[1]
    )
