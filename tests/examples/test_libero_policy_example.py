"""examples/libero_policy.py: training on LIBERO-layout HDF5 files runs, checkpoints and resumes;
evaluation runs in the simulator where LIBERO is installed."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("h5py")

from tests.data.helpers import write_official_hdf5

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "libero_policy.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("libero_policy_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def trained(example, tmp_path_factory):
    root = tmp_path_factory.mktemp("example")
    data = root / "data"
    data.mkdir()
    write_official_hdf5(data / "a.hdf5", [12, 9], "put the bowl on the plate", h=16, w=16)
    write_official_hdf5(data / "b.hdf5", [10], "open the top drawer", h=16, w=16)
    args = ["train", "--data", str(data), "--out", str(root / "run"), "--backbone", "tiny", "--horizon", "4"]
    args += ["--batch-size", "2", "--save-every", "2", "--threads", "1", "--instruction", "file", "--steps"]
    example.main([*args, "3"])
    return root, args


def test_train_writes_a_checkpoint_that_loads(trained):
    from flowvla.policy import VLAPolicy

    root, _ = trained
    policy = VLAPolicy.from_pretrained(root / "run" / "checkpoint")
    assert policy.config.horizon == 4 and policy.config.num_views == 2 and policy.config.action_dim == 7
    assert set(policy.stats) == {"actions", "state"}
    rows = [json.loads(line) for line in (root / "run" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3


def test_train_again_resumes(example, trained):
    _, args = trained
    report = example.main([*args, "3"])
    assert report["resumed_from"] == 3 and report["step"] == 3
    # A longer --steps would re-stretch the learning-rate schedule under the trained model: refused.
    with pytest.raises(ValueError, match="allow_schedule_change"):
        example.main([*args, "5"])


@pytest.mark.libero
def test_eval_runs_in_the_simulator(example, trained):
    pytest.importorskip("libero", reason="LIBERO is not installed (see docs/libero.md)")
    root, _ = trained
    out = root / "eval"
    args = ["eval", "--policy", str(root / "run" / "checkpoint"), "--suite", "libero_object", "--tasks", "0"]
    args += ["--init-states", "1", "--max-steps", "8", "--video", "none", "--out", str(out), "--threads", "1"]
    summary = example.main(args)
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert summary["episodes"] == 1 and set(summary["tasks"]) == {"libero_object/0"}
