"""Move a flowvla policy (e.g. one trained by flowvla's LIBERO recipe) into LeRobot's checkpoint format
and back, bit-exact.

    python -m lerobot_policy_flowvla.export RUN/checkpoint OUT \
        --views observation.images.image,observation.images.wrist_image

``OUT`` then loads with ``lerobot-eval --policy.path=OUT`` (and ``FlowVLAPolicy.from_pretrained``). The
policy keeps normalising with its own statistics, so LeRobot's processors are set to identity for the
state and the actions.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from lerobot.configs.types import FeatureType, NormalizationMode, PolicyFeature
from lerobot.utils.constants import ACTION, OBS_STATE

from flowvla.policy import VLAPolicy
from lerobot_policy_flowvla.configuration_flowvla import FlowVLAConfig
from lerobot_policy_flowvla.modeling_flowvla import FLOWVLA_DIR, FlowVLAPolicy
from lerobot_policy_flowvla.processor_flowvla import make_flowvla_pre_post_processors

__all__ = ["export_policy", "import_policy", "main"]


def export_policy(
    vla: VLAPolicy,
    out_dir: str | os.PathLike,
    *,
    image_keys: Sequence[str],
    n_action_steps: int = 8,
    sampling_seed: int | None = None,
    mirror_views: bool = False,
    device: str = "cpu",
) -> FlowVLAPolicy:
    """Write ``vla`` as a LeRobot checkpoint (config, flowvla folder, identity processors) in ``out_dir``.

    Args:
        vla: the flowvla policy.
        out_dir: the checkpoint folder (what ``--policy.path`` names).
        image_keys: LeRobot's name of each of the policy's ``V`` views, in the policy's order.
        n_action_steps: actions of each chunk LeRobot executes before predicting the next.
        sampling_seed: see [`FlowVLAConfig`][lerobot_policy_flowvla.FlowVLAConfig].
        mirror_views: see [`FlowVLAConfig`][lerobot_policy_flowvla.FlowVLAConfig]: ``True`` for a
            policy trained on flowvla's LIBERO renders that LeRobot's LIBERO environment will run.
        device: the device the checkpoint loads on by default.

    Returns:
        The wrapped policy, as LeRobot will load it.
    """
    c = vla.config
    if len(image_keys) != c.num_views:
        raise ValueError(f"image_keys: the policy reads {c.num_views} views, got {len(image_keys)} names")
    if c.fusion.kind != "none":
        raise ValueError(
            f"vla: its geometry branch ({c.fusion.kind!r}) reads depth maps, which LeRobot's batches "
            "do not carry"
        )
    size = vla.observation_settings()["image_size"]
    inputs = {k: PolicyFeature(type=FeatureType.VISUAL, shape=(3, size, size)) for k in image_keys}
    if c.state_dim:
        inputs[OBS_STATE] = PolicyFeature(type=FeatureType.STATE, shape=(c.state_dim,))
    config = FlowVLAConfig(
        device=device,
        chunk_size=c.horizon,
        n_action_steps=min(n_action_steps, c.horizon),
        normalization_mapping={
            "VISUAL": NormalizationMode.IDENTITY,
            "STATE": NormalizationMode.IDENTITY,
            "ACTION": NormalizationMode.IDENTITY,
        },
        keypoints=c.keypoints,
        use_state=bool(c.state_dim),
        head_dim=c.head.dim,
        head_depth=c.head.depth,
        head_num_heads=c.head.num_heads,
        state_conditioning=c.head.state_conditioning,
        router=c.router.kind,
        router_layers=str(c.router.layers),
        solver=c.solver,
        solver_steps=c.steps,
        sampling_seed=sampling_seed,
        mirror_views=mirror_views,
        input_features=inputs,
        output_features={ACTION: PolicyFeature(type=FeatureType.ACTION, shape=(c.action_dim,))},
        push_to_hub=False,
    )
    policy = FlowVLAPolicy(config, vla=vla)
    out = Path(out_dir)
    policy.save_pretrained(out)
    pre, post = make_flowvla_pre_post_processors(config)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    return policy


def import_policy(checkpoint: str | os.PathLike, *, device: str = "cpu") -> VLAPolicy:
    """The flowvla policy inside a LeRobot checkpoint (trained by ``lerobot-train`` or exported)."""
    inner = Path(checkpoint) / FLOWVLA_DIR
    if not inner.is_dir():
        raise FileNotFoundError(f"checkpoint: {checkpoint} holds no {FLOWVLA_DIR}/ folder")
    return VLAPolicy.from_pretrained(inner, device=device)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a flowvla policy as a LeRobot checkpoint.")
    parser.add_argument(
        "policy", help="a flowvla policy folder (VLAPolicy.save_pretrained, e.g. RUN/checkpoint)"
    )
    parser.add_argument("out", help="the LeRobot checkpoint folder to write")
    parser.add_argument("--views", required=True, help="LeRobot names of the policy's views, comma-separated")
    parser.add_argument("--n-action-steps", type=int, default=8)
    parser.add_argument(
        "--sampling-seed", type=int, default=None, help="seed of every chunk's noise (default: drawn)"
    )
    parser.add_argument(
        "--mirror-views",
        action="store_true",
        help="flip views left-right (for LeRobot's LIBERO env, which turns renders by 180 degrees)",
    )
    args = parser.parse_args(argv)
    try:
        vla = VLAPolicy.from_pretrained(args.policy)
        export_policy(
            vla,
            args.out,
            image_keys=args.views.split(","),
            n_action_steps=args.n_action_steps,
            sampling_seed=args.sampling_seed,
            mirror_views=args.mirror_views,
        )
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
