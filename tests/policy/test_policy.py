"""The policy's contract: every module swap trains and predicts, determinism, save/load, bad inputs."""

import json
from pathlib import Path

import pytest
import torch

from flowvla.diagnostics import main as diagnostics_main
from flowvla.policy import BatchError, PolicyConfig, VLAPolicy, chunk_differences_penalty
from flowvla.policy.config import LossConfig
from flowvla.policy.debug import PER_SAMPLE_DEBUG
from tests.dit.helpers import randomize_
from tests.policy.helpers import IMG, A, H, S, V, make_batch, tiny_policy

ROUTERS = ["fixed", "scalar_mix", "sample_gated", "topk"]
FUSIONS = ["none", "global", "add", "concat", "gated", "region"]
SOLVERS = ["euler", "midpoint", "heun", "rk4", "ab2", "dpm++2m", "bosh3"]


def _step(policy, batch):
    opt = torch.optim.SGD([p for p in policy.parameters() if p.requires_grad], lr=1e-3)
    out = policy(batch)
    opt.zero_grad()
    out.loss.backward()
    opt.step()
    return out


@pytest.mark.parametrize("router", ROUTERS)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_every_router_and_fusion_trains_and_predicts(router, fusion):
    policy = tiny_policy(router=router, fusion=fusion)
    batch = make_batch(2)
    out = _step(policy, batch)
    assert torch.isfinite(out.loss)
    actions, info = policy.predict_action({k: v for k, v in batch.items() if k != "actions"}, seed=0, steps=2)
    assert actions.shape == (2, H, A) and torch.isfinite(actions).all()
    assert torch.tensor(info["router_weights"]).shape[:2] == (2, policy.head.num_context_slots)


@pytest.mark.parametrize("solver", SOLVERS)
def test_every_solver_predicts_with_its_nfe(solver):
    policy = tiny_policy()
    actions, info = policy.predict_action(make_batch(2, actions=False), solver=solver, steps=3, seed=1)
    assert actions.shape == (2, H, A) and info["solver"] == solver and info["nfe"] >= 3


def test_fusion_reads_the_geometry():
    policy = tiny_policy(fusion="add")
    randomize_(policy.head)  # a fresh head predicts zero velocity: outputs would ignore every input
    with torch.no_grad():  # leave the encoder's small init so the depth visibly matters
        for p in policy.geometry_encoder.parameters():
            p.mul_(50)
    batch = make_batch(2, actions=False)
    a, _ = policy.predict_action(batch, seed=0)
    b, _ = policy.predict_action({**batch, "depth": batch["depth"] * 2}, seed=0)
    assert not torch.allclose(a, b)
    # without intrinsics the fallback field of view is used; given ones are used when present
    k = torch.eye(3).expand(2, 2, 3, 3).clone()
    k[..., 0, 0] = k[..., 1, 1] = 30.0
    k[..., :2, 2] = 7.5
    c, _ = policy.predict_action({**batch, "intrinsics": k}, seed=0)
    assert not torch.allclose(a, c)


def test_predict_action_is_deterministic_with_a_seed_and_reports_debug_info():
    policy = tiny_policy(router="topk")
    batch = make_batch(3, actions=False)
    a, info = policy.predict_action(batch, seed=7)
    b, _ = policy.predict_action(batch, seed=7)
    c, _ = policy.predict_action(batch, seed=8)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len(info["token_signature"]) == 3 and info["token_signature"][0] == info["token_signature"][2]
    assert info["token_signature"][0] != info["token_signature"][1]  # different instructions
    assert len(info["layer_rms"]) == policy.backbone.num_hidden_states
    assert len(info["dit_blocks"]) == len(policy.head.blocks)
    assert all(block["calls"] == info["nfe"] for block in info["dit_blocks"])
    assert info["padding"]["side"] == "right" and info["image_tokens"] == [8, 8, 8]
    weights = torch.tensor(info["router_weights"])
    assert ((weights > 0).sum(-1) == 2).all()  # top-k: exactly k layers in eval
    assert set(info["timings_s"]) >= {"backbone", "routing", "head", "head_per_nfe", "total"}


