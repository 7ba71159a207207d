"""examples/libero_policy.py: the main job end to end at toy size (generate -> parity -> train -> eval ->
sensitivity -> report), and the train / eval commands on data you bring."""

import importlib.util
import json
from pathlib import Path

import pytest

pytest.importorskip("h5py")
pytest.importorskip("transformers")

from tests.data.helpers import write_official_hdf5

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "libero_policy.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("libero_policy_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_task_lists_use_one_syntax_and_any_setting_can_be_set(example):
    argv = ["run", "--tasks", "0-3,7", "--set", "lr=2e-3", "eval.solver=heun", "policy.head.depth=2"]
    args = example.build_parser().parse_args(argv)
    assert args.tasks == [0, 1, 2, 3, 7]
    overrides = example._overrides(args)
    assert overrides == {"tasks": [0, 1, 2, 3, 7], "lr": 2e-3, "eval.solver": "heun", "policy.head.depth": 2}
    cfg = example.preset("default", **overrides)
    assert (cfg.train.lr, cfg.eval.solver, cfg.policy.head.depth) == (2e-3, "heun", 2)
    args = example.build_parser().parse_args(["eval", "--policy", "p", "--out", "o", "--tasks", "2,4"])
    assert args.tasks == [2, 4]
    with pytest.raises(SystemExit):
        example.build_parser().parse_args(["eval", "--policy", "p", "--out", "o", "--tasks", "0", "1"])


@pytest.fixture(scope="module")
def trained(example, tmp_path_factory):
    root = tmp_path_factory.mktemp("example")
    data = root / "data"
    data.mkdir()
    write_official_hdf5(data / "a.hdf5", [12, 9], "put the bowl on the plate", h=32, w=32)
    write_official_hdf5(data / "b.hdf5", [10], "open the top drawer", h=32, w=32)
    args = ["train", "--data", str(data), "--out", str(root / "run"), "--preset", "toy", "--threads", "1"]
    args += ["--batch-size", "2", "--quiet", "--steps"]
    report = example.main([*args, "3"])
    return root, args, report


def test_train_writes_a_checkpoint_with_ema_weights_that_loads(trained):
    from flowvla.policy import VLAPolicy

    root, _, report = trained
    assert report["step"] == 3
    policy = VLAPolicy.from_pretrained(root / "run" / "checkpoint")
    assert policy.config.horizon == 8 and policy.config.num_views == 2 and policy.config.action_dim == 7
    assert set(policy.stats) == {"actions", "state"}
    assert (root / "run" / "checkpoint" / "model_ema.safetensors").is_file()
    rows = [json.loads(line) for line in (root / "run" / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 3


def test_train_again_resumes(example, trained):
    _, args, _ = trained
    report = example.main([*args, "3"])
    assert report["resumed_from"] == 3 and report["step"] == 3
    # A longer --steps would re-stretch the learning-rate schedule under the trained model: refused.
    with pytest.raises(ValueError, match="allow_schedule_change"):
        example.main([*args, "5"])


@pytest.mark.libero
@pytest.mark.slow
def test_the_main_job_runs_every_phase_at_toy_size(example, tmp_path):
    """The whole pipeline of `python examples/libero_policy.py` at toy size, so it cannot break silently."""
    pytest.importorskip("libero", reason="LIBERO is not installed (see docs/libero.md)")
    out = tmp_path / "run"
    run = example.main(
        ["run", "--preset", "toy", "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet"]
    )
    for name in ("recipe.json", "parity.json", "log.jsonl", "loss.png", "success.json", "sensitivity.json"):
        assert (out / name).is_file(), name
    assert (out / "checkpoint" / "model_ema.safetensors").is_file()
    assert json.loads((out / "parity.json").read_text())["passed"]
    assert list((out / "eval" / "videos").glob("*"))
    table = json.loads((out / "success.json").read_text())
    assert table["overall"]["episodes"] == 1 and len(table["tasks"]) == 1
    sens = json.loads((out / "sensitivity.json").read_text())
    assert sens["baseline_l2"] == 0.0
    # The recipe's head reads the LM through a router: which layers it read is part of the check.
    assert sum(sens["layer_usage"]["per_layer"]) == pytest.approx(1.0)
    report = (out / "report.md").read_text()
    assert "Success" in report and "parity" in report and "loss.png" in report
    assert set(run["phases"]) == {"data", "parity", "train", "eval", "sensitivity"}
    assert run["phases"]["data"]["note"].startswith("generated (")
    # A second run of the finished job does nothing again: every phase's record is as it was.
    again = example.main(
        ["run", "--preset", "toy", "--out", str(out), "--cache", str(tmp_path / "cache"), "--quiet"]
    )
    assert again["finished"] and again["phases"] == run["phases"]


@pytest.mark.parametrize(
    "argv, line",
    [
        (["run", "--set", "lr=abc"], "lr (train.lr): expected a float, got 'abc'"),
        (["run", "--set", "eval.replan_every=0"], "eval.replan_every: must be >= 1, got 0"),
        (["run", "--set", "colour=red"], "colour: not a recipe setting"),
        (["eval", "--policy", "/nonexistent", "--out", "o"], "/nonexistent: no config.json here"),
    ],
)
def test_a_users_mistake_is_one_line_before_any_compute(example, argv, line, capsys, monkeypatch):
    import flowvla.recipes.libero as libero

    # Nothing may start: the job itself would fail the test if it were reached.
    monkeypatch.setattr(libero, "run_job", lambda *a, **k: pytest.fail("the job started"))
    with pytest.raises(SystemExit) as e:
        example.main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and line in err, err
