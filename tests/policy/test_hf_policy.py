"""The policy on wrapped transformers VLMs: one training step, predict_action, bit-exact save/load."""

import pytest
import torch

pytest.importorskip("transformers")

from flowvla.policy import FusionConfig, HeadConfig, PolicyConfig, RouterConfig, VLAPolicy
from tests.backbones.test_hf import CORPUS, SPECIAL, make_backbone, tiny_bpe


@pytest.mark.parametrize(
    "arch, fusion, router",
    [("paligemma", "gated", "scalar_mix"), ("smolvlm", "region", "topk"), ("qwen2_5_vl", "add", "fixed")],
)
def test_policy_on_a_wrapped_vlm(arch, fusion, router, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tokenizer = tiny_bpe(CORPUS, SPECIAL, vocab_size=320, bos_token="<bos>", eos_token="<eos>")
    backbone = make_backbone(arch, tokenizer)
    config = PolicyConfig(
        backbone=backbone.spec(),
        horizon=4,
        action_dim=7,
        state_dim=3,
        num_views=2,
        head=HeadConfig(dim=32, depth=2, num_heads=2),
        router=RouterConfig(kind=router, layers="last" if router == "fixed" else "all", hidden_dim=16),
        fusion=FusionConfig(kind=fusion, geo_dim=16, num_heads=2),
    )
    policy = VLAPolicy(config, backbone)
    h, w = backbone.image_size
    g = torch.Generator().manual_seed(0)
    batch = {
        "images": torch.randint(0, 256, (2, 2, 3, h, w), generator=g, dtype=torch.uint8),
        "instruction": ["pick up the bowl", "open the drawer"],
        "state": torch.randn(2, 3, generator=g),
        "depth": torch.rand(2, 2, h, w, generator=g) + 0.5,
        "actions": torch.randn(2, 4, 7, generator=g),
    }
    out = policy(batch)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    a, info = policy.predict_action(batch, seed=0, steps=2)
    assert a.shape == (2, 4, 7) and len(info["layer_rms"]) == backbone.num_hidden_states
    loaded = VLAPolicy.from_pretrained(policy.save_pretrained(tmp_path / "p"))
    assert torch.equal(a, loaded.predict_action(batch, seed=0, steps=2)[0])
