"""``ComposedBackbone``: a vision encoder + a projector + a causal language model (the LLaVA recipe).

Each view is encoded to ``N`` patch tokens, the visual hook (2D-3D fusion) may rewrite them, an MLP
projects them to the LM width, and they fill the image slots of the tokenised prompt
([`MultimodalProcessor`][flowvla.processing.multimodal.MultimodalProcessor]: ``V * N`` image tokens before the
instruction). The LM returns every hidden layer.

Buildable three ways: [`ComposedBackbone.tiny`][flowvla.backbones.composed.ComposedBackbone.tiny] (random
init, trained byte-level tokenizer: CPU training from scratch),
[`ComposedBackbone.from_pretrained`][flowvla.backbones.composed.ComposedBackbone.from_pretrained] (a vision
checkpoint and an LM checkpoint, from the hub or local files) and
[`ComposedBackbone.from_spec`][flowvla.backbones.composed.ComposedBackbone.from_spec] (rebuild a saved
backbone's architecture, then load its weights).

Vision encoders: flowvla's [`ConvEncoder`][flowvla.backbones.conv.ConvEncoder] (a GroupNorm ResNet whose
feature map is the patch grid), a timm model by name
([`TimmEncoder`][flowvla.backbones.timm_encoders.TimmEncoder]: any layer of a ViT or CNN;
[`FusedTimmEncoder`][flowvla.backbones.timm_encoders.FusedTimmEncoder]: towers concatenated per
patch, e.g. DINOv2 + SigLIP), any ``transformers`` vision model returning ``last_hidden_state``
(SigLIP, CLIP, DINOv2 ...), or a bare timm ViT (``forward_features``, ``num_prefix_tokens``,
``patch_embed``; its architecture has no spec: wrap it as a ``TimmEncoder`` to save it). Prefix
tokens (CLS, registers) are dropped so the hook sees exactly the patch grid.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowvla.backbones.base import BackboneOutput, VisionLanguageBackbone, VisualHook, images_to_float
from flowvla.backbones.conv import ConvEncoder
from flowvla.backbones.timm_encoders import FusedTimmEncoder, TimmEncoder
from flowvla.extras import requires_extra
from flowvla.geometry import PatchGrid
from flowvla.processing import MultimodalProcessor, scatter_image_features
from flowvla.processing.tokenizers import load_tokenizer, save_tokenizer
from flowvla.typing import Float, Shaped, Tensor, typechecked

__all__ = ["ComposedBackbone"]

_TOKENIZER_DIR = "tokenizer"


_SIGLIP_STATS = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))


def _image_statistics(
    vision: str | os.PathLike, kwargs: dict[str, Any]
) -> tuple[Sequence[float], Sequence[float]]:
    """``(image_mean, image_std)`` of a vision checkpoint's image processor (see ``from_pretrained``)."""
    from transformers import AutoImageProcessor
    from transformers.image_processing_base import ImageProcessingMixin

    try:
        processor = AutoImageProcessor.from_pretrained(vision, **kwargs)
        return processor.image_mean, processor.image_std
    except (OSError, ValueError):  # no processor file
        return _SIGLIP_STATS
    except ImportError:
        # transformers refuses to build the processor class without pillow / torchvision, but the
        # statistics are plain numbers in the processor's JSON file: read them without the class.
        pass
    try:
        config, _ = ImageProcessingMixin.get_image_processor_dict(vision, **kwargs)
    except (OSError, ValueError):
        return _SIGLIP_STATS
    if "image_mean" in config and "image_std" in config:
        return config["image_mean"], config["image_std"]
    return _SIGLIP_STATS


