"""The LeRobot plugin (``integrations/lerobot``) against the real ``lerobot`` (0.4.4).

1. Installed, the plugin registers ``flowvla`` where ``lerobot-train`` / ``lerobot-eval`` look for
   policies, and LeRobot's factories build its config, policy and processors.
2. ``lerobot-train`` trains it for a few steps on a tiny LeRobot dataset written by flowvla's exporter
   and checkpoints it; LeRobot's own loading path (``make_policy`` + ``make_pre_post_processors`` from
   the checkpoint, what ``lerobot-eval`` runs) reads it back and its ``select_action`` loop runs; a
   second ``lerobot-train --resume`` continues from it.
3. A flowvla policy (with its own statistics, as the recipe trains it) exported to LeRobot's format
   comes back bit-exact, and the actions LeRobot executes, through its processors and action queue,
   are ``predict_action``'s chunk for the same seed.

CI runs this in the lerobot virtualenv (``.ci/run``, step "lerobot"), where nothing may skip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("lerobot")
pytest.importorskip("lerobot_policy_flowvla")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # every dataset and checkpoint here is local
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lerobot.configs.policies import PreTrainedConfig
from lerobot.configs.types import FeatureType, PolicyFeature
from lerobot.datasets.lerobot_dataset import LeRobotDataset
from lerobot.policies.factory import get_policy_class, make_policy, make_pre_post_processors
from lerobot.utils.import_utils import register_third_party_plugins
from lerobot_policy_flowvla import FlowVLAConfig, FlowVLAPolicy, export_policy, import_policy

from flowvla.backbones.composed import ComposedBackbone
from flowvla.data.lerobot_export import export_lerobot
from flowvla.data.stats import FeatureStats
from flowvla.policy import HeadConfig, PolicyConfig, VLAPolicy
from tests.data.helpers import BlockSource

REPO = "local/tiny"  # a name only: root= is always given
#: A policy small enough to train for a few steps in seconds (32 px views, 4-step chunks).
TINY = {
    "conv_channels": "[8,16]",
    "lm_dim": 32,
    "num_heads": 2,
    "head_dim": 32,
    "head_depth": 2,
    "head_num_heads": 2,
    "keypoints": 4,
    "vocab_size": 300,
    "chunk_size": 4,
    "n_action_steps": 2,
    "solver_steps": 2,
    "sampling_seed": 3,
}
VIEWS = ["observation.images.image", "observation.images.wrist_image"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lerobot") / "ds"
    export_lerobot(BlockSource([12, 9, 10], h=32, w=32, block=8), root, fps=10)
    return root


def lerobot_train(dataset: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    settings = [f"--policy.{k}={v}" for k, v in TINY.items()]
    cmd = [
        str(Path(sys.executable).with_name("lerobot-train")),
        "--policy.type=flowvla", "--policy.device=cpu", "--policy.push_to_hub=false", *settings,
        f"--dataset.repo_id={REPO}", f"--dataset.root={dataset}", "--dataset.video_backend=pyav",
        "--batch_size=2", "--num_workers=0", "--log_freq=1", "--eval_freq=0", "--wandb.enable=false",
        f"--output_dir={out}", *extra,
    ]  # fmt: skip
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": ""}
    )


def test_plugin_registers_where_lerobot_looks():
    register_third_party_plugins()
    assert "flowvla" in PreTrainedConfig.get_known_choices()
    assert get_policy_class("flowvla") is FlowVLAPolicy
    assert PreTrainedConfig.get_choice_class("flowvla") is FlowVLAConfig


@pytest.mark.parametrize(
    ("setting", "value", "named"),
    [("n_action_steps", 20, "n_action_steps"), ("vision", "resnet", "vision"),
     ("vocab_size", 100, "vocab_size"), ("fusion", "gated", "fusion"), ("head_dim", 30, "head_dim")],
)  # fmt: skip
def test_a_bad_setting_is_refused_by_name(setting, value, named):
    with pytest.raises(ValueError, match=rf"^policy\.{named}: expected"):
        FlowVLAConfig(device="cpu", **{setting: value})


def test_lerobot_train_checkpoints_and_lerobot_loads_and_runs_it(dataset, tmp_path):
    run = lerobot_train(dataset, tmp_path / "out", "--steps=3", "--save_freq=3")
    assert run.returncode == 0, run.stderr[-3000:]
    ckpt = tmp_path / "out" / "checkpoints" / "last" / "pretrained_model"
    assert (ckpt / "flowvla" / "model.safetensors").is_file()
    assert json.loads((ckpt / "config.json").read_text())["type"] == "flowvla"

    # What lerobot-eval does: config, policy and processors from the checkpoint.
    cfg = PreTrainedConfig.from_pretrained(ckpt)
    cfg.pretrained_path = ckpt
    ds = LeRobotDataset(REPO, root=dataset, video_backend="pyav")
    policy = make_policy(cfg, ds_meta=ds.meta)
    pre, post = make_pre_post_processors(cfg, pretrained_path=str(ckpt))
    trained = import_policy(ckpt)
    for name, value in trained.state_dict().items():  # the weights lerobot-train wrote are what runs
        assert torch.equal(policy.vla.state_dict()[name], value), name
    policy.reset()
    item = ds[0]
    obs = {k: item[k] for k in (*VIEWS, "observation.state")} | {"task": item["task"]}
    actions = [post(policy.select_action(pre(obs))) for _ in range(3)]
    assert all(a.shape == (1, 7) and torch.isfinite(a).all() for a in actions)

    resumed = lerobot_train(
        dataset, tmp_path / "out", "--steps=4", "--save_freq=4", "--resume=true",
        f"--config_path={ckpt / 'train_config.json'}",
    )  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert (tmp_path / "out" / "checkpoints" / "000004" / "pretrained_model" / "flowvla").is_dir()


def recipe_like_policy() -> VLAPolicy:
    """A flowvla policy as flowvla's recipe builds it: its own action and state statistics."""
    torch.manual_seed(0)
    backbone = ComposedBackbone.tiny(
        ["pick block 0", "pick block 1"], image_size=32, vision="conv", patch_size=4, vision_dim=16,
        conv_channels=[8, 16], lm_dim=32, lm_layers=1, num_heads=2, vocab_size=300,
    )  # fmt: skip
    config = PolicyConfig(
        backbone=backbone.spec(), horizon=4, action_dim=7, state_dim=8, num_views=2, keypoints=4,
        solver="euler", steps=3, head=HeadConfig(dim=32, depth=2, num_heads=2),
        action_normalization="mean_std",
    )  # fmt: skip
    rng = np.random.default_rng(0)
    stats = {
        "actions": FeatureStats.from_array(rng.normal(0.5, 2.0, (200, 7)).astype(np.float32)),
        "state": FeatureStats.from_array(rng.normal(-1.0, 0.5, (200, 8)).astype(np.float32)),
    }
    vla = VLAPolicy(config, backbone, stats)
    # The head's output layer starts at zero (a fresh policy returns its noise whatever it sees):
    # perturb every weight, so the actions depend on each view, the state and the words.
    with torch.no_grad():
        for p in vla.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    return vla