def test_a_seed_per_sample_gives_each_sample_the_actions_it_gets_alone():
    # What lets a batched evaluation plan several episodes in one call as if each were planned alone.
    policy = tiny_policy(router="topk")
    batch = make_batch(3, actions=False)
    together, _ = policy.predict_action(batch, seed=[7, 7, 5])
    for i, seed in enumerate([7, 7, 5]):
        alone, _ = policy.predict_action({k: v[i : i + 1] for k, v in batch.items()}, seed=seed)
        torch.testing.assert_close(together[i : i + 1], alone, rtol=1e-5, atol=1e-6)
    shared, _ = policy.predict_action(batch, seed=7)
    assert not torch.allclose(shared[1:2], together[1:2])  # one int seed: one draw for the whole batch
    with pytest.raises(ValueError, match="seed: give one int or one per sample"):
        policy.predict_action(batch, seed=[7, 7])


def test_a_samples_part_of_a_batched_debug_info_is_what_the_sample_alone_reports():
    # The per-sample entries VLAPolicy declares are exactly the lists of one item per sample: a batched
    # evaluation records each episode's own, as if it had been planned alone.
    policy = tiny_policy(router="topk", keypoints=4)
    batch = make_batch(2, actions=False)
    _, together = policy.predict_action(batch, seed=[3, 4])
    for i, seed in enumerate([3, 4]):
        _, alone = policy.predict_action({k: v[i : i + 1] for k, v in batch.items()}, seed=seed)
        mine = VLAPolicy.sample_debug(together, i)
        per_sample = {
            k for k, v in alone.items() if isinstance(v, list) and len(v) == 1 and len(together[k]) == 2
        }
        assert per_sample == set(PER_SAMPLE_DEBUG) and alone["padding"] == mine["padding"]
        for key in per_sample:
            if isinstance(alone[key][0], str):
                assert mine[key] == alone[key]
            else:
                torch.testing.assert_close(
                    torch.tensor(mine[key]), torch.tensor(alone[key]), rtol=1e-4, atol=1e-5
                )
    assert VLAPolicy.sample_debug(alone, 0) is alone


def test_actions_are_returned_in_dataset_units():
    policy = tiny_policy()
    stats = policy.stats["actions"]
    a, _ = policy.predict_action(make_batch(4, actions=False), seed=0)
    # a fresh head predicts zero velocity, so samples stay at the noise; unnormalised, they centre
    # on the statistics' quantile midpoint, not on 0
    centre = (torch.tensor(stats.q01) + torch.tensor(stats.q99)) / 2
    assert (a.mean(dim=(0, 1)) - centre).abs().max() < (a - centre).abs().amax()


def test_save_load_round_trip_is_bit_exact(tmp_path):
    policy = tiny_policy(router="scalar_mix", fusion="gated")
    _step(policy, make_batch(2))  # leave the initialisation
    batch = make_batch(2, actions=False)
    a, _ = policy.predict_action(batch, seed=3)
    path = policy.save_pretrained(tmp_path / "policy")
    assert {"config.json", "model.safetensors", "stats.json", "tokenizer"} <= {p.name for p in path.iterdir()}
    loaded = VLAPolicy.from_pretrained(path)
    b, _ = loaded.predict_action(batch, seed=3)
    assert torch.equal(a, b)
    assert loaded.config == PolicyConfig.from_dict(json.loads(json.dumps(policy.config.to_dict())))
    for (n1, p1), (n2, p2) in zip(policy.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert n1 == n2 and torch.equal(p1, p2)
    # saving again over an existing directory replaces it atomically
    policy.save_pretrained(path)
    assert not list(tmp_path.glob(".policy.*"))


def test_from_pretrained_loads_ema_weights_by_default(tmp_path):
    policy = tiny_policy()
    raw = {k: v.clone() for k, v in policy.state_dict().items()}
    averaged = {k: v + 0.5 if v.is_floating_point() else v for k, v in raw.items()}
    path = policy.save_pretrained(tmp_path / "p", ema_state_dict=averaged)
    assert (path / "model_ema.safetensors").is_file()
    for weights, expected, file in (
        ("auto", averaged, "model_ema"),
        ("ema", averaged, "model_ema"),
        ("raw", raw, "model"),
    ):
        loaded = VLAPolicy.from_pretrained(path, weights=weights)
        assert loaded.loaded_weights == f"{file}.safetensors"
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in expected.items())
    plain = policy.save_pretrained(tmp_path / "plain")
    assert VLAPolicy.from_pretrained(plain).loaded_weights == "model.safetensors"
    with pytest.raises(FileNotFoundError, match=r"weights='ema': no model_ema\.safetensors"):
        VLAPolicy.from_pretrained(plain, weights="ema")
    with pytest.raises(ValueError, match="weights: expected 'auto', 'raw' or 'ema'"):
        VLAPolicy.from_pretrained(plain, weights="best")


