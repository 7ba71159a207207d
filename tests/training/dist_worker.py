"""One process of a multi-process training test (run by torchrun or accelerate launch, see
test_distributed.py). Trains the tiny policy and writes what this process saw to
``<records>/rank<r>.json``: the item ids of each forward pass, its save and log calls, the report."""

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root, for tests.*

import torch

from flowvla.training import (
    TrainConfig,
    processes,
    train,
)
from tests.policy.helpers import tiny_policy
from tests.training.helpers import ItemList

CONFIG = dict(steps=4, batch_size=4, lr=1e-3, warmup_steps=1, save_every=2, log_every=1, ema_decay=0.9)


def force_fsdp2_on_cpu() -> None:
    """Accelerate shards with FSDP only on accelerators and trains DDP on the CPU; to run flowvla's
    sharded save / resume code in CI, put Accelerate's state in its FSDP2 mode after it is built."""
    from accelerate.utils import DistributedType

    make = processes.make_accelerator

    def patched(cfg):
        accelerator = make(cfg)
        accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = processes.fsdp_plugin({"fsdp_version": 2})
        return accelerator

    processes.make_accelerator = patched


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--records", required=True)
    ap.add_argument("--stop-after", type=int)
    ap.add_argument("--fsdp", action="store_true", help="force Accelerate's FSDP2 path on the CPU")
    ap.add_argument("--fsdp-config", action="store_true", help="ask for FSDP2 through TrainConfig.fsdp (GPU)")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--mixed-precision", default="no")
    args = ap.parse_args()
    if os.environ.get("FLOWVLA_TEST_DUMP_AFTER"):  # debugging a hang: where is every process?
        import faulthandler

        dump = open(f"{args.records}.dump{os.environ.get('RANK', '0')}", "w")
        faulthandler.dump_traceback_later(float(os.environ["FLOWVLA_TEST_DUMP_AFTER"]), exit=False, file=dump)
    torch.set_num_threads(1)
    if args.fsdp:
        force_fsdp2_on_cpu()
    rank = int(os.environ.get("RANK", "0"))
    policy = tiny_policy(seed=rank)  # different inits: the run must take rank 0's (or the checkpoint's)
    seen, saves, logs = [], [], []
    forward = policy.forward

    def recording_forward(batch, **kw):
        seen.append(batch["item_id"].tolist())
        return forward(batch, **kw)

    policy.forward = recording_forward
    save = policy.save_pretrained

    def recording_save(*a, **kw):
        saves.append(kw["trainer_state"]["step"])
        return save(*a, **kw)

    policy.save_pretrained = recording_save
    report = train(
        policy,
        ItemList(8),
        TrainConfig(
            out_dir=args.out,
            cpu=args.device == "cpu",
            mixed_precision=args.mixed_precision,
            fsdp={"fsdp_version": 2} if args.fsdp_config else None,
            **CONFIG,
        ),
        on_log=logs.append,
        stop_after=args.stop_after,
    )
    records = Path(args.records)
    records.mkdir(parents=True, exist_ok=True)
    (records / f"rank{rank}.json").write_text(
        json.dumps({"seen": seen, "saves": saves, "logs": len(logs), "report": report})
    )


if __name__ == "__main__":
    main()
