"""A tiny policy and synthetic batches for the policy tests (CPU, seconds)."""

import torch

from flowvla.backbones.composed import ComposedBackbone
from flowvla.data.stats import FeatureStats
from flowvla.policy import FusionConfig, HeadConfig, PolicyConfig, RouterConfig, VLAPolicy

INSTRUCTIONS = ["open the drawer", "close the drawer", "pull open the drawer", "shut the drawer"]
H, A, S, V, IMG = 4, 7, 5, 2, 16


def tiny_backbone(seed: int = 0) -> ComposedBackbone:
    return ComposedBackbone.tiny(
        INSTRUCTIONS * 4,
        image_size=IMG,
        patch_size=8,
        vision_dim=16,
        lm_dim=32,
        lm_layers=2,
        vocab_size=300,
        seed=seed,
    )


def tiny_policy(router="fixed", fusion="none", stats=True, seed=0, **overrides) -> VLAPolicy:
    backbone = tiny_backbone(seed)
    router_cfg = RouterConfig(kind=router, layers="all" if router != "fixed" else "last", k=2, hidden_dim=16)
    settings = {
        "horizon": H,
        "action_dim": A,
        "state_dim": S,
        "num_views": V,
        "head": HeadConfig(dim=32, depth=2, num_heads=2),
        "router": router_cfg,
        "fusion": FusionConfig(kind=fusion, geo_dim=16, num_heads=2),
    }
    config = PolicyConfig(backbone=backbone.spec(), **{**settings, **overrides})
    g = torch.Generator().manual_seed(0)  # statistics describe the data, not the initialisation
    st = None
    if stats:
        st = {
            "actions": FeatureStats.from_array((torch.randn(64, A, generator=g) * 2 + 1).numpy()),
            "state": FeatureStats.from_array(torch.randn(64, S, generator=g).numpy()),
        }
    torch.manual_seed(seed)
    return VLAPolicy(config, backbone, st)


def shaped_tiny_policy(scale: float = 0.05, seed: int = 3, **overrides) -> VLAPolicy:
    """A tiny policy (`tiny_policy(**overrides)`) whose head has random weights everywhere: a fresh
    head's zeroed output layers give a trivial (zero) field, and a solver fitted to it or a student
    distilled from it learns nothing."""
    p = tiny_policy(**overrides)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in p.head.parameters():
            param.add_(scale * torch.randn(param.shape, generator=g))
    return p


def make_batch(b: int = 2, seed: int = 0, actions: bool = True, depth: bool = True) -> dict:
    g = torch.Generator().manual_seed(seed)
    batch = {
        "images": torch.randint(0, 256, (b, V, 3, IMG, IMG), generator=g, dtype=torch.uint8),
        "instruction": [INSTRUCTIONS[i % 2] for i in range(b)],
        "state": torch.randn(b, S, generator=g),
    }
    if depth:
        batch["depth"] = torch.rand(b, V, IMG, IMG, generator=g) + 0.5
    if actions:
        batch["actions"] = torch.randn(b, H, A, generator=g)
        batch["action_mask"] = torch.ones(b, H, dtype=torch.bool)
    return batch
