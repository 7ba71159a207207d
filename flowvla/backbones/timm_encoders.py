"""``timm`` vision towers as patch-token encoders, rebuildable from a JSON spec.

[`TimmEncoder`][flowvla.backbones.timm_encoders.TimmEncoder] builds a timm model by name
(``timm.create_model(name, **kwargs)``) and returns the features of one chosen layer as patch tokens
``[B, N, D]`` on a [`PatchGrid`][flowvla.geometry.PatchGrid] derived from the model:

- a ViT (SigLIP, DINOv2 ...): its patch tokens, on the patch-embedding grid. Prefix tokens (CLS,
  registers) are left out, so 2D-3D fusion sees exactly one token per patch;
- a CNN (ResNet ...): the feature map of the chosen stage, flattened row-major, on a grid whose patch
  size is that stage's stride (the image size must be a multiple of it).

Layers after the chosen one, and the classifier head, are removed at construction, so they hold no
parameters. The encoder's ``config`` is a JSON-serialisable description (name, kwargs, layer, image
size, normalisation);
[`from_config`][flowvla.backbones.timm_encoders.TimmEncoder.from_config]
rebuilds the same architecture with ``pretrained=False`` and no network, and a saved state dict
fills it bit-exactly.

[`FusedTimmEncoder`][flowvla.backbones.timm_encoders.FusedTimmEncoder]
concatenates the per-patch features of several towers on the same grid, each fed with its own
normalisation: [`dinosiglip`][flowvla.backbones.timm_encoders.FusedTimmEncoder.dinosiglip]
is the OpenVLA / Prismatic featurizer (DINOv2 + SigLIP, second-to-last layer of each).

``timm`` is imported when an encoder is built, so importing this module needs neither timm nor
torchvision (``pip install "flowvla[timm]"``; see the README's "timm encoders" section for the torch /
torchvision pairing).

Legend: ``B`` images, ``N`` grid cells (patches), ``D`` token width.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from flowvla.geometry import PatchGrid
from flowvla.typing import Float, Tensor, typechecked

__all__ = ["FusedTimmEncoder", "TimmEncoder"]

# create_model arguments that say where weights come from, not what the architecture is: they are used
# once at construction and never saved in the config (a rebuild loads weights from its own checkpoint).
_LOAD_ONLY = ("pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir")

# The README's pairing, repeated in the import error so that a user who hits it knows what to run.
_PAIRING_HINT = (
    'pip install "torch===2.13.0" "torchvision==0.28.0" && pip install "flowvla[timm]" '
    "(the README's 'timm encoders' section explains the pairing)"
)


def _import_timm() -> Any:
    """``timm``, or an ImportError that says how to install a working timm + torchvision pair."""
    try:
        import timm
    except ImportError as err:
        raise ImportError(f"TimmEncoder needs timm: {_PAIRING_HINT}") from err
    except RuntimeError as err:
        # torchvision built against another torch build fails at import with a RuntimeError such as
        # "operator torchvision::nms does not exist" (PyPI's torchvision next to a +cpu torch wheel).
        raise ImportError(
            f"TimmEncoder: timm imports torchvision, which does not load with torch {torch.__version__} "
            f"({err}). Install a matching pair: {_PAIRING_HINT}"
        ) from err
    return timm


def _json_value(value: Any, name: str) -> Any:
    """``value`` after a JSON round trip (tuples become lists), or a ValueError naming ``name``."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as err:
        raise ValueError(
            f"{name}: {value!r} is not a JSON value; the backbone spec stores it to rebuild the encoder, so "
            "pass timm's string names (e.g. norm_layer='groupnorm', act_layer='gelu') instead of classes"
        ) from err


