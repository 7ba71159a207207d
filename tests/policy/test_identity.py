"""A policy's identity for evaluation records: a weights hash that survives saving and loading and
changes with any weight, the checkpoint's training step, JSON-safe output."""

import json

import pytest
import torch

pytest.importorskip("transformers")

from flowvla.policy import VLAPolicy, checkpoint_step, policy_identity, weights_digest
from tests.policy.helpers import tiny_policy


@pytest.fixture(scope="module")
def policy():
    return tiny_policy()


def test_digest_survives_a_save_load_round_trip(policy, tmp_path):
    policy.save_pretrained(tmp_path / "p", trainer_state={"step": 1234})
    loaded = VLAPolicy.from_pretrained(tmp_path / "p")
    assert weights_digest(loaded) == weights_digest(policy)
    ident = policy_identity(loaded, tmp_path / "p")
    assert ident == json.loads(json.dumps(ident))
    assert ident["step"] == 1234 and ident["path"] == str((tmp_path / "p").resolve())
    assert ident["class"] == "flowvla.policy.policy.VLAPolicy" and ident["weights_sha256"] == weights_digest(
        policy
    )


def test_any_changed_weight_changes_the_digest(policy):
    before = weights_digest(policy)
    param = max(policy.parameters(), key=lambda p: p.numel())
    with torch.no_grad():
        param.view(-1)[0] += 1e-3
    try:
        assert weights_digest(policy) != before
    finally:
        with torch.no_grad():
            param.view(-1)[0] -= 1e-3


def test_digest_sees_dtype_and_shape_not_only_bytes():
    a, b = torch.nn.Linear(2, 2, bias=False), torch.nn.Linear(1, 4, bias=False)
    with torch.no_grad():
        b.weight.copy_(a.weight.reshape(4, 1))
    assert weights_digest(a) != weights_digest(b)
    assert weights_digest(a) != weights_digest(a.to(torch.bfloat16))


def test_identity_of_a_plain_object_and_missing_step(tmp_path):
    ident = policy_identity(object(), tmp_path, step=None)
    assert ident["weights_sha256"] is None and ident["step"] is None and checkpoint_step(tmp_path) is None
    assert policy_identity(object(), step=7)["step"] == 7
    with pytest.raises(TypeError, match="module"):
        weights_digest(object())
