"""``HFVisionLanguageBackbone``: a ``transformers`` image-text-to-text VLM as a flowvla backbone.

The wrapper owns the model, its tokenizer and the pixel normalisation. Per call it builds one prompt
per sample from a template (the family's layout,
[`flowvla.backbones.hf_adapters`][flowvla.backbones.hf_adapters]), expands each view's ``<image>`` placeholder
to the image-token slots with [`MultimodalProcessor`][flowvla.processing.multimodal.MultimodalProcessor]
(which checks the counts), normalises the pixels with the image processor's mean / std (never resizing: a
wrong size is an error), and runs the inner VLM (``model.model``, no LM head) with:

- **every hidden state** of the language model, captured at the decoder layers: ``hidden_states[i]``
  is the residual stream after ``i`` layers (``[0]`` the embedding output, image features already
  in place). The last one is *not* passed through the final norm unless ``final_norm=True``, so a
  model truncated to ``k`` layers returns exactly the first ``k + 1`` states of the full one.
  Padding positions are zeroed (they hold no information, and garbage there must not leak into
  downstream masked attention as NaN * 0);
- **a visual hook** as a forward pre-hook on the family's projector (installed for the call only):
  the projector's input (e.g. ``[B * V, N, Dv]``, or Qwen's windows of merge units) is regrouped to
  ``[B, V * N, Dv]`` (view, patch row, patch column; a CLS token kept aside), passed through the
  hook, and put back in the projector's order before the projection;
- **positions over the real tokens only** (counted from the attention mask, or the model's own
  M-RoPE for Qwen), so left padding does not shift a sample's positions: results are
  padding-invariant up to float rounding.

Legend: ``B`` batch, ``V`` views, ``N`` patches per view, ``T`` tokens, ``D`` LM width, ``Dv``
visual width.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from flowvla.backbones.base import BackboneOutput, VisionLanguageBackbone, VisualHook, images_to_float
from flowvla.backbones.hf_adapters import HFAdapter, adapter_for
from flowvla.extras import requires_extra
from flowvla.geometry import PatchGrid
from flowvla.processing import MultimodalProcessor
from flowvla.processing.tokenizers import load_tokenizer, save_tokenizer
from flowvla.typing import Float, Shaped, Tensor, typechecked

__all__ = ["HFVisionLanguageBackbone"]

#: Wrapper settings saved next to the model by ``HFVisionLanguageBackbone.save_pretrained``.
SETTINGS_FILE = "flowvla_backbone.json"
#: Where ``HFVisionLanguageBackbone.save_tokenizer`` writes (the policy's checkpoint layout).
TOKENIZER_DIR = "tokenizer"
_PADDING_SIDES = ("left", "right")
# from_pretrained keyword arguments that also apply to loading the tokenizer / image processor.
_HUB_KWARGS = ("revision", "cache_dir", "local_files_only", "token", "trust_remote_code", "subfolder")


def _split_processor(processor_or_tokenizer: Any, image_processor: Any) -> tuple[Any, Any]:
    """``(tokenizer, image_processor)`` from a multimodal processor or a bare tokenizer."""
    tokenizer = getattr(processor_or_tokenizer, "tokenizer", None)
    if tokenizer is None:
        return processor_or_tokenizer, image_processor
    return tokenizer, image_processor or getattr(processor_or_tokenizer, "image_processor", None)


def _mean_std(image_processor: Any, image_mean: Any, image_std: Any) -> tuple[list[float], list[float]]:
    if (image_mean is None) != (image_std is None):
        raise ValueError("image_mean, image_std: give both or neither")
    if image_mean is None:
        if image_processor is None:
            raise ValueError(
                "image_processor: none given and no image_mean / image_std; the backbone needs the model's "
                "pixel normalisation (pass the processor, its image_processor, or image_mean and image_std)"
            )
        if getattr(image_processor, "do_normalize", True) is False:
            image_mean, image_std = [0.0] * 3, [1.0] * 3
        else:
            image_mean, image_std = image_processor.image_mean, image_processor.image_std
    mean = [float(x) for x in ([image_mean] * 3 if isinstance(image_mean, (int, float)) else image_mean)]
    std = [float(x) for x in ([image_std] * 3 if isinstance(image_std, (int, float)) else image_std)]
    if len(mean) != 3 or len(std) != 3 or min(std) <= 0:
        raise ValueError(f"image_mean, image_std: need 3 values each and std > 0, got {mean} and {std}")
    return mean, std


def _get(module: nn.Module, path: str) -> Any:
    for name in path.split("."):
        module = getattr(module, name, None)
    return module


def _truncate_config(config: Any, k: int) -> None:
    """A text config for the first ``k`` decoder layers (per-layer entries cut to match)."""
    if getattr(config, "layer_types", None) is not None:
        config.layer_types = list(config.layer_types)[:k]
    config.num_hidden_layers = k


def _truncate_language_model(language: nn.Module, configs: Sequence[Any], k: int) -> None:
    """Keep the first ``k`` decoder layers (and the per-layer config entries that go with them)."""
    n = len(language.layers)
    if not 1 <= k <= n:
        raise ValueError(f"num_lm_layers: must lie in [1, {n}] for this language model, got {k}")
    language.layers = nn.ModuleList(list(language.layers)[:k])
    for config in configs:
        _truncate_config(config, k)


class HFVisionLanguageBackbone(VisionLanguageBackbone):
    """A ``transformers`` image-text-to-text model as a
    [`VisionLanguageBackbone`][flowvla.backbones.base.VisionLanguageBackbone] (see module docs).

    Supported families (``config.model_type``): ``paligemma``, ``llava``, ``idefics3`` / ``smolvlm``,
    ``qwen2_vl``, ``qwen2_5_vl``; see ``flowvla.backbones.hf_adapters.ADAPTERS``.

    Args:
        model: the VLM, e.g. from ``AutoModelForImageTextToText`` (its ``.model`` is run, not the LM head).
        processor_or_tokenizer: the model's processor (tokenizer + image processor) or its tokenizer.
        image_processor: the image processor, when ``processor_or_tokenizer`` is a bare tokenizer.
        image_mean: per-channel pixel mean in ``[0, 1]`` units, overriding the image processor's.
        image_std: per-channel pixel std, overriding the image processor's.
        prompt_template: ``str.format`` template with ``{bos}``, ``{images}``, ``{instruction}``
            (default: the family's layout).
        padding_side: ``"left"`` or ``"right"`` (default: the tokenizer's).
        image_size: ``(H, W)`` (or one int) for native-resolution towers (Qwen2-VL, Qwen2.5-VL);
            other families take it from the config, and a different value is an error.
        num_lm_layers: keep only the first ``k`` decoder layers of the language model (in place).
        freeze: a part name or names from
            [`parameter_groups`][flowvla.backbones.hf.HFVisionLanguageBackbone.parameter_groups] (or
            ``"all"``) to freeze.
        final_norm: pass the last hidden state through the LM's final norm.
    """

    def __init__(
        self,
        model: nn.Module,
        processor_or_tokenizer: Any,
        *,
        image_processor: Any = None,
        image_mean: Sequence[float] | float | None = None,
        image_std: Sequence[float] | float | None = None,
        prompt_template: str | None = None,
        padding_side: str | None = None,
        image_size: int | tuple[int, int] | None = None,
        num_lm_layers: int | None = None,
        freeze: str | Sequence[str] | None = None,
        final_norm: bool = False,
    ) -> None:
        super().__init__()
        self.adapter: HFAdapter = adapter_for(model.config)
        self.model = model
        tokenizer, image_processor = _split_processor(processor_or_tokenizer, image_processor)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        mean, std = _mean_std(image_processor, image_mean, image_std)
        self.register_buffer("pixel_mean", torch.tensor(mean).view(1, 1, 3, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std).view(1, 1, 3, 1, 1), persistent=False)

        config = model.config
        for path in (*self.adapter.vision, self.adapter.projector, self.adapter.language):
            if not isinstance(_get(self._inner, path), nn.Module):
                raise ValueError(f"model: expected a {self.adapter.name} model with `.model.{path}`")
        native = self.adapter.image_size(config)
        size = (image_size, image_size) if isinstance(image_size, int) else image_size
        size = None if size is None else tuple(int(x) for x in size)
        if native is None and size is None:
            raise ValueError(f"image_size: a {self.adapter.name} tower takes any size; choose one, e.g. 448")
        if native is not None and size is not None and size != tuple(native):
            raise ValueError(f"image_size: this {self.adapter.name} tower is built for {native}, got {size}")
        self.image_size = tuple(int(x) for x in (native or size))
        self.patch_grid = PatchGrid(self.image_size, int(config.vision_config.patch_size))
        self.hidden_size = int(config.get_text_config().hidden_size)
        self.visual_dim = int(self.adapter.visual_dim(config))
        self.tokens_per_image = int(self.adapter.tokens_per_image(config, self.patch_grid))
        if self.tokens_per_image < 1 or self.patch_grid.covered_fraction != (1.0, 1.0):
            raise ValueError(
                f"image_size: {self.image_size} does not tile into whole patches / merged tokens"
            )
        self.final_norm = final_norm

        # The image token is whatever id the model scatters features into; the tokenizer must agree.
        self.image_token_id = int(config.image_token_id)
        self.image_token = tokenizer.convert_ids_to_tokens(self.image_token_id)
        if not isinstance(self.image_token, str):
            raise ValueError(
                f"processor_or_tokenizer: the model's image token id {self.image_token_id} is not in it"
            )
        for token in self.adapter.required_tokens:
            token_id = tokenizer.convert_tokens_to_ids(token)
            if token_id is None or token_id == tokenizer.unk_token_id:
                raise ValueError(
                    f"processor_or_tokenizer: the {self.adapter.name} prompt needs the token {token!r}"
                )
        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError("processor_or_tokenizer: the tokenizer has neither a pad nor an eos token")
            tokenizer.pad_token = tokenizer.eos_token  # padded positions are masked; any id will do
        self.padding_side = padding_side or tokenizer.padding_side
        if self.padding_side not in _PADDING_SIDES:
            raise ValueError(f"padding_side: choose one of {_PADDING_SIDES}, got {self.padding_side!r}")
        self.prompt_template = prompt_template or self.adapter.prompt
        for field in ("{images}", "{instruction}"):
            if field not in self.prompt_template:
                raise ValueError(f"prompt_template: must contain {field}, got {self.prompt_template!r}")
        self.processor = MultimodalProcessor(tokenizer, self.tokens_per_image, image_token=self.image_token)

        # Last, once every argument is checked: truncation changes the model in place.
        if num_lm_layers is not None:
            configs = [self._language.config, config.get_text_config()]
            _truncate_language_model(self._language, configs, num_lm_layers)
        self.num_hidden_states = len(self._language.layers) + 1
        for part in [freeze] if isinstance(freeze, str) else list(freeze or ()):
            self.freeze(part)

    # -- construction ------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls, config: Any, tokenizer: Any, image_processor: Any = None, **kwargs: Any
    ) -> HFVisionLanguageBackbone:
        """A randomly initialised model of ``config`` (tests, training from scratch).

        Args:
            config: a ``transformers`` VLM config (e.g. ``PaliGemmaConfig``).
            tokenizer: its tokenizer (or a processor); must hold ``config.image_token_id``.
            image_processor: the image processor (or give ``image_mean`` / ``image_std`` in ``kwargs``).
            **kwargs: further [`HFVisionLanguageBackbone`][flowvla.backbones.hf.HFVisionLanguageBackbone]
                arguments.
        """
        with requires_extra("hf", "HFVisionLanguageBackbone"):
            from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_config(config)
        return cls(model, tokenizer, image_processor=image_processor, **kwargs)

    @classmethod
    def from_pretrained(
        cls, name_or_path: str | os.PathLike, *, processor: Any = None, **kwargs: Any
    ) -> HFVisionLanguageBackbone:
        """Load a VLM and its processor from the hub or a local directory.

        Settings saved by [`save_pretrained`][flowvla.backbones.hf.HFVisionLanguageBackbone.save_pretrained]
        are read back; explicit ``kwargs`` win. With ``num_lm_layers=k`` only the first ``k`` decoder layers
        are built and loaded (the checkpoint's other layers are skipped), so a truncated large model never
        occupies its full memory.

        Args:
            name_or_path: hub id or local directory.
            processor: a processor or tokenizer to use instead of loading one from ``name_or_path``.
            **kwargs: [`HFVisionLanguageBackbone`][flowvla.backbones.hf.HFVisionLanguageBackbone] arguments;
                the rest (``dtype``, ``revision``, ``local_files_only`` ...) go to
                ``AutoModelForImageTextToText.from_pretrained``.
        """
        with requires_extra("hf", "HFVisionLanguageBackbone.from_pretrained"):
            from transformers import (
                AutoConfig,
                AutoImageProcessor,
                AutoModelForImageTextToText,
                AutoProcessor,
                AutoTokenizer,
            )

        own = {
            "image_processor", "image_mean", "image_std", "prompt_template", "padding_side",
            "image_size", "num_lm_layers", "freeze", "final_norm",
        }  # fmt: skip
        settings_path = os.path.join(os.fspath(name_or_path), SETTINGS_FILE)
        settings = {}
        if os.path.isfile(settings_path):
            with open(settings_path) as f:
                settings = json.load(f)
        explicit = {k: kwargs.pop(k) for k in list(kwargs) if k in own}
        if "image_processor" in explicit and "image_mean" not in explicit:
            settings.pop("image_mean", None)  # a given image processor beats saved statistics
            settings.pop("image_std", None)
        settings.update(explicit)
        hub = {k: kwargs[k] for k in _HUB_KWARGS if k in kwargs}
        k = settings.get("num_lm_layers")
        if k is not None and "config" not in kwargs:
            config = AutoConfig.from_pretrained(name_or_path, **hub)
            if 1 <= k < config.get_text_config().num_hidden_layers:  # else the constructor names the error
                _truncate_config(config.get_text_config(), k)
            kwargs["config"] = config
        model = AutoModelForImageTextToText.from_pretrained(name_or_path, **kwargs)
        if processor is None:
            try:
                processor = AutoProcessor.from_pretrained(name_or_path, **hub)
            except (OSError, ValueError, TypeError, KeyError, ImportError):
                # No processor files, or a processor needing extras (torchvision for video): the
                # tokenizer is all the prompts need; pixels use the saved or loaded statistics.
                processor = AutoTokenizer.from_pretrained(name_or_path, **hub)
        _, image_processor = _split_processor(processor, settings.get("image_processor"))
        if image_processor is None and settings.get("image_mean") is None:
            image_processor = AutoImageProcessor.from_pretrained(name_or_path, **hub)
        settings["image_processor"] = image_processor
        return cls(model, processor, **settings)

    def _settings(self) -> dict[str, Any]:
        return {
            "prompt_template": self.prompt_template,
            "padding_side": self.padding_side,
            "image_size": list(self.image_size),
            "final_norm": self.final_norm,
            "image_mean": self.pixel_mean.flatten().tolist(),
            "image_std": self.pixel_std.flatten().tolist(),
        }

    def spec(self) -> dict[str, Any]:
        """A JSON-serialisable description of the architecture and settings (weights saved separately).

        ``kind`` is ``"hf"``; the (possibly truncated) model config is stored whole, so
        [`from_spec`][flowvla.backbones.hf.HFVisionLanguageBackbone.from_spec] rebuilds the same modules
        without the hub."""
        return {"kind": "hf", "model_config": self.model.config.to_dict(), **self._settings()}

    def save_tokenizer(self, directory: str | os.PathLike) -> None:
        """Write the tokenizer files under ``directory/tokenizer`` (read back by
        [`from_spec`][flowvla.backbones.hf.HFVisionLanguageBackbone.from_spec]).

        Args:
            directory: the checkpoint directory.
        """
        save_tokenizer(self.tokenizer, os.path.join(os.fspath(directory), TOKENIZER_DIR))

    @classmethod
    def from_spec(cls, spec: dict[str, Any], directory: str | os.PathLike) -> HFVisionLanguageBackbone:
        """Rebuild the architecture described by [`spec`][flowvla.backbones.hf.HFVisionLanguageBackbone.spec]
        (random weights; load a state dict after) with the tokenizer saved in ``directory`` by
        [`save_tokenizer`][flowvla.backbones.hf.HFVisionLanguageBackbone.save_tokenizer].

        Args:
            spec: the output of [`spec`][flowvla.backbones.hf.HFVisionLanguageBackbone.spec].
            directory: the checkpoint directory holding ``tokenizer/``.
        """
        with requires_extra("hf", "HFVisionLanguageBackbone.from_spec"):
            from transformers import AutoConfig, AutoModelForImageTextToText

        spec = dict(spec)
        if spec.pop("kind", "hf") != "hf":
            raise ValueError("spec: not an HFVisionLanguageBackbone spec (kind must be 'hf')")
        model_config = dict(spec.pop("model_config"))
        config = AutoConfig.for_model(model_config.pop("model_type"), **model_config)
        tokenizer = load_tokenizer(os.path.join(os.fspath(directory), TOKENIZER_DIR))
        model = AutoModelForImageTextToText.from_config(config)
        return cls(model, tokenizer, **spec)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Save the (possibly truncated) model, tokenizer, image processor and wrapper settings.

        Args:
            directory: target directory (created if needed);
                [`from_pretrained`][flowvla.backbones.hf.HFVisionLanguageBackbone.from_pretrained] reads it
                back.
        """
        os.makedirs(directory, exist_ok=True)
        self.model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        if self.image_processor is not None:
            self.image_processor.save_pretrained(directory)
        with open(os.path.join(directory, SETTINGS_FILE), "w") as f:
            json.dump(self._settings(), f, indent=2)

    # -- parts -------------------------------------------------------------------------------------

    @property
    def _inner(self) -> nn.Module:
        # ``*ForConditionalGeneration`` keeps the VLM (vision, projector, LM) in ``.model``.
        return getattr(self.model, "model", self.model)

    @property
    def _language(self) -> nn.Module:
        return _get(self._inner, self.adapter.language)

    def parameter_groups(self) -> dict[str, nn.Module]:
        """``{"vision": tower, "projector": projector, "language": LM (+ LM head)}`` for partial freezing."""
        language = [self._language]
        head = getattr(self.model, "lm_head", None)
        if isinstance(head, nn.Module):
            language.append(head)  # unused by forward; frozen with the LM so "all" means all
        vision = [_get(self._inner, path) for path in self.adapter.vision]
        return {
            "vision": vision[0] if len(vision) == 1 else nn.ModuleList(vision),
            "projector": _get(self._inner, self.adapter.projector),
            "language": nn.ModuleList(language),
        }

    # -- prompts -----------------------------------------------------------------------------------

    def prompts(self, instructions: Sequence[str], num_views: int) -> list[str]:
        """The prompt of each sample, with one ``<image>`` placeholder per view (before expansion).

        Args:
            instructions: one instruction per sample.
            num_views: ``V``, images per sample.
        """
        view = self.adapter.view_prefix + self.image_token + self.adapter.view_suffix
        bos = self.tokenizer.bos_token or ""
        return [
            self.prompt_template.format(bos=bos, images=view * num_views, instruction=text)
            for text in instructions
        ]

    def tokenize(self, instructions: Sequence[str], num_views: int) -> Any:
        """Prompts -> ``input_ids``, ``attention_mask`` and ``image_token_mask``, each ``[B, T]``.

        Every sample gets ``num_views * tokens_per_image`` image tokens (checked); special tokens
        come from the template only.

        Args:
            instructions: one instruction per sample.
            num_views: ``V``, images per sample.
        """
        if isinstance(instructions, str) or not all(isinstance(t, str) for t in instructions):
            raise TypeError("instructions: expected a sequence of strings, one per sample")
        return self.processor(
            self.prompts(instructions, num_views),
            num_views,
            add_special_tokens=False,
            padding_side=self.padding_side,
        )

    # -- forward -----------------------------------------------------------------------------------

    def _visual_hook(self, hook: VisualHook, batch: int, views: int):
        """A projector pre-hook running ``hook`` on the ``[B, V * N, Dv]`` patch tokens."""
        adapter, config, grid = self.adapter, self.model.config, self.patch_grid

        def pre_hook(module: nn.Module, args: tuple) -> tuple:
            if not args:
                raise RuntimeError(f"{adapter.name}: the projector was called without positional tokens")
            patches = adapter.to_grid(args[0], batch, views, grid, config)
            fused = hook(patches)
            if not isinstance(fused, Tensor) or fused.shape != patches.shape:
                got = tuple(fused.shape) if isinstance(fused, Tensor) else type(fused).__name__
                raise ValueError(f"visual_hook: must return {tuple(patches.shape)}, got {got}")
            return (adapter.from_grid(args[0], fused, grid, config), *args[1:])

        return pre_hook

    @typechecked
    def forward(
        self,
        images: Shaped[Tensor, "B V 3 H W"],
        instructions: Sequence[str],
        *,
        visual_hook: VisualHook | None = None,
        visual_features: Float[Tensor, "B VN Dv"] | None = None,
    ) -> BackboneOutput:
        """Run the VLM; see [`BackboneOutput`][flowvla.backbones.base.BackboneOutput].

        Args:
            images: ``[B, V, 3, H, W]`` uint8, or float in ``[0, 1]``, at ``image_size``.
            instructions: ``B`` instruction strings.
            visual_hook: ``[B, V * N, Dv] -> [B, V * N, Dv]`` on the patch tokens before the projector.
            visual_features: ``[B, V * N, Dv]`` patch tokens that replace the vision tower's before the
                projector (the model's vision tower still runs: no compute is saved here).
        """
        self.check_images(images)
        batch, views = images.shape[:2]
        if visual_features is not None:
            expected = (batch, views * self.patch_grid.num_patches, self.visual_dim)
            self._check_visual_features(visual_features, expected, visual_hook)

            def visual_hook(patches: Tensor) -> Tensor:
                return visual_features.to(patches.dtype)

        if isinstance(instructions, str) or len(instructions) != batch:
            got = "a str" if isinstance(instructions, str) else f"{len(instructions)}"
            raise ValueError(f"instructions: expected {batch} strings (one per sample), got {got}")
        device = self.pixel_mean.device
        pixels = (images_to_float(images).to(device) - self.pixel_mean) / self.pixel_std
        vision = _get(self._inner, self.adapter.vision[0])
        pixels = pixels.to(next(vision.parameters()).dtype)

        enc = self.tokenize(instructions, views)
        input_ids = enc["input_ids"].to(device)
        attention_mask = enc["attention_mask"].to(device).bool()
        image_token_mask = input_ids == self.image_token_id
        extra = self.adapter.text_inputs(input_ids, attention_mask, image_token_mask, self.model.config)
        extra.update(self.adapter.pack_pixels(pixels, self.model.config))

        states: list[Tensor] = []
        layers = self._language.layers

        def record_input(module: nn.Module, args: tuple, kwargs: dict) -> None:
            states.append(args[0] if args else kwargs["hidden_states"])

        def record_output(module: nn.Module, args: tuple, output: Any) -> None:
            states.append(output[0] if isinstance(output, tuple) else output)

        handles = [layers[0].register_forward_pre_hook(record_input, with_kwargs=True)]
        handles += [layer.register_forward_hook(record_output) for layer in layers]
        if visual_hook is not None:
            projector = _get(self._inner, self.adapter.projector)
            handles.append(projector.register_forward_pre_hook(self._visual_hook(visual_hook, batch, views)))
        try:
            out = self._inner(
                input_ids=input_ids, attention_mask=attention_mask.long(), use_cache=False, **extra
            )
        finally:
            for handle in handles:
                handle.remove()
        if len(states) != self.num_hidden_states:
            raise RuntimeError(f"captured {len(states)} hidden states, expected {self.num_hidden_states}")
        if self.final_norm:
            states[-1] = out.last_hidden_state
        keep = attention_mask[..., None]
        return BackboneOutput(
            hidden_states=tuple(torch.where(keep, h, 0.0) for h in states),
            attention_mask=attention_mask,
            image_token_mask=image_token_mask,
            input_ids=input_ids,
            padding_side=self.padding_side,
        )