def test_a_flowvla_policy_goes_to_lerobot_and_back_bit_exact(tmp_path):
    vla = recipe_like_policy()
    export_policy(vla, tmp_path / "ckpt", image_keys=VIEWS, n_action_steps=3, sampling_seed=7)
    loaded = FlowVLAPolicy.from_pretrained(tmp_path / "ckpt")
    back = import_policy(tmp_path / "ckpt")
    ours = vla.state_dict()
    for other in (loaded.vla.state_dict(), back.state_dict()):
        assert other.keys() == ours.keys()
        assert all(torch.equal(other[k], ours[k]) for k in ours)
    assert back.stats.keys() == vla.stats.keys()

    # LeRobot's side: processors from the checkpoint, the action queue, one action per step.
    register_third_party_plugins()
    cfg = PreTrainedConfig.from_pretrained(tmp_path / "ckpt")
    pre, post = make_pre_post_processors(cfg, pretrained_path=str(tmp_path / "ckpt"))
    g = torch.Generator().manual_seed(1)
    obs = {k: torch.rand(3, 32, 32, generator=g) for k in VIEWS}
    obs |= {"observation.state": torch.randn(8, generator=g), "task": "pick block 1"}
    loaded.reset()
    executed = torch.cat([post(loaded.select_action(pre(obs))) for _ in range(3)])
    batch = {
        "images": torch.stack([obs[k] for k in VIEWS])[None],
        "instruction": ["pick block 1"],
        "state": obs["observation.state"][None],
    }
    chunk, _ = vla.predict_action(batch, seed=7)
    assert torch.equal(executed, chunk[0, :3])