def test_save_pretrained_writes_given_weights(tmp_path):
    policy = tiny_policy()
    given = {k: torch.zeros_like(v) for k, v in policy.state_dict().items()}
    loaded = VLAPolicy.from_pretrained(policy.save_pretrained(tmp_path / "p", state_dict=given))
    assert all(not v.any() for v in loaded.state_dict().values())
    with pytest.raises(ValueError, match="state_dict: its keys differ"):
        policy.save_pretrained(tmp_path / "q", state_dict={"nope": torch.zeros(1)})


def test_fixed_flow_draws_make_the_loss_split_invariant():
    # With the noise and times of a batch fixed, the loss of the whole batch is the mean of the
    # losses of its halves (all-valid masks): what lets training split a batch over processes.
    policy = tiny_policy().eval()
    batch = make_batch(4)
    noise, t = policy.objective.draw(4, H, A, generator=torch.Generator().manual_seed(0))
    whole = policy(batch, noise=noise, t=t)
    assert torch.equal(whole.loss, policy(batch, noise=noise, t=t).loss)
    halves = [
        policy({k: v[sl] for k, v in batch.items()}, noise=noise[sl], t=t[sl]).loss
        for sl in (slice(0, 2), slice(2, 4))
    ]
    assert torch.allclose(whole.loss, (halves[0] + halves[1]) / 2, atol=1e-6)


def test_config_round_trips_through_json():
    config = tiny_policy(router="topk", fusion="region").config
    again = PolicyConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ValueError, match="unknown keys"):
        PolicyConfig.from_dict({**config.to_dict(), "horizont": 3})


def test_frozen_backbone_gets_no_gradient():
    policy = tiny_policy(freeze="vision")
    policy(make_batch(2)).loss.backward()
    assert all(p.grad is None for p in policy.backbone.vision.parameters())
    assert any(p.grad is not None for p in policy.backbone.language_model.parameters())


def test_prefix_dropout_only_in_training_and_keeps_a_token():
    policy = tiny_policy(image_token_dropout=1.0, language_token_dropout=1.0)
    mask = torch.ones(2, 5, dtype=torch.bool)
    image = torch.tensor([[True, True, False, False, False]] * 2)
    policy.train()
    assert torch.equal(policy._prefix_dropout(mask, image), mask)  # dropping all would leave nothing
    policy.config.image_token_dropout = 0.5
    policy.config.language_token_dropout = 0.0
    torch.manual_seed(0)
    dropped = policy._prefix_dropout(mask[:1].expand(64, 5), image[:1].expand(64, 5))
    assert dropped[:, 2:].all() and 0.3 < dropped[:, :2].float().mean() < 0.7
    policy.eval()
    assert torch.equal(policy._prefix_dropout(mask, image), mask)


def test_smoothness_and_jerk_penalties():
    t = torch.linspace(0, 1, 8)[None, :, None].expand(2, 8, 3)
    assert chunk_differences_penalty(t, 2) < 1e-10  # a line has no curvature
    assert chunk_differences_penalty(t**2, 3) < 1e-10  # a parabola has no jerk
    assert chunk_differences_penalty(t**2, 2) > 0
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[:, 5:] = False
    wiggle = t.clone()
    wiggle[:, 6:] += 5.0  # only in the padding
    assert chunk_differences_penalty(wiggle, 2, mask) < 1e-10
    policy = tiny_policy(loss=LossConfig(smoothness_weight=1.0, jerk_weight=1.0))
    out = policy(make_batch(2))
    assert out.smoothness > 0 and out.jerk > 0
    assert out.loss > out.action


