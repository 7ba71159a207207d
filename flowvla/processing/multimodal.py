"""Multimodal prompts: ``<image>`` placeholders expanded to one token per visual feature, checked.

A VLM consumes ``[B, L]`` token ids in which each visual feature (``image_seq_length`` per image) has
one image-token slot; the language model's embeddings at those slots are replaced by the visual
features ([`scatter_image_features`][flowvla.processing.multimodal.scatter_image_features]). Three things go
wrong silently in practice, and each is checked here:

- **Merging.** Expanding ``<image>`` into ``n`` copies must give ``n`` image ids after tokenisation.
  A tokenizer that knows the image token as an added (special) token splits it out of any text, so
  copies can be concatenated (joiner ``""``); one that only has it as a vocabulary word (e.g. a
  whitespace-splitting WordPiece) needs spaces around every copy (joiner ``" "``), or ``"<image><image>"``
  becomes one unknown word. [`detect_joiner`][flowvla.processing.multimodal.detect_joiner] probes the
  tokenizer and picks the joiner that works.
- **Counting.** After tokenisation (and any truncation) the number of image ids per sample must equal
  the number of visual features; otherwise features would be dropped or misaligned. The processor
  raises with both counts.
- **Placement.** Placeholders may sit anywhere (start, middle, end, several); text next to them is
  tokenised exactly as it would be on its own.

Placeholder rules per prompt with ``num_images`` images: no placeholder -> one is prepended (the
PaliGemma layout, images before text); one placeholder -> it expands to ``num_images x
image_seq_length`` image tokens; ``num_images`` placeholders -> each expands to ``image_seq_length``;
any other count is an error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from flowvla.processing.instructions import normalize_instruction
from flowvla.typing import Bool, Float, Int, Tensor, typechecked

__all__ = ["MultimodalProcessor", "detect_joiner", "scatter_image_features"]

# Neighbours that merge with an image token in some tokenizer: nothing, words, punctuation, digits.
_PROBES = (("", ""), ("a", "b"), ("pick up", "."), ("x1", "2y"), ("(", ")"))


def _image_token_id(tokenizer: Any, image_token: str) -> int:
    token_id = tokenizer.convert_tokens_to_ids(image_token)
    if token_id is None or (tokenizer.unk_token_id is not None and token_id == tokenizer.unk_token_id):
        raise ValueError(
            f"image token {image_token!r} is not in the tokenizer's vocabulary; add it, e.g. "
            f"tokenizer.add_special_tokens({{'additional_special_tokens': [{image_token!r}]}}) "
            "(and resize the model's embeddings)"
        )
    return int(token_id)


def _ids(tokenizer: Any, text: str) -> list[int]:
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def detect_joiner(tokenizer: Any, image_token: str = "<image>") -> str:
    """The string to put between (and around) image tokens so that each stays one token: ``""`` or ``" "``.

    Probes ``left + j + (image_token + j) * 3 + right`` for a few neighbours and returns the first
    joiner ``j`` that yields exactly three consecutive image ids every time.

    Args:
        tokenizer: a ``transformers`` tokenizer (fast or slow).
        image_token: the placeholder token.
    """
    image_id = _image_token_id(tokenizer, image_token)
    for joiner in ("", " "):
        ok = True
        for left, right in _PROBES:
            ids = _ids(tokenizer, _join([left, right], image_token, 3, joiner))
            hits = [i for i, t in enumerate(ids) if t == image_id]
            ok &= len(hits) == 3 and hits[-1] - hits[0] == 2
        if ok:
            return joiner
    raise ValueError(
        f"tokenizer splits or merges {image_token!r} whichever joiner is used ('' or ' '); register it as "
        f"a special token: tokenizer.add_special_tokens({{'additional_special_tokens': [{image_token!r}]}})"
    )


def _join(segments: Sequence[str], image_token: str, copies: int, joiner: str) -> str:
    """Text segments with ``copies`` image tokens between consecutive ones; the joiner also separates
    each block from non-empty neighbouring text (never added at the string's ends)."""
    block = joiner.join([image_token] * copies)
    out = segments[0]
    for seg in segments[1:]:
        out += (joiner if out else "") + block + (joiner if seg else "") + seg
    return out


class MultimodalProcessor:
    """Prompt -> token ids with aligned image tokens (see module docs for the placeholder rules).

    Args:
        tokenizer: a ``transformers`` tokenizer that has ``image_token`` in its vocabulary.
        image_seq_length: visual features (tokens) per image, e.g. 256 for a 224 px / 14 px ViT.
        image_token: the placeholder, also used as the expanded token.
        normalize: normalise the text around placeholders with
            [`normalize_instruction`][flowvla.processing.instructions.normalize_instruction].
        joiner: force ``""`` or ``" "`` instead of detecting it.
    """

    def __init__(
        self,
        tokenizer: Any,
        image_seq_length: int,
        image_token: str = "<image>",
        normalize: bool = False,
        joiner: str | None = None,
    ) -> None:
        if image_seq_length < 1:
            raise ValueError(f"image_seq_length: must be >= 1, got {image_seq_length}")
        self.tokenizer = tokenizer
        self.image_seq_length = image_seq_length
        self.image_token = image_token
        self.image_token_id = _image_token_id(tokenizer, image_token)
        self.normalize = normalize
        self.joiner = detect_joiner(tokenizer, image_token) if joiner is None else joiner

    def expand_prompt(self, prompt: str, num_images: int = 1) -> str:
        """Replace the placeholders by ``num_images * image_seq_length`` image tokens in all.

        Args:
            prompt: text with zero, one or ``num_images`` placeholders.
            num_images: images (views) for this prompt.
        """
        if num_images < 1:
            raise ValueError(f"num_images: must be >= 1, got {num_images}")
        segments = prompt.split(self.image_token)
        if len(segments) == 1:
            segments = ["", *segments]
        placeholders = len(segments) - 1
        if placeholders not in (1, num_images):
            raise ValueError(
                f"prompt has {placeholders} {self.image_token!r} placeholders for {num_images} images: "
                f"use one (all images there) or one per image: {prompt!r}"
            )
        if self.normalize:
            last = max((i for i, s in enumerate(segments) if s.strip()), default=0)
            segments = [
                normalize_instruction(s, strip_punctuation=i == last) if s.strip() else ""
                for i, s in enumerate(segments)
            ]
        copies = self.image_seq_length * num_images // placeholders
        return _join(segments, self.image_token, copies, self.joiner)

    def __call__(
        self,
        text: str | Sequence[str],
        num_images: int | Sequence[int] = 1,
        *,
        num_features: int | Sequence[int] | None = None,
        return_tensors: str = "pt",
        padding: bool | str = True,
        **tokenizer_kwargs: Any,
    ) -> Any:
        """Expand, tokenise and check a batch of prompts.

        Args:
            text: one prompt or a batch.
            num_images: images per prompt (one int for all).
            num_features: visual features per prompt that will fill the image slots (default
                ``num_images * image_seq_length``); checked against the image ids after tokenisation.
            return_tensors: passed to the tokenizer (``"pt"``).
            padding: passed to the tokenizer.
            **tokenizer_kwargs: further tokenizer arguments (``truncation``, ``max_length`` ...).

        Returns:
            The tokenizer's ``BatchEncoding`` (``input_ids``, ``attention_mask``) plus ``image_token_mask``
            ``[B, L]`` bool, ``True`` at image slots.
        """
        texts = [text] if isinstance(text, str) else list(text)
        images = [num_images] * len(texts) if isinstance(num_images, int) else list(num_images)
        if len(images) != len(texts):
            raise ValueError(f"num_images: {len(images)} entries for {len(texts)} prompts")
        expanded = [self.expand_prompt(t, n) for t, n in zip(texts, images, strict=True)]
        enc = self.tokenizer(expanded, return_tensors=return_tensors, padding=padding, **tokenizer_kwargs)
        ids = torch.as_tensor(enc["input_ids"])
        if num_features is None:
            num_features = [n * self.image_seq_length for n in images]
        self.check_image_tokens(ids, num_features)
        enc["image_token_mask"] = ids == self.image_token_id
        return enc

    @typechecked
    def check_image_tokens(self, input_ids: Int[Tensor, "B L"], num_features: int | Sequence[int]) -> None:
        """Raise ``ValueError`` unless each row of ``input_ids`` has as many image ids as visual features.

        Args:
            input_ids: ``[B, L]`` token ids.
            num_features: visual features per row (one int for all).
        """
        counts = (input_ids == self.image_token_id).sum(-1).tolist()
        wanted = [num_features] * len(counts) if isinstance(num_features, int) else list(num_features)
        if len(wanted) != len(counts):
            raise ValueError(f"num_features: {len(wanted)} entries for {len(counts)} rows of input_ids")
        for row, (have, want) in enumerate(zip(counts, wanted, strict=True)):
            if have != want:
                raise ValueError(
                    f"sample {row}: {have} {self.image_token!r} tokens after tokenisation but {want} visual "
                    "features; check truncation / max_length, image_seq_length, and that the tokenizer keeps "
                    "the image token whole"
                )


@typechecked
def scatter_image_features(
    inputs_embeds: Float[Tensor, "B L D"],
    image_token_mask: Bool[Tensor, "B L"],
    image_features: Float[Tensor, "B T D"],
) -> Float[Tensor, "B L D"]:
    """Put the visual features into the image slots, in order: row ``b``'s ``t``-th slot gets feature ``t``.

    Args:
        inputs_embeds: ``[B, L, D]`` text embeddings.
        image_token_mask: ``[B, L]``, ``True`` at image slots (``T`` per row).
        image_features: ``[B, T, D]`` visual (or fused 2D-3D) tokens.
    """
    counts = image_token_mask.sum(-1)
    t = image_features.shape[1]
    if not bool((counts == t).all()):
        raise ValueError(f"image_token_mask: rows have {counts.tolist()} image slots for {t} image features")
    out = inputs_embeds.clone()
    out[image_token_mask] = image_features.reshape(-1, image_features.shape[-1]).to(out.dtype)
    return out
