"""The training engine on a GPU: float32 agrees with the CPU run, bf16 autocast trains, and FSDP2
(Accelerate's own, not forced) saves and resumes.

Skipped without CUDA (CI has none); on a GPU machine: ``python -m pytest tests/training/test_cuda.py``.
Every GPU job runs in a fresh process (Accelerate's state is per process; the other training tests
pin it to the CPU).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.training.helpers import free_port, max_difference

pytestmark = [
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    pytest.mark.slow,
]
WORKER = Path(__file__).with_name("dist_worker.py")
# The patch embedding is a convolution, which cuDNN runs in TF32 by default.
TOLERANCE = 2e-3


def run(tmp_path: Path, name: str, *args: str, torchrun: bool = False) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "ACCELERATE_USE_CPU"}
    cmd = [sys.executable]
    if torchrun:
        cmd += ["-m", "torch.distributed.run", "--nproc-per-node", "1", "--master-port", str(free_port())]
    records = tmp_path / f"{name}_records"
    cmd += [str(WORKER), "--device", "cuda", "--records", str(records), *args]
    done = subprocess.run(cmd, cwd=WORKER.parents[2], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stderr[-6000:]}"
    return json.loads((records / "rank0.json").read_text())["report"]


def test_float32_on_the_gpu_matches_the_cpu(tmp_path, one_process):
    report = run(tmp_path, "fp32", "--out", str(tmp_path / "fp32"))
    assert report["distributed_type"] == "NO" and report["step"] == 4
    raw = load_file(str(tmp_path / "fp32" / "checkpoint" / "model.safetensors"))
    assert max_difference(raw, one_process[0]) < TOLERANCE


def test_bf16_autocast_trains_on_the_gpu(tmp_path, one_process):
    report = run(tmp_path, "bf16", "--out", str(tmp_path / "bf16"), "--mixed-precision", "bf16")
    assert report["mixed_precision"] == "bf16" and report["last_losses"]["loss"] < 10
    raw = load_file(str(tmp_path / "bf16" / "checkpoint" / "model.safetensors"))
    assert all(v.dtype == torch.float32 for v in raw.values())  # float32 master weights
    assert max_difference(raw, one_process[0]) < 5e-2


def test_fsdp2_saves_and_resumes_on_the_gpu(tmp_path, one_process):
    out = str(tmp_path / "fsdp")
    first = run(tmp_path, "part1", "--out", out, "--fsdp-config", "--stop-after", "2", torchrun=True)
    second = run(tmp_path, "part2", "--out", out, "--fsdp-config", torchrun=True)
    assert first["distributed_type"] == "FSDP", first
    assert second["resumed_from"] == 2 and second["step"] == 4
    ckpt = tmp_path / "fsdp" / "checkpoint"
    assert max_difference(load_file(str(ckpt / "model.safetensors")), one_process[0]) < TOLERANCE
    assert max_difference(load_file(str(ckpt / "model_ema.safetensors")), one_process[1]) < TOLERANCE