def _size_pair(size: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (size, size) if isinstance(size, int) else tuple(int(s) for s in size)
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(f"{name}: expected a positive int or (H, W), got {size!r}")
    return pair


class TimmEncoder(nn.Module):
    """A timm model by name, returning the patch tokens ``[B, N, D]`` of one layer (see module docs).

    Args:
        model_name: a timm model name, with or without a pretrained tag (``"resnet18"``,
            ``"vit_small_patch14_reg4_dinov2.lvd142m"``).
        image_size: input ``H`` (= ``W``) or ``(H, W)``; default timm's input size for the model. Models
            with a fixed input size (ViTs) are built for it (timm's ``img_size``; pretrained position
            embeddings are resampled by timm). For a CNN it must be a multiple of the chosen layer's stride.
        feature_layer: which of the model's feature levels (``model.feature_info``: one per block of a
            ViT; stem + stages of a ResNet) gives the tokens; negative counts from the last.
        norm: apply the model's final norm to the chosen features (ViTs; timm's ``forward_features``
            output when ``feature_layer=-1``). Without it the final norm is removed.
        pretrained: load timm's pretrained weights (its hub loading; ``pretrained_cfg_overlay=dict(file=...)``
            loads a local file instead). Not saved in ``config``.
        image_mean: per-channel mean the input is normalised with; default the model's pretrained config.
        image_std: per-channel std; default the model's pretrained config.
        **kwargs: more ``timm.create_model`` arguments: architecture kwargs (``embed_dim``, ``depth``,
            ``norm_layer="groupnorm"`` ...), which must be JSON values and are saved in ``config``, and
            the loading-only ``pretrained_cfg``, ``pretrained_cfg_overlay``, ``checkpoint_path`` and
            ``cache_dir``, which are not.

    Attributes:
        patch_grid: the token grid.
        num_features: ``D``.
        num_prefix_tokens: prefix tokens (CLS, registers) the model has and the tokens leave out.
        image_mean: ``(r, g, b)`` normalisation mean the input is expected to have.
        image_std: ``(r, g, b)`` normalisation std.
        config: the JSON description ``from_config`` rebuilds from.
        model: the (truncated) timm model.
    """

    def __init__(
        self,
        model_name: str,
        *,
        image_size: int | Sequence[int] | None = None,
        feature_layer: int = -1,
        norm: bool = True,
        pretrained: bool = False,
        image_mean: Sequence[float] | None = None,
        image_std: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        timm = _import_timm()
        load_kwargs = {k: kwargs.pop(k) for k in _LOAD_ONLY if k in kwargs}
        if "img_size" in kwargs:
            raise ValueError("kwargs: pass the input size as image_size=, not img_size= (it sets both)")
        if "features_only" in kwargs or "num_classes" in kwargs:
            raise ValueError("kwargs: features_only / num_classes are TimmEncoder's (it removes the head)")
        arch_kwargs = {k: _json_value(v, f"kwargs[{k!r}]") for k, v in kwargs.items()}
        try:
            cfg = timm.models.get_pretrained_cfg(model_name)
        except RuntimeError as err:  # a known architecture with an unknown pretrained tag
            raise ValueError(f"model_name: {err}") from err
        if cfg is None and not timm.is_model(model_name):
            raise ValueError(f"model_name: {model_name!r} is not a timm model (see timm.list_models())")
        if image_size is None and cfg is None:
            raise ValueError(f"image_size: required for {model_name!r}, which has no default input size")
        size = _size_pair(image_size if image_size is not None else cfg.input_size[1:], "image_size")
        build_kwargs = dict(arch_kwargs)
        if cfg is not None and cfg.fixed_input_size:
            build_kwargs["img_size"] = list(size)  # a ViT: its position embedding is sized for the input
        model = timm.create_model(model_name, pretrained=pretrained, **load_kwargs, **build_kwargs)
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "prune_intermediate_layers"):
            raise ValueError(
                f"model_name: {model_name!r} has no forward_intermediates in this timm version; "
                "TimmEncoder needs a model with feature intermediates (ViTs, ResNets, ConvNeXts ...)"
            )
        levels = len(model.feature_info)
        if not -levels <= feature_layer < levels:
            raise ValueError(
                f"feature_layer: {feature_layer} is out of range for {model_name!r}, which has {levels} "
                f"feature levels ({', '.join(f['module'] for f in model.feature_info)})"
            )
        self.feature_layer = feature_layer % levels
        info = model.feature_info[self.feature_layer]
        # Keep only what the chosen layer needs: later blocks / stages, the head and (without norm)
        # the final norm would otherwise hold parameters that never receive a gradient.
        model.prune_intermediate_layers([self.feature_layer], prune_norm=not norm, prune_head=True)
        self.model = model
        self.norm = bool(norm)
        self.num_features = int(info["num_chs"])
        self.num_prefix_tokens = int(getattr(model, "num_prefix_tokens", 0))
        patch_embed = getattr(model, "patch_embed", None)
        if patch_embed is not None and int(info["reduction"]) == max(patch_embed.patch_size):
            # Patch tokens: the embedding's non-overlapping conv floors, so a remainder is dropped.
            self.patch_grid = PatchGrid(size, tuple(patch_embed.patch_size))
        else:
            stride = int(info["reduction"])
            if size[0] % stride or size[1] % stride:
                raise ValueError(
                    f"image_size: {size} is not a multiple of the stride {stride} of {model_name!r}'s "
                    f"feature layer {self.feature_layer} ({info['module']}); choose a multiple of {stride} "
                    "or an earlier feature_layer"
                )
            self.patch_grid = PatchGrid(size, stride)
        pretrained_cfg = getattr(model, "pretrained_cfg", {}) or {}
        mean = image_mean if image_mean is not None else pretrained_cfg.get("mean", (0.5, 0.5, 0.5))
        std = image_std if image_std is not None else pretrained_cfg.get("std", (0.5, 0.5, 0.5))
        self.image_mean = tuple(float(m) for m in mean)
        self.image_std = tuple(float(s) for s in std)
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise ValueError(f"image_mean / image_std: expected 3 values, got {mean!r} / {std!r}")
        self.model_name = model_name
        self.config: dict[str, Any] = {
            "model_type": "timm",
            "name": model_name,
            "kwargs": arch_kwargs,
            "image_size": list(size),
            "feature_layer": self.feature_layer,
            "norm": self.norm,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
        }

    @typechecked
    def forward(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B N D"]:
        """Patch tokens ``[B, N, D]``, row-major, of images normalised with ``image_mean`` / ``image_std``."""
        if tuple(images.shape[-2:]) != self.patch_grid.image_size:
            raise ValueError(
                f"images: size {tuple(images.shape[-2:])}, expected {self.patch_grid.image_size}"
            )
        (features,) = self.model.forward_intermediates(
            images,
            indices=[self.feature_layer],
            norm=self.norm,
            stop_early=True,
            output_fmt="NCHW",  # every timm family supports it; ViTs drop their prefix tokens here
            intermediates_only=True,
        )
        if tuple(features.shape[-2:]) != self.patch_grid.grid_size:
            raise RuntimeError(
                f"{self.model_name}: feature map {tuple(features.shape[-2:])} does not match the patch grid "
                f"{self.patch_grid.grid_size}"
            )
        return features.flatten(2).transpose(1, 2)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TimmEncoder:
        """Rebuild the architecture described by ``config`` (random init: ``pretrained=False``)."""
        c = {k: v for k, v in config.items() if k != "model_type"}
        return cls(
            c["name"],
            image_size=c["image_size"],
            feature_layer=c["feature_layer"],
            norm=c["norm"],
            image_mean=c["image_mean"],
            image_std=c["image_std"],
            **c["kwargs"],
        )


class FusedTimmEncoder(nn.Module):
    """Several encoders on one patch grid, their tokens concatenated per patch: ``[B, N, sum D_i]``.

    Each tower receives the images normalised its own way (its ``image_mean`` / ``image_std``), so the
    fused encoder takes images in ``[0, 1]`` (its own ``image_mean`` is 0 and ``image_std`` 1).

    Args:
        encoders: the towers ([`TimmEncoder`][flowvla.backbones.timm_encoders.TimmEncoder]s), all on one patch
            grid.

    Attributes:
        patch_grid: the shared grid.
        num_features: ``sum D_i``.
        config: ``{"model_type": "timm_fused", "encoders": [tower configs]}``.
    """

    image_mean = (0.0, 0.0, 0.0)
    image_std = (1.0, 1.0, 1.0)

    def __init__(self, encoders: Sequence[TimmEncoder]) -> None:
        super().__init__()
        if len(encoders) < 2:
            raise ValueError(f"encoders: expected at least 2 towers to fuse, got {len(encoders)}")
        grids = [e.patch_grid for e in encoders]
        if any(g.grid_size != grids[0].grid_size or g.image_size != grids[0].image_size for g in grids):
            raise ValueError(
                "encoders: the towers must share one patch grid, got "
                + ", ".join(
                    f"{e.model_name}: {g.image_size} px / {g.patch_size}"
                    for e, g in zip(encoders, grids, strict=True)
                )
            )
        self.encoders = nn.ModuleList(encoders)
        self.patch_grid = grids[0]
        self.num_features = sum(e.num_features for e in encoders)
        for i, e in enumerate(encoders):
            # Not persistent: the values live in the config, so the state dict holds only weights.
            self.register_buffer(f"mean_{i}", torch.tensor(e.image_mean).view(3, 1, 1), persistent=False)
            self.register_buffer(f"std_{i}", torch.tensor(e.image_std).view(3, 1, 1), persistent=False)
        self.config: dict[str, Any] = {"model_type": "timm_fused", "encoders": [e.config for e in encoders]}

    @typechecked
    def forward(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B N D"]:
        """Concatenated tokens of images in ``[0, 1]`` (each tower normalises them its own way)."""
        tokens = []
        for i, encoder in enumerate(self.encoders):
            mean, std = getattr(self, f"mean_{i}"), getattr(self, f"std_{i}")
            tokens.append(encoder((images - mean.to(images)) / std.to(images)))
        return torch.cat(tokens, dim=-1)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> FusedTimmEncoder:
        """Rebuild from ``config`` (random init)."""
        return cls([TimmEncoder.from_config(c) for c in config["encoders"]])

    @classmethod
    def dinosiglip(
        cls,
        image_size: int | Sequence[int] = 224,
        *,
        pretrained: bool = False,
        dino: str = "vit_large_patch14_reg4_dinov2.lvd142m",
        siglip: str = "vit_so400m_patch14_siglip_224",
        feature_layer: int = -2,
        dino_kwargs: dict[str, Any] | None = None,
        siglip_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> FusedTimmEncoder:
        """The OpenVLA / Prismatic featurizer: DINOv2 (with registers) + SigLIP, both patch 14.

        Both towers give the output of their second-to-last block without the final norm (Prismatic's
        choice), DINOv2's normalised with ImageNet statistics and SigLIP's with 0.5 / 0.5: the tokens are
        ``[B, N, D_dino + D_siglip]`` (1024 + 1152 = 2176 wide for the defaults, 256 per 224 px view).

        Args:
            image_size: input size of both towers (224 px: a 16 x 16 grid).
            pretrained: load both towers' pretrained weights through timm.
            dino: the DINOv2 tower's timm name.
            siglip: the SigLIP tower's timm name.
            feature_layer: the layer of each tower.
            dino_kwargs: more ``TimmEncoder`` arguments for the DINOv2 tower only.
            siglip_kwargs: more ``TimmEncoder`` arguments for the SigLIP tower only.
            **kwargs: ``TimmEncoder`` arguments for both towers (``embed_dim=32, depth=2, num_heads=2``
                for a tiny model).
        """
        towers = [
            TimmEncoder(
                name,
                image_size=image_size,
                feature_layer=feature_layer,
                norm=False,
                pretrained=pretrained,
                **{**kwargs, **(extra or {})},
            )
            for name, extra in ((dino, dino_kwargs), (siglip, siglip_kwargs))
        ]
        return cls(towers)
