"""``FlowActionHead``: a DiT that maps noisy action chunks, the flow time and VLM context to a velocity.

Token sequence per sample: ``[state token?] [future tokens x F] [action tokens x H]``; the velocity
is read from the last ``H`` tokens. Blocks are adaLN-Zero DiT blocks
([`DiTBlock`][flowvla.dit.block.DiTBlock]); the cross-attention blocks each read one context (layerwise: block
``i`` its own VLM layer or routed mix, or one context shared by all).

The context does not change across solver steps, so
[`FlowActionHead.encode_context`][flowvla.dit.head.FlowActionHead.encode_context] projects it to keys/values
once (a [`ContextCache`][flowvla.dit.head.ContextCache]); every velocity evaluation then costs only the
action-token work. [`FlowActionHead.loss`][flowvla.dit.head.FlowActionHead.loss] and
[`FlowActionHead.sample`][flowvla.dit.head.FlowActionHead.sample] do this for you.

Legend: ``R`` repeats (time draws / samples sharing a context), ``B`` batch, ``H`` horizon,
``A`` action dim, ``S`` state dim, ``K`` cross-attention blocks, ``T`` context tokens, ``C`` context
width, ``D`` width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from flowvla.dit.attention import KeyValue
from flowvla.dit.block import DiTBlock, modulate
from flowvla.dit.embeddings import RotaryEmbedding, TimestepEmbedder
from flowvla.flow.objective import FlowMatchingLoss, FlowMatchingObjective
from flowvla.solvers.base import ODESolution, Solver
from flowvla.solvers.registry import integrate
from flowvla.typing import Bool, Float, Tensor, typechecked

__all__ = ["BLOCK_PATTERNS", "ContextCache", "FlowActionHead"]

#: Block layouts: every block self- and cross-attends; GR00T's alternation of cross-only and
#: self-only blocks (starting with cross); or cross-attention only.
BLOCK_PATTERNS = ("self_cross", "interleaved", "cross_only")
_STATE_MODES = ("token", "adaln", "both")
_POSITIONS = ("learned", "rope", "none")

Contexts = Float[Tensor, "B T C"] | Float[Tensor, "K B T C"] | Sequence[Float[Tensor, "B T C"]]


@dataclass(frozen=True)
class ContextCache:
    """Projected contexts of every block, computed once per observation and reused at every NFE.

    Attributes:
        kv: one [`KeyValue`][flowvla.dit.attention.KeyValue] per block (``None`` for self-only blocks).
        mask: ``[B, T]`` valid-token mask, or ``None`` when every token is valid.
        batch_size: ``B``.
    """

    kv: tuple[KeyValue | None, ...]
    mask: Tensor | None
    batch_size: int


def _block_kinds(pattern: str, depth: int) -> list[tuple[bool, bool]]:
    """``(self_attention, cross_attention)`` per block."""
    if pattern == "self_cross":
        return [(True, True)] * depth
    if pattern == "interleaved":
        return [(i % 2 == 1, i % 2 == 0) for i in range(depth)]
    if pattern == "cross_only":
        return [(False, True)] * depth
    raise ValueError(f"block_pattern: unknown pattern {pattern!r}; choose one of {BLOCK_PATTERNS}")


class FlowActionHead(nn.Module):
    """Cross-attention DiT action head for flow matching (see module docs).

    Args:
        action_dim: ``A``.
        horizon: ``H``, the chunk length (the most with ``positions="learned"``).
        context_dim: ``C``, width of the VLM hidden states it reads.
        dim: token width ``D``.
        depth: number of DiT blocks.
        num_heads: attention heads.
        block_pattern: one of ``BLOCK_PATTERNS``.
        state_dim: ``S``; enables the state encoder (``state`` is then required).
        state_conditioning: ``"token"`` (a state token in front), ``"adaln"`` (added to the time
            conditioning) or ``"both"``.
        num_future_tokens: learned tokens between the state token and the action tokens (GR00T).
        positions: ``"learned"`` absolute embeddings, ``"rope"`` (rotary, in self-attention) or
            ``"none"``.
        mlp: ``"gelu"`` or ``"swiglu"``.
        mlp_ratio: MLP hidden width over ``dim``.
        qk_norm: RMS-normalise queries and keys.
        context_norm: LayerNorm each block's context before projecting it (VLM layers differ in scale).
        dropout: dropout in attention outputs and MLPs.
        time_scale: multiplier of ``t`` in the sinusoidal time features.
        step_conditioning: also embed a step size ``d`` (added to the time conditioning; its last
            layer starts at zero, so the head starts as the same field for every ``d``): the head
            can then predict the average velocity over ``[t, t + d]``, a shortcut model's input
            (see [`distill_policy_shortcut`][flowvla.policy.shortcut_distill.distill_policy_shortcut]
            and the ``"shortcut"`` solver). ``d = 0`` (the default) is the instantaneous velocity.
    """

    def __init__(
        self,
        action_dim: int,
        horizon: int,
        context_dim: int,
        *,
        dim: int = 512,
        depth: int = 8,
        num_heads: int = 8,
        block_pattern: str = "self_cross",
        state_dim: int | None = None,
        state_conditioning: str = "token",
        num_future_tokens: int = 0,
        positions: str = "learned",
        mlp: str = "gelu",
        mlp_ratio: float = 4.0,
        qk_norm: bool = False,
        context_norm: bool = True,
        dropout: float = 0.0,
        time_scale: float = 1000.0,
        step_conditioning: bool = False,
    ) -> None:
        super().__init__()
        if min(action_dim, horizon, context_dim, dim, depth, num_heads) < 1:
            raise ValueError("action_dim, horizon, context_dim, dim, depth, num_heads: must all be >= 1")
        if state_conditioning not in _STATE_MODES:
            raise ValueError(f"state_conditioning: choose one of {_STATE_MODES}, got {state_conditioning!r}")
        if positions not in _POSITIONS:
            raise ValueError(f"positions: choose one of {_POSITIONS}, got {positions!r}")
        if num_future_tokens < 0:
            raise ValueError(f"num_future_tokens: must be >= 0, got {num_future_tokens}")
        self.action_dim, self.horizon, self.context_dim = action_dim, horizon, context_dim
        self.dim, self.state_dim, self.positions = dim, state_dim, positions
        self.state_conditioning = state_conditioning
        kinds = _block_kinds(block_pattern, depth)
        if not any(cross for _, cross in kinds):
            raise ValueError(f"block_pattern: {block_pattern!r} with depth={depth} has no cross-attention")
        self.block_pattern = block_pattern

        self.action_in = nn.Linear(action_dim, dim)
        self.time_embed = TimestepEmbedder(dim, scale=time_scale)
        self.step_embed: TimestepEmbedder | None = None
        uses_token = state_dim is not None and state_conditioning in ("token", "both")
        uses_adaln = state_dim is not None and state_conditioning in ("adaln", "both")
        self.state_in = nn.Linear(state_dim, dim) if uses_token else None
        self.state_cond = (
            nn.Sequential(nn.Linear(state_dim, dim), nn.SiLU(), nn.Linear(dim, dim)) if uses_adaln else None
        )
        self.future_tokens = nn.Parameter(torch.randn(num_future_tokens, dim) * 0.02)
        self.num_prefix_tokens = int(uses_token) + num_future_tokens
        max_tokens = self.num_prefix_tokens + horizon
        self.pos_embed = nn.Parameter(torch.randn(max_tokens, dim) * 0.02) if positions == "learned" else None
        self.rope = RotaryEmbedding(dim // num_heads) if positions == "rope" else None

        self.blocks = nn.ModuleList(
            DiTBlock(
                dim,
                num_heads,
                context_dim=context_dim if cross else None,
                self_attention=self_attn,
                mlp_ratio=mlp_ratio,
                mlp=mlp,
                qk_norm=qk_norm,
                dropout=dropout,
            )
            for self_attn, cross in kinds
        )
        self.context_norms = nn.ModuleList(
            nn.LayerNorm(context_dim) if (cross and context_norm) else nn.Identity() for _, cross in kinds
        )
        self.final_norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.final_adaLN = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.action_out = nn.Linear(dim, action_dim)
        self._init_weights()
        if step_conditioning:
            self.add_step_conditioning()

    def _init_weights(self) -> None:
        # DiT initialisation: xavier linears, then zero the adaLN modulations and the output layer
        # so a fresh head predicts zero velocity and every block starts as the identity.
        for module in self.modules():
            if isinstance(module, nn.Linear) and module not in self.time_embed.mlp:
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.zeros_(block.adaLN[1].weight)
            nn.init.zeros_(block.adaLN[1].bias)
        for layer in (self.final_adaLN[1], self.action_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def add_step_conditioning(self) -> None:
        """Give a head (e.g. a trained one, the teacher of a shortcut student) a step-size input.

        The new embedding's output layer is zero, so the head is the same field as before for
        every step size until it is trained; a head that has one already is an error.
        """
        if self.step_embed is not None:
            raise ValueError("this head already takes a step size (step_conditioning)")
        ref = self.time_embed.mlp[0].weight
        embed = TimestepEmbedder(self.dim, scale=self.time_embed.scale).to(ref.device, ref.dtype)
        nn.init.zeros_(embed.mlp[-1].weight)
        self.step_embed = embed

    @property
    def step_conditioning(self) -> bool:
        """Whether the head takes a step size (``forward(..., step=d)``)."""
        return self.step_embed is not None

    @property
    def num_context_slots(self) -> int:
        """``K``: the number of cross-attention blocks, i.e. of contexts the head reads."""
        return sum(block.has_cross_attention for block in self.blocks)

    @typechecked
    def encode_context(
        self, contexts: Contexts, context_mask: Bool[Tensor, "B T"] | None = None
    ) -> ContextCache:
        """Project the context(s) to each cross-attention block's keys/values, once.

        Args:
            contexts: one context ``[B, T, C]`` shared by every cross-attention block, or ``K`` of
                them (``[K, B, T, C]`` or a sequence of ``[B, T, C]``), block ``i``'s first.
            context_mask: ``[B, T]``, True on valid tokens; every sample needs at least one.
        """
        if isinstance(contexts, Tensor) and contexts.dim() == 3:
            per_slot: Sequence[Tensor] = [contexts] * self.num_context_slots
        else:
            per_slot = list(contexts)
            if len(per_slot) != self.num_context_slots:
                raise ValueError(
                    f"contexts: got {len(per_slot)} contexts, the head has {self.num_context_slots} "
                    "cross-attention blocks (pass one shared context or one per block)"
                )
        first = per_slot[0]
        if any(c.shape != first.shape for c in per_slot):
            shapes = [tuple(c.shape) for c in per_slot]
            raise ValueError(f"contexts: all contexts must share one shape, got {shapes}")
        if first.shape[-1] != self.context_dim:
            raise ValueError(
                f"contexts: width {first.shape[-1]}, the head expects context_dim={self.context_dim}"
            )
        if context_mask is not None:
            if context_mask.shape != first.shape[:2]:
                raise ValueError(
                    f"context_mask: shape {tuple(context_mask.shape)}, "
                    f"the contexts have [B, T] = {tuple(first.shape[:2])}"
                )
            if not bool(context_mask.any(dim=-1).all()):
                raise ValueError("context_mask: every sample needs at least one valid context token")
        kv: list[KeyValue | None] = []
        slot = iter(per_slot)
        for block, norm in zip(self.blocks, self.context_norms, strict=True):
            if block.cross_attn is None:
                kv.append(None)
                continue
            ctx = norm(next(slot))
            if context_mask is not None:
                # Padded tokens are never attended to; zeroing them keeps NaN/Inf padding out of
                # the attention matmul, where 0 * NaN would leak into valid outputs.
                ctx = torch.where(context_mask.unsqueeze(-1), ctx, 0.0)
            kv.append(block.cross_attn.project_context(ctx))
        return ContextCache(kv=tuple(kv), mask=context_mask, batch_size=first.shape[0])

    @typechecked
    def forward(
        self,
        noisy_actions: Float[Tensor, "*R B H A"],
        t: Float[Tensor, "*R B"] | Float[Tensor, ""],
        contexts: Contexts | None = None,
        context_mask: Bool[Tensor, "B T"] | None = None,
        state: Float[Tensor, "B S"] | None = None,
        *,
        cache: ContextCache | None = None,
        step: Float[Tensor, "*R B"] | Float[Tensor, ""] | None = None,
    ) -> Float[Tensor, "*R B H A"]:
        """Velocity of ``noisy_actions`` at flow time ``t``.

        Args:
            noisy_actions: ``x_t`` ``[*R, B, H, A]``; leading ``R`` dims are query sets (repeated
                time draws, several samples) that share each sample's context.
            t: flow times ``[*R, B]``, or one scalar time for all.
            contexts: see [`encode_context`][flowvla.dit.head.FlowActionHead.encode_context]; give either
                ``contexts`` or ``cache``.
            context_mask: ``[B, T]``, True on valid context tokens (with ``contexts``).
            state: ``[B, S]`` robot state, required iff the head was built with ``state_dim``.
            cache: the output of [`encode_context`][flowvla.dit.head.FlowActionHead.encode_context] (reused
                across solver steps).
            step: step sizes ``d`` ``[*R, B]`` (or one scalar), only for a head built with
                ``step_conditioning``: the average velocity over ``[t, t + d]``; ``None`` is ``d = 0``.

        Returns:
            The velocity, same shape and dtype as ``noisy_actions``.
        """
        cache = self._resolve_cache(contexts, context_mask, cache)
        *lead, b, h, a = noisy_actions.shape
        if b != cache.batch_size:
            raise ValueError(f"noisy_actions: batch {b}, the context's batch is {cache.batch_size}")
        if a != self.action_dim:
            raise ValueError(f"noisy_actions: action dim {a}, the head expects action_dim={self.action_dim}")
        if self.pos_embed is not None and h > self.horizon:
            raise ValueError(
                f"noisy_actions: horizon {h} exceeds the learned positions (horizon={self.horizon})"
            )
        self._check_state(state)
        dtype = self.action_in.weight.dtype
        x = noisy_actions.reshape(-1, b, h, a).to(dtype)
        r = x.shape[0]
        cond = self.time_embed(t.expand(*lead, b).reshape(r, b))
        if self.step_embed is not None:
            d = step if step is not None else t.new_zeros(())
            cond = cond + self.step_embed(d.expand(*lead, b).reshape(r, b))
        elif step is not None:
            raise ValueError(
                "step: this head was built without step_conditioning, so it takes no step size "
                "(distil a step-conditioned head with flowvla.policy.distill_policy_shortcut)"
            )
        if self.state_cond is not None:
            cond = cond + self.state_cond(state.to(dtype))
        tokens = self.action_in(x)
        prefix = []
        if self.state_in is not None:
            prefix.append(self.state_in(state.to(dtype))[None, :, None].expand(r, b, 1, self.dim))
        if self.future_tokens.shape[0]:
            prefix.append(self.future_tokens.expand(r, b, -1, -1))
        if prefix:
            tokens = torch.cat([*prefix, tokens], dim=2)
        n = tokens.shape[2]
        if self.pos_embed is not None:
            tokens = tokens + self.pos_embed[:n]
        rope = self.rope(n, dtype=tokens.dtype) if self.rope is not None else None
        for block, kv in zip(self.blocks, cache.kv, strict=True):
            tokens = block(tokens, cond, kv, cache.mask, rope)
        shift, scale = self.final_adaLN(cond).chunk(2, dim=-1)
        out = self.action_out(modulate(self.final_norm(tokens[:, :, -h:]), shift, scale))
        return out.reshape(noisy_actions.shape).to(noisy_actions.dtype)

    def _resolve_cache(
        self, contexts: Contexts | None, context_mask: Tensor | None, cache: ContextCache | None
    ) -> ContextCache:
        if (contexts is None) == (cache is None):
            raise ValueError("contexts, cache: give exactly one of them")
        if cache is not None:
            if context_mask is not None:
                raise ValueError("context_mask: the cache already holds its mask; pass it to encode_context")
            if len(cache.kv) != len(self.blocks):
                raise ValueError(f"cache: holds {len(cache.kv)} blocks, this head has {len(self.blocks)}")
            return cache
        return self.encode_context(contexts, context_mask)

    def _check_state(self, state: Tensor | None) -> None:
        if self.state_dim is None and state is not None:
            raise ValueError("state: this head was built without state_dim, so it takes no state")
        if self.state_dim is not None:
            if state is None:
                raise ValueError(f"state: required, the head was built with state_dim={self.state_dim}")
            if state.shape[-1] != self.state_dim:
                raise ValueError(f"state: dim {state.shape[-1]}, the head expects state_dim={self.state_dim}")

    @typechecked
    def loss(
        self,
        actions: Float[Tensor, "B H A"],
        contexts: Contexts | None = None,
        context_mask: Bool[Tensor, "B T"] | None = None,
        state: Float[Tensor, "B S"] | None = None,
        *,
        cache: ContextCache | None = None,
        action_mask: Bool[Tensor, "B H"] | Bool[Tensor, "B H A"] | None = None,
        objective: FlowMatchingObjective | None = None,
        generator: torch.Generator | None = None,
    ) -> FlowMatchingLoss:
        """Flow-matching loss of clean ``actions`` ``[B, H, A]`` given the context.

        The context is projected once even with ``objective.repeats > 1``: the repeated time draws
        are query sets over one cache. ``objective`` defaults to ``FlowMatchingObjective()``
        (Beta time sampling); ``action_mask`` marks valid steps / dims.
        """
        cache = self._resolve_cache(contexts, context_mask, cache)
        objective = objective if objective is not None else FlowMatchingObjective()
        return objective(
            self, actions, action_mask=action_mask, generator=generator, cache=cache, state=state
        )

    @typechecked
    def sample(
        self,
        contexts: Contexts | None = None,
        context_mask: Bool[Tensor, "B T"] | None = None,
        state: Float[Tensor, "B S"] | None = None,
        *,
        cache: ContextCache | None = None,
        horizon: int | None = None,
        num_samples: int | None = None,
        solver: str | Solver = "heun",
        steps: int = 10,
        grid: str | Tensor | Sequence[float] = "uniform",
        grid_kwargs: dict | None = None,
        generator: torch.Generator | None = None,
        noise: Float[Tensor, "*R B H A"] | None = None,
        return_solution: bool = False,
        use_cache: bool = True,
    ) -> Tensor | ODESolution:
        """Integrate the flow from Gaussian noise (``t = 0``) to action chunks (``t = 1``), without grad.

        Args:
            contexts: see [`encode_context`][flowvla.dit.head.FlowActionHead.encode_context] (or pass
                ``cache``).
            context_mask: ``[B, T]`` valid-token mask.
            state: ``[B, S]`` robot state.
            cache: a precomputed [`ContextCache`][flowvla.dit.head.ContextCache].
            horizon: chunk length (default: the head's ``horizon``).
            num_samples: draw this many chunks per context (output ``[num_samples, B, H, A]``);
                the samples share one context projection.
            solver: a registered solver name or a [`Solver`][flowvla.solvers.base.Solver].
            steps: solver steps on a named grid.
            grid: grid name or explicit times (see [`integrate`][flowvla.solvers.registry.integrate]).
            grid_kwargs: arguments of a named grid.
            generator: seeds the initial noise.
            noise: explicit initial noise (overrides ``generator``, ``num_samples``, ``horizon``).
            return_solution: return the full [`ODESolution`][flowvla.solvers.base.ODESolution] (NFE, ...).
            use_cache: project the context once (default); ``False`` re-projects ``contexts`` at every
                evaluation, as heads without a cache do (same result; for measuring the cache).

        Returns:
            Actions ``[B, H, A]`` (``[num_samples, B, H, A]``), or the solution.
        """
        with torch.no_grad():
            cache = self._resolve_cache(contexts, context_mask, cache)
            if use_cache:
                field, fn_kwargs = self, {"cache": cache, "state": state}
            elif contexts is None:
                raise ValueError("use_cache: False needs contexts (a cache cannot be re-projected)")
            else:
                field, fn_kwargs = (lambda x, t: self(x, t, contexts, context_mask, state)), {}
            if noise is None:
                lead = (num_samples,) if num_samples is not None else ()
                shape = (*lead, cache.batch_size, horizon or self.horizon, self.action_dim)
                device = self.action_in.weight.device
                noise = torch.randn(shape, generator=generator, device=device, dtype=torch.float32)
            solution = integrate(
                field, noise, solver=solver, steps=steps, grid=grid, grid_kwargs=grid_kwargs, **fn_kwargs
            )
        return solution if return_solution else solution.x