@pytest.mark.parametrize(
    "change, key",
    [
        (lambda b: b.pop("images"), "images"),
        (lambda b: b.pop("state"), "state"),
        (lambda b: b.pop("depth"), "depth"),
        (lambda b: b.update(images=b["images"][:, :1]), "images"),
        (lambda b: b.update(images=b["images"][..., :8]), "images"),
        (lambda b: b.update(images=b["images"].float() * 2), "images"),
        (lambda b: b.update(images=b["images"].to(torch.int32)), "images"),
        (lambda b: b.update(instruction=["open the drawer"]), "instruction"),
        (lambda b: b.update(instruction="open the drawer"), "instruction"),
        (lambda b: b.update(state=torch.randn(2, S + 2)), "state"),
        (lambda b: b["state"].__setitem__((0, 0), float("nan")), "state"),
        (lambda b: b.update(intrinsics=torch.full((2, 2, 3, 3), float("inf"))), "intrinsics"),
        (lambda b: b.update(actions=torch.randn(2, H + 1, A)), "actions"),
        (lambda b: b["actions"].__setitem__((1, 0, 0), float("inf")), "actions"),
        (lambda b: b.update(action_mask=torch.ones(2, H)), "action_mask"),
    ],
)
def test_bad_inputs_raise_before_any_compute(change, key, monkeypatch):
    policy = tiny_policy(fusion="add")
    monkeypatch.setattr(policy.backbone, "forward", lambda *a, **k: pytest.fail("backbone ran"))
    batch = make_batch(2)
    change(batch)
    with pytest.raises(BatchError, match=key):
        policy(batch)


def test_shorter_state_is_padded_and_longer_state_may_be_truncated():
    policy = tiny_policy(stats=False, truncate_state=True)
    batch = make_batch(2, actions=False)
    short = {**batch, "state": batch["state"][:, :3]}
    padded = {**batch, "state": torch.nn.functional.pad(batch["state"][:, :3], (0, S - 3))}
    assert torch.equal(policy.predict_action(short, seed=0)[0], policy.predict_action(padded, seed=0)[0])
    longer = {**batch, "state": torch.cat([batch["state"], torch.randn(2, 4)], 1)}
    assert torch.equal(policy.predict_action(longer, seed=0)[0], policy.predict_action(batch, seed=0)[0])


def test_diagnostics_cli_on_a_saved_policy(tmp_path, capsys):
    policy = tiny_policy()
    policy.save_pretrained(tmp_path / "p")
    torch.save(make_batch(2, actions=False), tmp_path / "batch.pt")
    rc = diagnostics_main(
        [
            "--policy",
            str(tmp_path / "p"),
            "--batch",
            str(tmp_path / "batch.pt"),
            "--out",
            str(tmp_path / "r.json"),
        ]
    )
    report = json.loads((tmp_path / "r.json").read_text())
    assert rc == 0 and report["baseline_l2"] == 0.0
    assert report["instructions"]["opposite"] == ["close the drawer", "open the drawer"]
    assert "baseline_l2" in capsys.readouterr().out


def test_context_cache_does_not_change_the_actions():
    policy = tiny_policy(router="scalar_mix", fusion="add")
    randomize_(policy.head)
    batch = make_batch(2, actions=False)
    a, info = policy.predict_action(batch, seed=0, solver="midpoint", steps=3)
    b, _ = policy.predict_action(batch, seed=0, solver="midpoint", steps=3, use_context_cache=False)
    torch.testing.assert_close(a, b)
    assert info["timings_s"]["geometry_and_fusion"] > 0


