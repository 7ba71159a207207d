"""``VLAPolicy``: backbone -> (2D-3D fusion) -> layer router -> flow head, trained and sampled as one.

The only place where the components meet. Data flow for a batch (see
[`flowvla.data.batch`][flowvla.data.batch]):

1. [`check_batch`][flowvla.policy.checks.check_batch] validates every input before any compute.
2. The backbone reads images + instructions; if a geometry branch is configured, depth is
   back-projected to point maps, encoded to patch-aligned 3D tokens and fused into the visual
   tokens through the backbone's visual hook (before the projector).
3. The router turns the hidden states of every layer into one context per cross-attention block.
4. The head projects the contexts once ([`ContextCache`][flowvla.dit.head.ContextCache]) and either scores the
   flow-matching loss (``forward``) or integrates noise into an action chunk (``predict_action``).

Actions and state are normalised with the dataset statistics stored in the policy; predicted
actions are returned in the dataset's units.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from flowvla.backbones import BackboneOutput, VisionLanguageBackbone
from flowvla.backbones.keypoints import SpatialSoftmax
from flowvla.checks import MissingPathError
from flowvla.data.batch import ACTION_MASK, ACTIONS, DEPTH, EXTRINSICS, IMAGES, INSTRUCTION, INTRINSICS, STATE
from flowvla.data.stats import FeatureStats, Normalizer, load_stats, save_stats
from flowvla.dit import FlowActionHead
from flowvla.flow import FlowMatchingObjective, create_time_sampler
from flowvla.geometry import intrinsics_from_fovy, point_map_from_depth
from flowvla.io import write_json_atomic
from flowvla.policy.build import BACKBONES, create_geometry_branch
from flowvla.policy.checks import check_batch
from flowvla.policy.config import PolicyConfig
from flowvla.policy.debug import layer_rms, record_block_stats, sample_debug, token_signatures
from flowvla.routing import RoutedContexts, create_router
from flowvla.solvers import FittedGrid, Solver
from flowvla.typing import Float, Tensor, typechecked

__all__ = ["PolicyLosses", "VLAPolicy", "chunk_differences_penalty"]

CONFIG_FILE, WEIGHTS_FILE, STATS_FILE = "config.json", "model.safetensors", "stats.json"
EMA_WEIGHTS_FILE = "model_ema.safetensors"
TRAINER_STATE_FILE = "trainer_state.pt"
SYNONYM_KEY, OPPOSITE_KEY = "instruction_synonym", "instruction_opposite"


@dataclass(frozen=True)
class PolicyLosses:
    """Training losses of one batch (scalars; unused terms are 0).

    Attributes:
        loss: the total that is optimised.
        action: flow-matching loss on normalised actions.
        router_aux: the router's auxiliary (load-balancing) loss, unweighted.
        smoothness: squared 2nd differences of the predicted clean chunk, unweighted.
        jerk: squared 3rd differences, unweighted.
        synonym: distance between predicted chunks for an instruction and its paraphrase.
        contrast: hinge on the distance to the chunk predicted for the opposite instruction.
    """

    loss: Tensor
    action: Tensor
    router_aux: Tensor
    smoothness: Tensor
    jerk: Tensor
    synonym: Tensor
    contrast: Tensor

    def as_floats(self) -> dict[str, float]:
        """Every term as a Python float (for logging)."""
        return {k: float(v.detach()) for k, v in self.__dict__.items()}


def _register_losses_as_pytree() -> None:
    # FSDP2 (and torch.compile) find the output tensors of forward through torch's pytree: an
    # unregistered dataclass hides them, and FSDP2 then registers no pre-backward hook, so backward
    # runs on freed parameters and the processes fall out of step.
    from torch.utils import _pytree

    names = [f.name for f in dataclasses.fields(PolicyLosses)]
    _pytree.register_pytree_node(
        PolicyLosses,
        lambda x: ([getattr(x, n) for n in names], None),
        lambda values, _: PolicyLosses(*values),
        serialized_type_name="flowvla.policy.PolicyLosses",
    )


_register_losses_as_pytree()


@typechecked
def chunk_differences_penalty(
    chunk: Float[Tensor, "*R B H A"], order: int, mask: Tensor | None = None
) -> Float[Tensor, ""]:
    """Mean squared ``order``-th finite difference along the horizon (2: smoothness, 3: jerk), over
    differences whose steps are all valid (``mask`` ``[B, H]``)."""
    d = torch.diff(chunk, n=order, dim=-2)
    if d.shape[-2] == 0:
        return chunk.new_zeros(())
    if mask is None:
        return d.square().mean()
    valid = mask.unfold(-1, order + 1, 1).all(-1).to(d.dtype)  # [B, H - order]
    w = valid.unsqueeze(-1).expand_as(d)
    return (d.square() * w).sum() / w.sum().clamp_min(1)


@dataclass
class _Encoded:
    backbone: BackboneOutput
    routed: RoutedContexts
    mask: Tensor


class VLAPolicy(nn.Module):
    """The reference flow-matching VLA policy (see module docs).

    Args:
        config: the architecture and defaults; ``config.backbone`` must describe ``backbone``.
        backbone: the VLM.
        stats: dataset statistics ``{"actions": ..., "state": ...}`` for normalisation (identity if
            absent).
    """

    def __init__(
        self,
        config: PolicyConfig,
        backbone: VisionLanguageBackbone,
        stats: Mapping[str, FeatureStats] | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.backbone = backbone
        if config.freeze:
            backbone.freeze(config.freeze)
        h = config.head
        self.keypoints: SpatialSoftmax | None = None
        cond_dim = config.state_dim
        if config.keypoints:
            grid, width = getattr(backbone, "patch_grid", None), getattr(backbone, "visual_dim", None)
            if grid is None or width is None:
                raise ValueError(
                    f"config.keypoints={config.keypoints}: {type(backbone).__name__} exposes no patch grid "
                    "of visual features (patch_grid, visual_dim); use a ComposedBackbone or keypoints=0"
                )
            self.keypoints = SpatialSoftmax(
                grid.grid_size, width, config.keypoints, temperature=config.keypoint_temperature
            )
            cond_dim += config.num_views * config.keypoints * 2
        self.head = FlowActionHead(
            config.action_dim,
            config.horizon,
            backbone.hidden_size,
            dim=h.dim,
            depth=h.depth,
            num_heads=h.num_heads,
            block_pattern=h.block_pattern,
            state_dim=cond_dim or None,
            state_conditioning=h.state_conditioning,
            num_future_tokens=h.num_future_tokens,
            positions=h.positions,
            mlp=h.mlp,
            mlp_ratio=h.mlp_ratio,
            qk_norm=h.qk_norm,
            dropout=h.dropout,
            step_conditioning=h.step_conditioning,
        )
        r = config.router
        self.router = create_router(
            r.kind,
            backbone.num_hidden_states,
            self.head.num_context_slots,
            backbone.hidden_size,
            layers=r.layers,
            k=r.k,
            temperature=r.temperature,
            hidden_dim=r.hidden_dim,
        )
        self.geometry_encoder: nn.Module | None = None
        self.fusion: nn.Module | None = None
        if config.fusion.kind != "none":
            self.geometry_encoder, self.fusion = create_geometry_branch(
                config.fusion, backbone, config.num_views
            )
        self.objective = FlowMatchingObjective(
            create_time_sampler(config.loss.time_sampler), config.loss.repeats
        )
        self.stats: dict[str, FeatureStats] = dict(stats or {})
        # Which weights file from_pretrained loaded (model.safetensors or model_ema.safetensors).
        self.loaded_weights: str | None = None
        self._normalizers = {
            key: Normalizer(self.stats[key], mode)
            for key, mode in (("actions", config.action_normalization), ("state", config.state_normalization))
            if key in self.stats and mode != "none"
        }

    # ---- inputs ---------------------------------------------------------------------------------

    def check_batch(self, batch: Mapping[str, Any], *, training: bool = False) -> int:
        """Validate ``batch`` (see [`check_batch`][flowvla.policy.checks.check_batch]); returns ``B``."""
        c = self.config
        return check_batch(
            batch,
            num_views=c.num_views,
            image_size=tuple(self.backbone.image_size),
            state_dim=c.state_dim,
            truncate_state=c.truncate_state,
            horizon=c.horizon,
            action_dim=c.action_dim,
            needs_depth=self.fusion is not None,
            training=training,
        )

    def _device(self) -> torch.device:
        return next(self.head.parameters()).device

    def _state(self, batch: Mapping[str, Any]) -> Tensor | None:
        if not self.config.state_dim:
            return None
        state = batch[STATE].to(self._device(), torch.float32)[:, : self.config.state_dim]
        if "state" in self._normalizers:
            state = self._normalizers["state"].normalize(state)
        pad = self.config.state_dim - state.shape[1]
        return torch.nn.functional.pad(state, (0, pad)) if pad else state

    def _conditioning(self, state: Tensor | None, enc: _Encoded) -> Tensor | None:
        """The head's conditioning vector: the state, then the keypoints of every view (if any)."""
        if self.keypoints is None:
            return state
        features = enc.backbone.visual_features
        if features is None:
            raise RuntimeError("config.keypoints: the backbone returned no visual_features")
        b, views = features.shape[0], self.config.num_views
        points = self.keypoints(features.reshape(b * views, -1, features.shape[-1])).reshape(b, -1)
        return points.float() if state is None else torch.cat([state, points.to(state.dtype)], -1)

    def _geometry_hook(self, batch: Mapping[str, Any], timings: dict[str, float] | None = None):
        start = time.perf_counter()
        device = self._device()
        depth = batch[DEPTH].to(device, torch.float32)
        b, v, height, width = depth.shape
        intrinsics = batch.get(INTRINSICS)
        if intrinsics is None:  # the seed's fallback: a nominal pinhole camera
            intrinsics = intrinsics_from_fovy(self.config.fusion.fallback_fovy, height, width, device=device)
            intrinsics = intrinsics.expand(b, v, 3, 3)
        extrinsics = batch.get(EXTRINSICS)
        points = point_map_from_depth(
            depth,
            intrinsics.to(device, torch.float32),
            None if extrinsics is None else extrinsics.to(device, torch.float32),
            depth_kind=self.config.fusion.depth_kind,
            far=self.config.fusion.far,
        )
        geometry = self.geometry_encoder(points.points, points.valid)
        spent = time.perf_counter() - start

        def hook(visual: Tensor) -> Tensor:
            t0 = time.perf_counter()
            fused = self.fusion(visual, geometry.tokens.to(visual.dtype), geometry.mask)
            if timings is not None:
                timings["geometry_and_fusion"] = spent + time.perf_counter() - t0
            return fused

        return hook

    def _prefix_dropout(self, mask: Tensor, image_mask: Tensor) -> Tensor:
        p_img, p_txt = self.config.image_token_dropout, self.config.language_token_dropout
        if not self.training or (p_img == 0 and p_txt == 0):
            return mask
        p = torch.where(image_mask, p_img, p_txt)
        keep = torch.rand(mask.shape, device=mask.device) >= p
        dropped = mask & keep
        # A sample must keep at least one token for the head to attend to.
        return torch.where(dropped.any(-1, keepdim=True), dropped, mask)

    def _encode(
        self,
        batch: Mapping[str, Any],
        instructions: Sequence[str] | None = None,
        timings: dict[str, float] | None = None,
        visual_features: Tensor | None = None,
    ) -> _Encoded:
        """Backbone + router on ``batch``; ``visual_features`` (an earlier encoding's, fused already)
        re-read the same images with other ``instructions`` without encoding them again."""
        hook = None
        if self.fusion is not None and visual_features is None:
            hook = self._geometry_hook(batch, timings)
        images = batch[IMAGES].to(self._device())
        t0 = time.perf_counter()
        text = list(instructions or batch[INSTRUCTION])
        out = self.backbone(images, text, visual_hook=hook, visual_features=visual_features)
        t1 = time.perf_counter()
        mask = self._prefix_dropout(out.attention_mask, out.image_token_mask)
        routed = self.router(out.hidden_states, mask)
        if timings is not None:
            timings["backbone"] = t1 - t0 - timings.get("geometry_and_fusion", 0.0)
            timings["routing"] = time.perf_counter() - t1
        return _Encoded(out, routed, mask)

    # ---- training -------------------------------------------------------------------------------

    @typechecked
    def forward(
        self,
        batch: Mapping[str, Any],
        *,
        noise: Float[Tensor, "*r b h a"] | None = None,
        t: Float[Tensor, "*r b"] | None = None,
    ) -> PolicyLosses:
        """Training losses for a batch with ``actions`` (and optionally ``action_mask``, and
        ``instruction_synonym`` / ``instruction_opposite`` for the consistency terms).

        ``noise`` ``[*R, B, H, A]`` and ``t`` ``[*R, B]`` fix the flow-matching draws (see
        [`FlowMatchingObjective.draw`][flowvla.flow.objective.FlowMatchingObjective.draw]); by default
        they are drawn from the global RNG.
        """
        self.check_batch(batch, training=True)
        device = self._device()
        noise = None if noise is None else noise.to(device, torch.float32)
        t = None if t is None else t.to(device, torch.float32)
        actions = batch[ACTIONS].to(device, torch.float32)
        if "actions" in self._normalizers:
            actions = self._normalizers["actions"].normalize(actions)
        action_mask = batch.get(ACTION_MASK)
        action_mask = None if action_mask is None else action_mask.to(device)
        enc = self._encode(batch)
        state = self._conditioning(self._state(batch), enc)
        cache = self.head.encode_context(enc.routed.contexts, enc.mask)
        fm = self.objective(
            self.head, actions, action_mask=action_mask, noise=noise, t=t, cache=cache, state=state
        )
        x_t, t = fm.path.x_t, fm.path.t
        one_minus_t = (1 - t)[..., None, None]
        clean = x_t + one_minus_t * fm.prediction  # the data prediction a_hat
        lc = self.config.loss
        zero = fm.loss.new_zeros(())
        smooth = chunk_differences_penalty(clean, 2, action_mask) if lc.smoothness_weight else zero
        jerk = chunk_differences_penalty(clean, 3, action_mask) if lc.jerk_weight else zero

        def clean_for(key: str) -> Tensor:
            # Same images, other words: the visual tokens (vision encoder and fusion) are shared, so
            # each consistency term costs a language-model pass, not a second image encoding.
            other = self._encode(batch, batch[key], visual_features=enc.backbone.visual_features)
            other_cache = self.head.encode_context(other.routed.contexts, other.mask)
            return x_t + one_minus_t * self.head(x_t, t, state=state, cache=other_cache)

        synonym = contrast = zero
        if lc.synonym_weight and SYNONYM_KEY in batch:
            synonym = (clean - clean_for(SYNONYM_KEY)).square().mean()
        if lc.contrast_weight and OPPOSITE_KEY in batch:
            dist = (clean - clean_for(OPPOSITE_KEY)).square().mean(dim=(-1, -2)).add(1e-8).sqrt()
            contrast = torch.relu(lc.contrast_margin - dist).square().mean()
        aux = enc.routed.aux_loss
        total = (
            fm.loss
            + self.config.router.aux_weight * aux
            + lc.smoothness_weight * smooth
            + lc.jerk_weight * jerk
            + lc.synonym_weight * synonym
            + lc.contrast_weight * contrast
        )
        return PolicyLosses(total, fm.loss, aux, smooth, jerk, synonym, contrast)

    # ---- inference ------------------------------------------------------------------------------

    def _sampling(
        self, solver: str | Solver | None, steps: int | None, grid: str | Sequence[float] | FittedGrid
    ) -> tuple[str | Solver, int, str | list[float]]:
        """Resolve ``predict_action``'s solver, step count and grid (names or times) against each other."""
        if isinstance(grid, FittedGrid):
            if solver is not None and solver != grid.solver:
                raise ValueError(
                    f"grid: fitted for solver {grid.solver!r}, but solver={solver!r} was asked for"
                )
            solver, grid = grid.solver, list(grid.times)
        if not isinstance(grid, str):
            times = [float(t) for t in grid]
            ok = len(times) >= 2 and times[0] == 0.0 and times[-1] == 1.0
            if not ok or any(b <= a for a, b in itertools.pairwise(times)):
                raise ValueError(f"grid: expected increasing times from 0.0 to 1.0, got {times}")
            if steps is not None and steps != len(times) - 1:
                raise ValueError(f"grid: {len(times) - 1} steps, but steps={steps} was asked for")
            steps, grid = len(times) - 1, times
        # A solver fitted for a fixed number of steps (a bespoke solver) brings its own.
        steps = steps or getattr(solver, "steps", None) or self.config.steps
        return solver or self.config.solver, steps, grid

    @staticmethod
    def sample_debug(debug_info: dict[str, Any], index: int) -> dict[str, Any]:
        """Sample ``index``'s part of a batched ``predict_action`` call's ``debug_info``, as a call with
        that sample alone reports it (see [`sample_debug`][flowvla.policy.debug.sample_debug])."""
        return sample_debug(debug_info, index, int(debug_info.get("batch_size", 1)))

    @torch.no_grad()
    @typechecked
    def predict_action(
        self,
        batch: Mapping[str, Any],
        *,
        solver: str | Solver | None = None,
        steps: int | None = None,
        grid: str | Sequence[float] | FittedGrid = "uniform",
        seed: int | Sequence[int] | None = None,
        diagnostics: bool = True,
        use_context_cache: bool = True,
    ) -> tuple[Float[Tensor, "B H A"], dict[str, Any]]:
        """Sample an action chunk per sample.

        Args:
            batch: images, instructions, state (+ depth / cameras for the geometry branch).
            solver: a solver name (default ``config.solver``) or a [`Solver`][flowvla.solvers.base.Solver]
                instance (e.g. a fitted [`BespokeSolver`][flowvla.solvers.bespoke.BespokeSolver]).
            steps: solver steps (default: the solver's own ``steps`` when it was fitted for a fixed
                number, else ``config.steps``).
            grid: where the steps fall: a grid name (see [`flowvla.solvers.grids`][flowvla.solvers.grids]),
                ``steps + 1`` explicit times from 0 to 1, or a
                [`FittedGrid`][flowvla.solvers.grid_fit.FittedGrid] (which also names its solver).
            seed: seeds the initial noise: the same batch and seed give the same actions. One seed
                per sample (a sequence of ``B``): each sample's noise is what a batch of one with its
                seed draws, so its actions do not depend on the rest of the batch (how a batched
                evaluation keeps each episode's actions as planned alone).
            diagnostics: compute the per-layer and per-block statistics of ``debug_info``.
            use_context_cache: project the context once (default); ``False`` re-projects it at every
                solver step, as heads without a cache do (for measuring the cache's effect).

        Returns:
            ``(actions [B, H, A]`` in the dataset's units, ``debug_info)``: ``token_signature``
            (per sample), ``padding`` (side, padded tokens per sample), ``layer_rms`` (per hidden
            layer), ``router_weights`` ``[B, K, L]`` as lists, ``dit_blocks`` (per block RMS of output
            and update), ``nfe``, ``solver``, ``steps``, ``seed`` and ``timings_s`` (``backbone``,
            ``geometry_and_fusion``, ``routing``, ``head`` with ``head_per_nfe``, ``total``); with
            ``config.keypoints``, ``keypoints`` ``[B, V, K, 2]`` (x, y in ``[-1, 1]``) as lists.
        """
        was_training = self.training
        self.eval()
        try:
            b = self.check_batch(batch)
            device = self._device()
            # One seed per sample: each sample's noise as a batch of one draws it.
            noise = None if seed is None or isinstance(seed, int) else self._noise_per_sample(seed, b, device)
            timings: dict[str, float] = {}
            t0 = time.perf_counter()
            enc = self._encode(batch, timings=timings)
            state = self._conditioning(self._state(batch), enc)
            t1 = time.perf_counter()
            generator = None
            if isinstance(seed, int):
                generator = torch.Generator(device=device).manual_seed(seed)
            solver, steps, grid = self._sampling(solver, steps, grid)
            blocks = record_block_stats(self.head.blocks) if diagnostics else _NullRecorder()
            with blocks as block_stats:
                solution = self.head.sample(
                    enc.routed.contexts,
                    enc.mask,
                    state,
                    solver=solver,
                    steps=steps,
                    grid=grid,
                    generator=generator,
                    noise=noise,
                    return_solution=True,
                    use_cache=use_context_cache,
                )
            timings["head"] = time.perf_counter() - t1
            actions = solution.x
            if "actions" in self._normalizers:
                actions = self._normalizers["actions"].unnormalize(actions)
            timings["total"] = time.perf_counter() - t0
            timings["head_per_nfe"] = timings["head"] / max(solution.nfe, 1)
            out = enc.backbone
            pads = (~out.attention_mask).sum(-1).tolist()
            info: dict[str, Any] = {
                "token_signature": token_signatures(out.input_ids, out.attention_mask, out.image_token_mask),
                "padding": {"side": out.padding_side, "padded_tokens": pads, "any": any(pads)},
                "image_tokens": out.image_token_mask.sum(-1).tolist(),
                "router_weights": enc.routed.weights.float().cpu().tolist(),
                "nfe": solution.nfe,
                "solver": solver if isinstance(solver, str) else type(solver).__name__,
                "steps": steps,
                "grid": grid,
                "seed": seed,
                "batch_size": b,
                "timings_s": timings,
            }
            if self.keypoints is not None:
                k = self.config.keypoints
                points = state[:, -self.config.num_views * k * 2 :].reshape(b, self.config.num_views, k, 2)
                info["keypoints"] = points.float().cpu().tolist()
            if diagnostics:
                info["layer_rms"] = layer_rms(out.hidden_states, out.attention_mask)
                info["dit_blocks"] = block_stats
            return actions, info
        finally:
            self.train(was_training)

    def _noise_per_sample(self, seeds: Sequence[int], batch: int, device: torch.device) -> Tensor:
        """``[B, H, A]`` initial noise, sample ``b``'s drawn as a batch of one seeded ``seeds[b]``."""
        seeds = [int(s) for s in seeds]
        if len(seeds) != batch:
            raise ValueError(f"seed: give one int or one per sample ({batch}), got {len(seeds)} seeds")
        shape = (1, self.head.horizon, self.head.action_dim)
        draws = [
            torch.randn(shape, generator=torch.Generator(device=device).manual_seed(s), device=device)
            for s in seeds
        ]
        return torch.cat(draws)

    def observation_settings(self) -> dict[str, Any]:
        """What a rollout must give this policy, as
        [`RolloutConfig`][flowvla.envs.rollout_config.RolloutConfig] fields: ``image_size`` (square
        renders at the backbone's size), ``depth`` (the geometry branch's input, when there is one)
        and ``state_dim`` (``None`` for a policy without a state)."""
        height, width = self.backbone.image_size
        if height != width:
            raise ValueError(f"backbone.image_size={(height, width)}: LIBERO renders square views")
        return {
            "image_size": int(height),
            "depth": self.fusion is not None,
            "state_dim": self.config.state_dim or None,
        }

    # ---- persistence ----------------------------------------------------------------------------

    @typechecked
    def save_pretrained(
        self,
        directory: str | os.PathLike,
        *,
        trainer_state: Mapping[str, Any] | None = None,
        state_dict: Mapping[str, Tensor] | None = None,
        ema_state_dict: Mapping[str, Tensor] | None = None,
    ) -> Path:
        """Write ``config.json``, ``model.safetensors``, ``stats.json`` and the tokenizer to ``directory``.

        Written to a temporary sibling first and swapped in by renames, so an interrupted save never
        leaves a half-written policy where a complete one was. ``trainer_state`` (optimizer, step,
        RNG states) is saved in the same directory (``trainer_state.pt``), so weights and training
        state always come from the same step.

        Args:
            directory: the policy directory.
            trainer_state: written as ``trainer_state.pt``.
            state_dict: the weights to write instead of this module's own (e.g. the full weights
                gathered from a sharded copy of this policy); same keys as ``self.state_dict()``.
            ema_state_dict: averaged weights, written beside the raw ones as
                ``model_ema.safetensors`` (same keys);
                [`from_pretrained`][flowvla.policy.policy.VLAPolicy.from_pretrained] loads them by default.
        """
        from safetensors.torch import save_model

        directory = Path(directory)
        tmp = directory.with_name(f".{directory.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        write_json_atomic(tmp / CONFIG_FILE, self.config.to_dict())
        if state_dict is None:
            save_model(self, str(tmp / WEIGHTS_FILE))
        else:
            self._write_weights(tmp / WEIGHTS_FILE, state_dict, "state_dict")
        if ema_state_dict is not None:
            self._write_weights(tmp / EMA_WEIGHTS_FILE, ema_state_dict, "ema_state_dict")
        if self.stats:
            save_stats(self.stats, tmp / STATS_FILE)
        self.backbone.save_tokenizer(tmp)
        if trainer_state is not None:
            torch.save(dict(trainer_state), tmp / TRAINER_STATE_FILE)
        old = directory.with_name(f".{directory.name}.old-{os.getpid()}")
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)
        return directory

    def _write_weights(self, path: Path, state_dict: Mapping[str, Tensor], argument: str) -> None:
        from safetensors.torch import save_file

        own = self.state_dict(keep_vars=True)  # the parameter objects themselves: ties share one
        if set(state_dict) != set(own):
            diff = sorted(set(state_dict) ^ set(own))[:5]
            raise ValueError(f"{argument}: its keys differ from the policy's state_dict, e.g. {diff}")
        # Write each tied tensor once, as safetensors.save_model does (load_model restores the ties).
        seen: set[int] = set()
        out: dict[str, Tensor] = {}
        for name, ref in own.items():
            if id(ref) in seen:
                continue
            seen.add(id(ref))
            out[name] = state_dict[name].detach().to("cpu").contiguous()
        save_file(out, str(path), metadata={"format": "pt"})

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike,
        *,
        device: str | torch.device = "cpu",
        weights: str = "auto",
    ) -> VLAPolicy:
        """Rebuild a policy saved by [`save_pretrained`][flowvla.policy.policy.VLAPolicy.save_pretrained]
        (no network; weights loaded strictly).

        Args:
            directory: a directory written by ``save_pretrained`` (e.g. a training checkpoint).
            device: where to load the weights.
            weights: ``"auto"`` loads the EMA weights (``model_ema.safetensors``) when the directory
                has them and the raw weights otherwise; ``"raw"`` / ``"ema"`` choose explicitly
                (``"ema"`` fails when there are none). The loaded file's name is kept in
                ``policy.loaded_weights``.
        """
        from safetensors.torch import load_model

        directory = Path(directory)
        if weights not in ("auto", "raw", "ema"):
            raise ValueError(f"weights: expected 'auto', 'raw' or 'ema', got {weights!r}")
        if not (directory / CONFIG_FILE).is_file():
            raise MissingPathError(
                f"{directory}: no {CONFIG_FILE} here; give a folder written by save_pretrained"
            )
        has_ema = (directory / EMA_WEIGHTS_FILE).is_file()
        if weights == "ema" and not has_ema:
            raise FileNotFoundError(
                f"weights='ema': no {EMA_WEIGHTS_FILE} in {directory} (trained without EMA?); use 'raw'"
            )
        weights_file = (
            EMA_WEIGHTS_FILE if weights == "ema" or (weights == "auto" and has_ema) else WEIGHTS_FILE
        )
        config = PolicyConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
        kind = config.backbone.get("kind")
        if kind not in BACKBONES:
            raise ValueError(f"config.backbone.kind: {kind!r} is not registered; known: {sorted(BACKBONES)}")
        backbone = BACKBONES[kind](config.backbone, directory)
        stats = load_stats(directory / STATS_FILE) if (directory / STATS_FILE).is_file() else None
        policy = cls(config, backbone, stats)
        load_model(policy, str(directory / weights_file), strict=True, device=str(device))
        policy.loaded_weights = weights_file
        return policy.to(device)

    def push_to_hub(self, repo_id: str, *, private: bool = True, token: str | None = None) -> str:
        """Upload the saved policy to the Hugging Face hub (needs ``huggingface_hub`` and network)."""
        import tempfile

        try:
            from huggingface_hub import HfApi
        except ImportError as e:
            raise ImportError("push_to_hub needs huggingface_hub: pip install huggingface_hub") from e
        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            folder = self.save_pretrained(Path(tmp) / "policy")
            api.upload_folder(repo_id=repo_id, folder_path=str(folder))
        return repo_id


class _NullRecorder:
    def __enter__(self) -> list:
        return []

    def __exit__(self, *exc: object) -> None:
        return None
