"""Two CPU processes (gloo) train like one process with the same global batch, resume from each
other's checkpoints, shard each step's batch, and leave writing to the main process.

Each scenario runs the tiny policy for 2 steps under one launcher and resumes for 2 more under
another; the end must equal a 1-process run (float tolerance: the gradient sums differ in order).
FSDP2 runs on the CPU by forcing Accelerate's FSDP2 code path (Accelerate itself shards only on
accelerators), which exercises flowvla's gathered saves and sharded resumes.
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from flowvla.training import StepBatchSampler
from tests.training.dist_worker import CONFIG
from tests.training.helpers import free_port, max_difference

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("dist_worker.py")
ROOT = WORKER.parents[2]


def launch(launcher: str, out: Path, records: Path, *extra: str) -> None:
    if launcher == "torchrun":
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
        cmd += ["--master-port", str(free_port())]
    else:  # Accelerate starts several CPU processes through its multi-process launcher
        cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2"]
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
        cmd += ["--main_process_port", str(free_port())]
    cmd += [str(WORKER), "--out", str(out), "--records", str(records), *extra]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"


def records(path: Path) -> list[dict]:
    return [json.loads((path / f"rank{r}.json").read_text()) for r in range(2)]


@pytest.mark.parametrize(
    ("first", "second"),
    [(("torchrun",), ("torchrun", "--fsdp")), (("torchrun", "--fsdp"), ("accelerate",))],
    ids=["ddp-then-fsdp2", "fsdp2-then-ddp"],
)
def test_two_processes_resume_and_end_like_one(tmp_path, one_process, first, second):
    out = tmp_path / "run"
    launch(first[0], out, tmp_path / "part1", *first[1:], "--stop-after", "2")
    launch(second[0], out, tmp_path / "part2", *second[1:])
    part1, part2 = records(tmp_path / "part1"), records(tmp_path / "part2")
    assert part2[0]["report"]["resumed_from"] == 2 and part2[0]["report"]["step"] == 4
    assert {p["report"]["num_processes"] for p in part1 + part2} == {2}

    ckpt = out / "checkpoint"
    raw, ema = load_file(str(ckpt / "model.safetensors")), load_file(str(ckpt / "model_ema.safetensors"))
    ref_raw, ref_ema = one_process
    assert max_difference(raw, ref_raw) < 1e-5
    assert max_difference(ema, ref_ema) < 1e-5
    assert max_difference(raw, ema) > 1e-4  # the average is not the raw weights

    # Only the main process writes: its saves and log rows, each step logged once.
    for part, steps in ((part1, [2]), (part2, [4])):
        assert part[0]["saves"] == steps and part[1]["saves"] == []
        assert part[0]["logs"] == 2 and part[1]["logs"] == 0
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]

    # Each process trained on its own half of every step's global batch.
    sampler = StepBatchSampler(8, CONFIG["batch_size"], 0, 4, seed=0)
    seen = [part1[r]["seen"] + part2[r]["seen"] for r in range(2)]
    for step in range(4):
        a, b = seen[0][step], seen[1][step]
        assert len(a) == len(b) == 2 and not set(a) & set(b)
        assert a + b == sampler.global_batch(step)
