"""Train a small byte-level BPE tokenizer offline, for VLMs built from scratch at tiny sizes.

Byte-level BPE never produces unknown tokens (every string falls back to bytes), so instructions
with unseen words -- paraphrases, typos -- still tokenise. The image placeholder and the control
tokens are special tokens: they are never split or merged with neighbouring text.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from flowvla.extras import requires_extra
from flowvla.io import write_json_atomic

__all__ = [
    "SPECIAL_TOKENS",
    "load_tokenizer",
    "portable_tokenizer_config",
    "save_tokenizer",
    "train_bpe_tokenizer",
]

_CONFIG = "tokenizer_config.json"

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


def portable_tokenizer_config(config: dict[str, Any]) -> dict[str, Any]:
    """A ``tokenizer_config.json`` as ``transformers`` 4.56+ and 5 both read it.

    ``transformers`` 5 writes a fast tokenizer's class as ``TokenizersBackend`` (unknown to 4.x), its
    extra special tokens as a list under ``extra_special_tokens`` (4.x wants a mapping there) and a
    ``backend`` key; 4.x's names for the same things (``PreTrainedTokenizerFast``,
    ``additional_special_tokens``) load as the same tokenizer in 5. A config without those keys comes
    back unchanged.
    """
    out = dict(config)
    if out.get("tokenizer_class") == "TokenizersBackend":
        out["tokenizer_class"] = "PreTrainedTokenizerFast"
    if isinstance(out.get("extra_special_tokens"), list):
        extra = out.pop("extra_special_tokens")
        known = list(out.get("additional_special_tokens") or [])
        out["additional_special_tokens"] = known + [t for t in extra if t not in known]
    if out.get("backend") == "tokenizers":
        del out["backend"]
    return out


def save_tokenizer(tokenizer: Any, directory: str | os.PathLike) -> Path:
    """``tokenizer.save_pretrained(directory)``, its config made portable
    ([`portable_tokenizer_config`][flowvla.processing.tokenizers.portable_tokenizer_config]), so a
    checkpoint saved beside ``transformers`` 5 loads beside 4.x (LeRobot 0.4 pins it) and back."""
    directory = Path(directory)
    tokenizer.save_pretrained(directory)
    path = directory / _CONFIG
    if path.is_file():
        config = json.loads(path.read_text())
        portable = portable_tokenizer_config(config)
        if portable != config:
            write_json_atomic(path, portable)
    return directory


def load_tokenizer(directory: str | os.PathLike) -> Any:
    """``AutoTokenizer.from_pretrained(directory)``, reading a config written by another
    ``transformers`` major version (checkpoints saved before
    [`save_tokenizer`][flowvla.processing.tokenizers.save_tokenizer] made it portable) through a
    portable copy; the folder itself is never changed."""
    with requires_extra("hf", "loading a tokenizer"):
        from transformers import AutoTokenizer

    directory = Path(directory)
    path = directory / _CONFIG
    config = json.loads(path.read_text()) if path.is_file() else None
    portable = portable_tokenizer_config(config) if config is not None else None
    if portable == config:
        return AutoTokenizer.from_pretrained(directory)
    with tempfile.TemporaryDirectory(prefix="flowvla-tokenizer-") as tmp:
        copy = Path(tmp) / directory.name
        shutil.copytree(directory, copy)
        write_json_atomic(copy / _CONFIG, portable)
        return AutoTokenizer.from_pretrained(copy)