def _vision_geometry(vision: nn.Module) -> tuple[str, PatchGrid, int, int]:
    """``(source, grid, width, prefix tokens)`` of a flowvla, transformers or timm vision encoder."""
    if isinstance(vision, ConvEncoder):
        return "conv", vision.patch_grid, vision.num_features, 0
    if isinstance(vision, (TimmEncoder, FusedTimmEncoder)):  # prefix tokens already left out
        return "timm", vision.patch_grid, vision.num_features, 0
    if hasattr(vision, "forward_features") and hasattr(vision, "patch_embed"):  # a bare timm ViT
        embed = vision.patch_embed
        grid = PatchGrid(tuple(embed.img_size), tuple(embed.patch_size))
        return "timm_model", grid, int(vision.num_features), int(getattr(vision, "num_prefix_tokens", 0))
    config = getattr(vision, "config", None)
    if config is None or not hasattr(config, "patch_size"):
        raise TypeError(
            "vision: expected a transformers vision model (with config.patch_size) or a timm ViT, "
            f"got {type(vision).__name__}"
        )
    grid = PatchGrid(config.image_size, config.patch_size)
    # Count prefix tokens by running one blank image: CLS / register layouts differ by model.
    with torch.no_grad():
        blank = torch.zeros(1, 3, *grid.image_size, dtype=next(vision.parameters()).dtype)
        seq = vision(pixel_values=blank).last_hidden_state.shape[1]
    return "hf", grid, int(config.hidden_size), seq - grid.num_patches