def test_views_of_another_size_are_resized_to_the_policys():
    """LeRobot's LIBERO env renders 256 px whatever the policy was trained on: a view at twice the
    size (each pixel a 2x2 block) acts exactly like the original."""
    vla = recipe_like_policy()
    config = FlowVLAConfig(
        device="cpu",
        chunk_size=4,
        n_action_steps=2,
        sampling_seed=0,
        input_features=export_features(vla),
        output_features={"action": PolicyFeature(type=FeatureType.ACTION, shape=(7,))},
    )
    policy = FlowVLAPolicy(config, vla=vla)
    g = torch.Generator().manual_seed(2)
    small = {k: torch.rand(1, 3, 32, 32, generator=g) for k in VIEWS}
    state = {"observation.state": torch.randn(1, 8, generator=g), "task": ["pick block 0"]}
    big = {k: v.repeat_interleave(2, -1).repeat_interleave(2, -2) for k, v in small.items()}
    chunk = policy.predict_action_chunk(big | state)
    assert chunk.shape == (1, 4, 7)
    assert torch.allclose(chunk, policy.predict_action_chunk(small | state), atol=1e-6)


def test_mirrored_views_act_as_flowvlas_upright_views(tmp_path):
    """LeRobot's LIBERO env hands the policy LIBERO's renders turned by 180 degrees: flowvla's upright
    view mirrored left-right. Exported with ``mirror_views``, the policy acts on such a view exactly as
    flowvla's policy acts on the upright one; the views really differ (the actions do without it)."""
    vla = recipe_like_policy()
    export_policy(vla, tmp_path / "ckpt", image_keys=VIEWS, sampling_seed=5, mirror_views=True)
    policy = FlowVLAPolicy.from_pretrained(tmp_path / "ckpt")
    assert policy.config.mirror_views
    g = torch.Generator().manual_seed(4)
    upright = {k: torch.rand(1, 3, 32, 32, generator=g) for k in VIEWS}
    state = torch.randn(1, 8, generator=g)
    lerobots = {k: v.flip(-1) for k, v in upright.items()} | {
        "observation.state": state,
        "task": ["pick block 0"],
    }
    batch = {
        "images": torch.stack([upright[k] for k in VIEWS], 1),
        "instruction": ["pick block 0"],
        "state": state,
    }
    ours, _ = vla.predict_action(batch, seed=5)
    assert torch.equal(policy.predict_action_chunk(lerobots), ours)
    policy.config.mirror_views = False
    assert not torch.allclose(policy.predict_action_chunk(lerobots), ours, atol=1e-4)


def export_features(vla: VLAPolicy) -> dict:
    inputs = {k: PolicyFeature(type=FeatureType.VISUAL, shape=(3, 32, 32)) for k in VIEWS}
    state = PolicyFeature(type=FeatureType.STATE, shape=(vla.config.state_dim,))
    return inputs | {"observation.state": state}