def test_push_to_hub_uploads_a_complete_saved_policy(monkeypatch):
    """No network here: a stand-in for huggingface_hub.HfApi records what would be uploaded."""
    hub = pytest.importorskip("huggingface_hub")
    seen = {}

    class RecordingApi:
        def __init__(self, token=None):
            seen["token"] = token

        def create_repo(self, repo_id, private, exist_ok):
            seen["repo"] = (repo_id, private, exist_ok)

        def upload_folder(self, repo_id, folder_path):
            seen["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            seen["loads"] = VLAPolicy.from_pretrained(folder_path).config

    monkeypatch.setattr(hub, "HfApi", RecordingApi)
    policy = tiny_policy()
    assert policy.push_to_hub("me/policy", token="t") == "me/policy"
    assert seen["repo"] == ("me/policy", True, True) and seen["token"] == "t"
    assert {"config.json", "model.safetensors", "stats.json", "tokenizer"} <= set(seen["files"])
    assert seen["loads"] == policy.config


def test_keypoints_are_a_second_path_from_pixels_to_the_head(tmp_path):
    k = 3
    policy = tiny_policy(keypoints=k)
    assert policy.head.state_dim == S + V * k * 2
    randomize_(policy.head)  # a fresh head's zero output would pass no gradient back
    out = policy(make_batch(2))
    out.loss.backward()
    assert policy.keypoints.proj.weight.grad.abs().sum() > 0  # the head's loss reaches the keypoints
    batch = make_batch(2, actions=False)
    a, info = policy.predict_action(batch, seed=0)
    points = torch.tensor(info["keypoints"])
    assert points.shape == (2, V, k, 2) and points.abs().max() <= 1
    _, flipped = policy.predict_action({**batch, "images": batch["images"].flip(-1)}, seed=0)
    assert not torch.allclose(torch.tensor(flipped["keypoints"]), points)
    loaded = VLAPolicy.from_pretrained(policy.save_pretrained(tmp_path / "p"))
    assert torch.equal(loaded.predict_action(batch, seed=0)[0], a)


def test_keypoints_without_state_condition_the_head_alone():
    policy = tiny_policy(keypoints=2, state_dim=0)
    assert policy.head.state_dim == V * 2 * 2
    randomize_(policy.head)
    batch = make_batch(2, actions=False)
    del batch["state"]
    a, _ = policy.predict_action(batch, seed=0)
    b, _ = policy.predict_action({**batch, "images": batch["images"].flip(-1)}, seed=0)
    assert not torch.allclose(a, b)


def test_keypoint_temperature_sets_how_peaked_the_keypoints_start(tmp_path):
    batch = make_batch(4, actions=False)
    spread = {}
    for temperature in (1.0, 0.05):
        policy = tiny_policy(keypoints=4, keypoint_temperature=temperature)
        assert policy.keypoints.log_temperature.exp().item() == pytest.approx(temperature)
        _, info = policy.predict_action(batch, seed=0)
        spread[temperature] = torch.tensor(info["keypoints"]).abs().mean()
    # A peaked softmax puts a keypoint on a cell; a flat one averages the cells to the centre (0).
    assert spread[0.05] > 2 * spread[1.0]
    loaded = VLAPolicy.from_pretrained(policy.save_pretrained(tmp_path / "p"))
    assert loaded.config.keypoint_temperature == 0.05
    with pytest.raises(ValueError, match="keypoint_temperature: must be > 0"):
        PolicyConfig.from_dict({**policy.config.to_dict(), "keypoint_temperature": 0.0})


def test_observation_settings_say_what_a_rollout_must_render():
    assert tiny_policy().observation_settings() == {"image_size": IMG, "depth": False, "state_dim": S}
    assert tiny_policy(state_dim=0).observation_settings()["state_dim"] is None
    assert tiny_policy(fusion="global").observation_settings()["depth"] is True


def test_keypoints_need_a_backbone_with_a_patch_grid():
    policy = tiny_policy()
    policy.backbone.patch_grid = None
    with pytest.raises(ValueError, match=r"config\.keypoints=2: ComposedBackbone exposes no patch grid"):
        VLAPolicy(PolicyConfig.from_dict({**policy.config.to_dict(), "keypoints": 2}), policy.backbone)
    with pytest.raises(ValueError, match="keypoints: must be >= 0"):
        PolicyConfig.from_dict({**policy.config.to_dict(), "keypoints": -1})