class ComposedBackbone(VisionLanguageBackbone):
    """Vision encoder + MLP projector + causal LM (see module docs).

    Args:
        vision: the vision encoder (see the module docs).
        language_model: a ``transformers`` decoder base model (``AutoModel``; a causal-LM wrapper's
            ``.model`` is taken if given).
        tokenizer: a ``transformers`` tokenizer containing ``image_token``.
        image_mean: per-channel normalisation mean of the vision encoder; default the encoder's own
            ``image_mean`` attribute (timm encoders), else 0.5.
        image_std: per-channel normalisation std; default the encoder's ``image_std``, else 0.5.
        num_lm_layers: keep only the LM's first ``k`` decoder layers (``k + 1`` hidden states).
        image_token: the image placeholder token.
        projector: maps ``[.., Dv]`` to ``[.., D]``; default ``Linear -> GELU -> Linear``.
    """

    def __init__(
        self,
        vision: nn.Module,
        language_model: nn.Module,
        tokenizer: Any,
        *,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        num_lm_layers: int | None = None,
        image_token: str = "<image>",
        projector: nn.Module | None = None,
    ) -> None:
        super().__init__()
        if hasattr(language_model, "model") and hasattr(language_model.model, "layers"):
            language_model = language_model.model  # drop the unused LM head
        if not hasattr(language_model, "layers"):
            raise TypeError("language_model: expected a transformers decoder with a .layers list")
        if num_lm_layers is not None:
            if not 1 <= num_lm_layers <= len(language_model.layers):
                raise ValueError(
                    f"num_lm_layers: must be in [1, {len(language_model.layers)}], got {num_lm_layers}"
                )
            # Truncation (SmolVLA-style): later layers are never computed; their weights are dropped.
            language_model.layers = language_model.layers[:num_lm_layers]
            language_model.config.num_hidden_layers = num_lm_layers
        self.vision = vision
        self.language_model = language_model
        self.vision_source, self.patch_grid, self.visual_dim, self.num_prefix_tokens = _vision_geometry(
            vision
        )
        self.hidden_size = int(language_model.config.hidden_size)
        self.num_hidden_states = len(language_model.layers) + 1
        self.image_size = self.patch_grid.image_size
        self.projector = projector or nn.Sequential(
            nn.Linear(self.visual_dim, self.hidden_size),
            nn.GELU(),
            nn.Linear(self.hidden_size, self.hidden_size),
        )
        self.tokenizer = tokenizer
        if image_mean is None:
            image_mean = getattr(vision, "image_mean", (0.5, 0.5, 0.5))
        if image_std is None:
            image_std = getattr(vision, "image_std", (0.5, 0.5, 0.5))
        self.processor = MultimodalProcessor(tokenizer, self.patch_grid.num_patches, image_token=image_token)
        self.register_buffer("image_mean", torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1))
        self.register_buffer("image_std", torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1))

    def parameter_groups(self) -> dict[str, nn.Module]:
        """``{"vision", "projector", "language"}`` for (partial) freezing."""
        return {"vision": self.vision, "projector": self.projector, "language": self.language_model}

    @typechecked
    def encode_images(self, images: Shaped[Tensor, "B V 3 H W"]) -> Float[Tensor, "B VN Dv"]:
        """Patch tokens ``[B, V * N, Dv]`` of images ``[B, V, 3, H, W]`` (prefix tokens dropped)."""
        b, v = images.shape[:2]
        x = (images_to_float(images).flatten(0, 1).to(self.image_mean) - self.image_mean) / self.image_std
        x = x.to(next(self.vision.parameters()).dtype)
        if self.vision_source == "timm_model":
            tokens = self.vision.forward_features(x)
        elif self.vision_source in ("conv", "timm"):
            tokens = self.vision(x)
        else:
            tokens = self.vision(pixel_values=x).last_hidden_state
        return tokens[:, self.num_prefix_tokens :].reshape(b, v * self.patch_grid.num_patches, -1)

    @typechecked
    def forward(
        self,
        images: Shaped[Tensor, "B V 3 H W"],
        instructions: Sequence[str],
        *,
        visual_hook: VisualHook | None = None,
        visual_features: Float[Tensor, "B VN Dv"] | None = None,
    ) -> BackboneOutput:
        """Hidden states of every LM layer for ``images`` and ``instructions`` (see the base class);
        given ``visual_features``, the vision encoder does not run."""
        self.check_images(images)
        b, v = images.shape[:2]
        if len(instructions) != b:
            raise ValueError(f"instructions: {len(instructions)} strings for a batch of {b} image sets")
        if visual_features is not None:
            expected = (b, v * self.patch_grid.num_patches, self.visual_dim)
            self._check_visual_features(visual_features, expected, visual_hook)
            visual = visual_features
        else:
            visual = self.encode_images(images)
        if visual_hook is not None:
            fused = visual_hook(visual)
            if fused.shape != visual.shape:
                raise ValueError(
                    f"visual_hook: returned {tuple(fused.shape)}, expected {tuple(visual.shape)}"
                )
            visual = fused
        enc = self.processor(list(instructions), v)
        device = images.device
        input_ids = enc["input_ids"].to(device)
        attention_mask = enc["attention_mask"].to(device).bool()
        image_mask = enc["image_token_mask"].to(device)
        embed = self.language_model.get_input_embeddings()
        inputs_embeds = scatter_image_features(
            embed(input_ids), image_mask, self.projector(visual).to(embed.weight.dtype)
        )
        out = self.language_model(
            inputs_embeds=inputs_embeds, attention_mask=attention_mask.long(), output_hidden_states=True
        )
        return BackboneOutput(
            hidden_states=tuple(out.hidden_states),
            attention_mask=attention_mask,
            image_token_mask=image_mask,
            input_ids=input_ids,
            padding_side=self.tokenizer.padding_side,
            visual_features=visual,
        )

    # ---- construction ---------------------------------------------------------------------------

    @classmethod
    def tiny(
        cls,
        texts: Iterable[str],
        *,
        image_size: int = 32,
        patch_size: int = 8,
        vision_dim: int = 32,
        vision_layers: int = 1,
        lm_dim: int = 32,
        lm_layers: int = 2,
        num_heads: int = 2,
        vocab_size: int = 320,
        lm_type: str = "llama",
        vision: str | nn.Module = "vit",
        conv_channels: Sequence[int] = (32, 64, 128, 256),
        conv_blocks: int = 1,
        seed: int = 0,
    ) -> ComposedBackbone:
        """A random-init vision encoder + ``lm_type`` decoder + a BPE tokenizer trained on ``texts``.

        Args:
            texts: instructions the tokenizer is trained on (any text still tokenises).
            image_size: square input size.
            patch_size: ViT patch size (``vision="vit"``).
            vision_dim: ViT width.
            vision_layers: ViT depth.
            lm_dim: LM width.
            lm_layers: LM depth.
            num_heads: attention heads of both.
            vocab_size: tokenizer / embedding size.
            lm_type: a ``transformers`` decoder type (``"llama"``, ``"qwen2"``, ``"gemma"`` ...).
            vision: ``"vit"`` (a SigLIP-style ViT), ``"conv"`` (a
                [`ConvEncoder`][flowvla.backbones.conv.ConvEncoder], patch size
                ``2 ** len(conv_channels)``), or a built encoder such as a
                [`TimmEncoder`][flowvla.backbones.timm_encoders.TimmEncoder] (then the ``image_size``,
                ``patch_size``, ``vision_*`` and ``conv_channels`` arguments are unused).
            conv_channels: the ConvEncoder's stage widths (``vision="conv"``).
            conv_blocks: residual blocks per ConvEncoder stage (0: one plain convolution).
            seed: initialisation seed.
        """
        with requires_extra("hf", "ComposedBackbone.tiny"):
            from transformers import AutoConfig, AutoModel, SiglipVisionConfig, SiglipVisionModel

        from flowvla.processing.tokenizers import train_bpe_tokenizer

        tokenizer = train_bpe_tokenizer(texts, vocab_size)
        torch.manual_seed(seed)
        encoder: nn.Module
        if isinstance(vision, nn.Module):
            encoder = vision
        elif vision == "conv":
            encoder = ConvEncoder(image_size, conv_channels, blocks=conv_blocks)
        elif vision == "vit":
            encoder = SiglipVisionModel(
                SiglipVisionConfig(
                    hidden_size=vision_dim,
                    intermediate_size=4 * vision_dim,
                    num_hidden_layers=vision_layers,
                    num_attention_heads=num_heads,
                    image_size=image_size,
                    patch_size=patch_size,
                )
            )
        else:
            raise ValueError(f"vision: choose 'vit', 'conv' or an encoder module, got {vision!r}")
        lm_config = AutoConfig.for_model(
            lm_type,
            vocab_size=len(tokenizer),
            hidden_size=lm_dim,
            intermediate_size=4 * lm_dim,
            num_hidden_layers=lm_layers,
            num_attention_heads=num_heads,
            num_key_value_heads=num_heads,
            head_dim=lm_dim // num_heads,
            max_position_embeddings=1024,
            pad_token_id=tokenizer.pad_token_id,
        )
        return cls(encoder, AutoModel.from_config(lm_config), tokenizer)

    @classmethod
    def from_pretrained(
        cls,
        vision: str | os.PathLike | nn.Module,
        language: str | os.PathLike,
        *,
        image_token: str = "<image>",
        num_lm_layers: int | None = None,
        **kwargs: Any,
    ) -> ComposedBackbone:
        """Load a vision checkpoint and an LM checkpoint (hub names or local directories).

        ``vision`` may also be a built encoder, e.g. ``TimmEncoder("vit_so400m_patch14_siglip_224",
        pretrained=True)`` (timm's own hub loading), normalised with its ``image_mean`` / ``image_std``.
        The image token is added to the LM's tokenizer if missing (and the embeddings resized); the
        projector starts from random initialisation. ``kwargs`` go to ``from_pretrained`` of the LM and
        of a ``transformers`` vision checkpoint. A checkpoint's pixels are normalised with its
        image-processor statistics: read from its processor file without building the processor when
        the processor class cannot be imported (it needs pillow or torchvision), and SigLIP's
        ``(0.5, 0.5)`` when there is no processor file.
        """
        with requires_extra("hf", "ComposedBackbone.from_pretrained"):
            from transformers import AutoConfig, AutoModel, AutoTokenizer

        mean: Sequence[float] | None
        std: Sequence[float] | None
        if isinstance(vision, nn.Module):
            vision_model, mean, std = vision, None, None  # the encoder's own normalisation
        else:
            vision_config = AutoConfig.from_pretrained(vision, **kwargs)
            vision_config = getattr(vision_config, "vision_config", vision_config)
            vision_model = AutoModel.from_pretrained(vision, config=vision_config, **kwargs)
            mean, std = _image_statistics(vision, kwargs)
        tokenizer = AutoTokenizer.from_pretrained(language, **kwargs)
        lm = AutoModel.from_pretrained(language, **kwargs)
        if image_token not in tokenizer.get_vocab():
            tokenizer.add_special_tokens({"additional_special_tokens": [image_token]})
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if len(tokenizer) > lm.get_input_embeddings().num_embeddings:
            lm.resize_token_embeddings(len(tokenizer))
        tokenizer.padding_side = "right"
        return cls(
            vision_model,
            lm,
            tokenizer,
            image_mean=mean,
            image_std=std,
            num_lm_layers=num_lm_layers,
            image_token=image_token,
        )

    def spec(self) -> dict[str, Any]:
        """A JSON-serialisable description of the architecture (weights are saved separately)."""
        if self.vision_source == "timm_model":
            raise NotImplementedError(
                "spec: a bare timm model does not record how it was built; wrap it as "
                "flowvla.backbones.TimmEncoder(name, **kwargs) so the spec can rebuild it"
            )
        if self.vision_source == "conv":
            vision = {"model_type": "flowvla_conv", **self.vision.config}
        elif self.vision_source == "timm":
            vision = self.vision.config  # model_type "timm" or "timm_fused"
        else:
            vision = self.vision.config.to_dict()
        return {
            "kind": "composed",
            "vision_config": vision,
            "language_config": self.language_model.config.to_dict(),
            "image_mean": self.image_mean.flatten().tolist(),
            "image_std": self.image_std.flatten().tolist(),
            "image_token": self.processor.image_token,
        }

    def save_tokenizer(self, directory: str | os.PathLike) -> None:
        """Write the tokenizer files under ``directory/tokenizer``."""
        save_tokenizer(self.tokenizer, Path(directory) / _TOKENIZER_DIR)

    @classmethod
    def from_spec(cls, spec: dict[str, Any], directory: str | os.PathLike) -> ComposedBackbone:
        """Rebuild the architecture described by [`spec`][flowvla.backbones.composed.ComposedBackbone.spec]
        (random weights) with the tokenizer saved in ``directory`` by
        [`save_tokenizer`][flowvla.backbones.composed.ComposedBackbone.save_tokenizer]."""
        with requires_extra("hf", "ComposedBackbone.from_spec"):
            from transformers import AutoConfig, AutoModel

        def config(d: dict[str, Any]) -> Any:
            d = dict(d)
            return AutoConfig.for_model(d.pop("model_type"), **d)

        def vision(d: dict[str, Any]) -> nn.Module:
            if d.get("model_type") == "flowvla_conv":
                return ConvEncoder.from_config({k: v for k, v in d.items() if k != "model_type"})
            if d.get("model_type") == "timm":
                return TimmEncoder.from_config(d)  # pretrained=False: no network, weights come next
            if d.get("model_type") == "timm_fused":
                return FusedTimmEncoder.from_config(d)
            return AutoModel.from_config(config(d))

        tokenizer = load_tokenizer(Path(directory) / _TOKENIZER_DIR)
        return cls(
            vision(spec["vision_config"]),
            AutoModel.from_config(config(spec["language_config"])),
            tokenizer,
            image_mean=spec["image_mean"],
            image_std=spec["image_std"],
            image_token=spec["image_token"],
        )
