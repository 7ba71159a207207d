"""The training loop of [`VLAPolicy`][flowvla.policy.policy.VLAPolicy] on HF Accelerate.

One call trains (or resumes) a policy on one or many processes: ``python script.py``, ``torchrun
--nproc-per-node 2 script.py`` or ``accelerate launch --num_processes 2 script.py`` run the same code;
Accelerate sets up DDP (gloo on the CPU, NCCL on GPUs), FSDP, autocast and compilation, and flowvla
keeps what makes runs reproducible:

- **Batches and draws are functions of the step.** Step ``s`` trains on a global batch drawn from the
  seed and ``s`` ([`StepBatchSampler`][flowvla.training.sampling.StepBatchSampler]); each process takes a
  disjoint slice of it per accumulation micro-step; the flow-matching noise and times are drawn for
  the whole global batch from a generator seeded by ``s`` and sliced the same way; the global RNG
  (dropout, augmentation) is reseeded per micro-batch from ``(s, slice)``. A resumed run therefore
  ends, on one process, with bit-identical weights, and two processes train like one process with
  the same global batch (up to the order of float sums).
- **Checkpoints are atomic and complete** (see [`flowvla.training.checkpoint`][flowvla.training.checkpoint]);
  only the main process writes them and the log.
- **Bad steps are skipped, not trained on.** A non-finite loss or gradient norm skips the optimizer
  step (every process agrees: the losses are gathered and the norm is global) and is logged; after
  ``nan_patience`` consecutive ones the run stops with
  [`NonFiniteLossError`][flowvla.training.engine.NonFiniteLossError], whose report names the batch and the
  loss terms; no checkpoint is written during such a run of bad steps, so the last one stays the
  last good one.

Log rows (``<out_dir>/log.jsonl``, one JSON object per line, also passed to ``on_log``):

- every ``log_every`` steps: ``step``, ``lr`` (used by that step), the loss terms of
  [`PolicyLosses`][flowvla.policy.policy.PolicyLosses] (mean over the step's micro-batches),
  ``grad_norm`` (before clipping), ``samples_per_s`` (training throughput since the last row),
  ``seconds`` (since the call began) and ``skipped`` (non-finite steps so far);
- ``"event": "validation"``: ``val_<term>`` and, with EMA, ``ema_val_<term>``;
- ``"event": "non_finite"``: a skipped step, with its loss terms and items.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from flowvla.data.batch import collate
from flowvla.data.stats import load_stats
from flowvla.io import write_json_atomic
from flowvla.policy.policy import STATS_FILE, WEIGHTS_FILE, PolicyLosses, VLAPolicy
from flowvla.training import processes
from flowvla.training.checkpoint import (
    CHECKPOINT_DIR,
    STATE_FORMAT,
    ema_weights_path,
    full_model_state,
    optimizer_state,
    read_trainer_state,
    restore_optimizer,
)
from flowvla.training.config import TrainConfig, check_schedule, lr_factor
from flowvla.training.ema import EMA
from flowvla.training.sampling import StepBatchSampler, build_mixture, describe_items, mix_seed

__all__ = ["NonFiniteLossError", "train"]

LOSS_TERMS = tuple(f.name for f in fields(PolicyLosses))
REPORT_FILE = "non_finite_report.json"
# Stream tags, so the batch, the flow draws, the per-batch RNG and validation never share a seed.
_NOISE, _RNG, _VAL_NOISE, _VAL_RNG, _LOADER = 1, 2, 3, 4, 5


class NonFiniteLossError(RuntimeError):
    """Training stopped after ``nan_patience`` consecutive non-finite steps.

    Attributes:
        report: ``step``, ``consecutive``, ``skipped`` (over the run), ``checkpoint`` (the last
            good one, untouched) and ``bad_steps``: per skipped step its loss terms per micro-batch,
            the items of those micro-batches (dataset, index, episode, frame) and the parameters
            whose gradients were not finite. Also written to ``<out_dir>/non_finite_report.json``.
    """

    def __init__(self, message: str, report: dict[str, Any]) -> None:
        super().__init__(message)
        self.report = report


def _named(dataset: Any, argument: str) -> dict[str, torch.utils.data.Dataset]:
    if isinstance(dataset, Mapping):
        if not dataset:
            raise ValueError(f"{argument}: no datasets given")
        return {str(k): v for k, v in dataset.items()}
    return {"": dataset}


def _concat(datasets: dict[str, torch.utils.data.Dataset]) -> torch.utils.data.Dataset:
    values = list(datasets.values())
    return values[0] if len(values) == 1 else torch.utils.data.ConcatDataset(values)


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None


def _terms(losses: PolicyLosses) -> torch.Tensor:
    return torch.stack([getattr(losses, k).detach().float().reshape(()) for k in LOSS_TERMS])


def _slice_draws(noise: torch.Tensor, t: torch.Tensor, sl: slice) -> tuple[torch.Tensor, torch.Tensor]:
    return noise[..., sl, :, :], t[..., sl]


class _SeededItems(torch.utils.data.Dataset):
    """``data`` indexed by ``(seed, index)`` keys: a key with a seed first seeds the global RNG, as
    the training process seeds it before a micro-batch, so the items a DataLoader worker makes
    (augmentation draws included) are the ones the training process would make itself."""

    def __init__(self, data: torch.utils.data.Dataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: tuple[int | None, int]) -> Any:
        seed, index = key
        if seed is not None:
            torch.manual_seed(seed)
        return self.data[index]


class _SeededBatches:
    """The micro-batches of a ``StepBatchSampler`` as keys of ``_SeededItems``: each batch's first
    key carries the seed of its ``(step, slice)``."""

    def __init__(self, sampler: StepBatchSampler, seed_of: Callable[[int, int], int]) -> None:
        self.sampler, self.seed_of = sampler, seed_of

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        accum = self.sampler.accumulation_steps
        for k, batch in enumerate(self.sampler):
            step, m = divmod(k, accum)
            seed = self.seed_of(self.sampler.start + step, m)
            yield [(seed if j == 0 else None, int(i)) for j, i in enumerate(batch)]


def _attention_kernel(backend: str | None) -> contextlib.AbstractContextManager:
    """The ``sdpa_kernel`` context of ``TrainConfig.attention_backend`` (a no-op for None)."""
    if backend is None:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    kernels = {
        "math": SDPBackend.MATH,
        "flash": SDPBackend.FLASH_ATTENTION,
        "efficient": SDPBackend.EFFICIENT_ATTENTION,
        "cudnn": SDPBackend.CUDNN_ATTENTION,
    }
    return sdpa_kernel(kernels[backend])


def _optimizer(params: list[torch.nn.Parameter], cfg: TrainConfig) -> torch.optim.AdamW:
    impl = cfg.optimizer_impl
    choice = {} if impl is None else {"foreach": impl == "foreach", "fused": impl == "fused"}
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **choice)


def train(
    policy: VLAPolicy,
    dataset: torch.utils.data.Dataset | Mapping[str, torch.utils.data.Dataset],
    cfg: TrainConfig,
    *,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    stop_after: int | None = None,
    val_dataset: torch.utils.data.Dataset | Mapping[str, torch.utils.data.Dataset] | None = None,
) -> dict[str, Any]:
    """Train ``policy`` on ``dataset`` (items of the batch contract), resuming from ``cfg.out_dir``.

    Run it under ``torchrun`` or ``accelerate launch`` to train data-parallel; every process calls
    ``train`` with the same arguments (see module docs).

    Args:
        policy: the policy; it ends holding the raw (not averaged) weights of the last step. Under
            FSDP it is sharded in place.
        dataset: a dataset, or ``{name: dataset}`` for a mixture weighted by
            ``cfg.dataset_weights``. Items from datasets with ``item_tasks()`` are sampled by task.
        cfg: the run's settings.
        on_log: called with every log row, on the main process.
        stop_after: end this call after that many steps (with a checkpoint), as a time-boxed job
            would; calling again continues the same schedule up to ``cfg.steps``.
        val_dataset: held-out items for the validation loss every ``cfg.val_every`` steps (same
            batches and draws each time, so values compare across steps and runs).

    Returns:
        ``{"step", "resumed_from", "stopped"`` (``"steps"``, ``"stop_after"`` or ``"max_minutes"``),
        ``"last_losses", "val_losses", "ema_val_losses", "skipped", "samples_per_s", "seconds",
        "num_processes", "gradient_accumulation_steps", "mixed_precision", "distributed_type",
        "checkpoint"}``.

    Raises:
        ValueError: statistics or a learning-rate schedule that differ from the checkpoint's, a
            batch size that does not split over processes and micro-steps, unknown mixture names.
        NonFiniteLossError: ``cfg.nan_patience`` consecutive non-finite steps.
    """
    run = _TrainingRun(policy, dataset, cfg, on_log=on_log, stop_after=stop_after, val_dataset=val_dataset)
    try:
        run.loop()
    finally:
        run.close()
    return run.report()


class _TrainingRun:
    """One call of [`train`][flowvla.training.engine.train], in the order a reader follows it:
    setup (the processes, resuming, the data, the model), then per step
    ``one_step``, logging, validation and checkpoints;
    the counters live here between them."""

    # ------------------------------------------------------------------------------------- setup
    def __init__(
        self,
        policy: VLAPolicy,
        dataset: torch.utils.data.Dataset | Mapping[str, torch.utils.data.Dataset],
        cfg: TrainConfig,
        *,
        on_log: Callable[[dict[str, Any]], None] | None,
        stop_after: int | None,
        val_dataset: torch.utils.data.Dataset | Mapping[str, torch.utils.data.Dataset] | None,
    ) -> None:
        self.t_call = time.perf_counter()
        self.cfg, self.on_log = cfg, on_log
        self.datasets = _named(dataset, "dataset")
        self.data = _concat(self.datasets)
        self.val_sets = None if val_dataset is None else _named(val_dataset, "val_dataset")
        if cfg.val_every and self.val_sets is None:
            raise ValueError("cfg.val_every: validation is on but train() got no val_dataset")
        self.out = Path(cfg.out_dir)
        self.ckpt = self.out / CHECKPOINT_DIR
        self._set_up_processes()
        state = self._resume(policy)
        self.stop = cfg.steps if stop_after is None else min(cfg.steps, self.start + stop_after)
        self._set_up_data()  # before wrapping the model: a bad setting fails fast
        self._set_up_model(policy, state)
        self.log_file = open(self.out / "log.jsonl", "a") if self.main else None
        # The counters of the loop.
        self.step = self.saved_at = self.start
        self.stopped = "steps" if self.stop == cfg.steps else "stop_after"
        self.last: dict[str, float] = {}
        self.val_losses: dict[str, float] = {}
        self.ema_val_losses: dict[str, float] = {}
        self.window_samples, self.window_s, self.total_samples, self.total_train_s = 0, 0.0, 0, 0.0
        self.consecutive, self.bad_steps = 0, []
        self.bar = None
        self.policy_was = self.model.training

    def _set_up_processes(self) -> None:
        cfg = self.cfg
        accelerator = self.accelerator = processes.make_accelerator(cfg)
        processes.check_launch(accelerator, cfg)
        self.main, self.world = accelerator.is_main_process, accelerator.num_processes
        self.rank = accelerator.process_index
        self.accum = accelerator.gradient_accumulation_steps
        # Read before prepare(): the kind of run this call set up (what the report states).
        self.distributed_type = accelerator.distributed_type.value
        self.fsdp = self.distributed_type == "FSDP"
        if self.fsdp and cfg.ema_decay and not accelerator.is_fsdp2:
            raise ValueError("cfg.ema_decay: EMA with FSDP needs FSDP2; set fsdp={'fsdp_version': 2}")
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)

    def _resume(self, policy: VLAPolicy) -> dict[str, Any] | None:
        """The checkpoint's trainer state (None: a fresh run); its weights go into ``policy`` before
        wrapping (DDP/FSDP take them from there), its optimizer state after."""
        from safetensors.torch import load_model

        ckpt = self.ckpt
        state = read_trainer_state(ckpt)
        self.start = 0
        if state is not None:
            saved_stats = load_stats(ckpt / STATS_FILE) if (ckpt / STATS_FILE).is_file() else {}
            if saved_stats != policy.stats:
                raise ValueError(
                    f"policy: its normalisation statistics differ from the checkpoint's in {ckpt}; resume "
                    "with the same data statistics (or start a new out_dir)"
                )
            self.start = int(state["step"])
            check_schedule(state.get("config", {}), self.cfg, self.start, str(ckpt))
            load_model(
                policy, str(ckpt / WEIGHTS_FILE), strict=True, device=str(next(policy.parameters()).device)
            )
        self.resumed_from = self.start
        return state

    def _set_up_data(self) -> None:
        cfg = self.cfg
        mixture = build_mixture(
            self.datasets,
            sampling=cfg.sampling,
            task_weights=cfg.task_weights,
            dataset_weights=cfg.dataset_weights,
        )
        self.sampler = StepBatchSampler(
            len(self.data),
            cfg.batch_size,
            self.start,
            self.stop,
            cfg.seed,
            mixture=mixture,
            num_processes=self.world,
            process_index=self.rank,
            accumulation_steps=self.accum,
        )
        self.val_loader = self.val_sampler = None
        if self.val_sets is not None:
            val_bs = cfg.val_batch_size or cfg.batch_size // self.accum
            val_mixture = build_mixture(self.val_sets, sampling=cfg.sampling)
            val_data = _concat(self.val_sets)
            if val_bs % self.world:
                raise ValueError(
                    f"cfg.val_batch_size: {val_bs} does not split over {self.world} processes; "
                    f"use a multiple of {self.world}"
                )
            self.val_sampler = StepBatchSampler(
                len(val_data),
                val_bs,
                0,
                cfg.val_batches,
                mix_seed(cfg.seed, _VAL_RNG),
                mixture=val_mixture,
                num_processes=self.world,
                process_index=self.rank,
            )
            self.val_loader = self._loader(val_data, self.val_sampler)

    def _loader(self, ds: Any, batch_sampler: Any) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(
            ds,
            batch_sampler=batch_sampler,
            collate_fn=collate,
            num_workers=self.cfg.num_workers,
            # Its own generator: a DataLoader otherwise draws its worker seed from the global RNG.
            generator=torch.Generator().manual_seed(mix_seed(self.cfg.seed, self.rank, _LOADER)),
        )

    def _set_up_model(self, policy: VLAPolicy, state: dict[str, Any] | None) -> None:
        """The same weights everywhere, wrapped; then the optimizer and EMA state."""
        from safetensors.torch import load_file

        cfg, accelerator = self.cfg, self.accelerator
        if self.fsdp and self.world > 1:
            processes.sync_from_main(policy, accelerator.device)
        params = [p for p in policy.parameters() if p.requires_grad]
        opt = _optimizer(params, cfg)
        self.model, self.opt = accelerator.prepare(policy, opt)
        self.unwrapped = accelerator.unwrap_model(self.model)
        if state is not None:
            restore_optimizer(self.unwrapped, self.opt.optimizer, state)
        self.ema = EMA(self.unwrapped, cfg.ema_decay) if cfg.ema_decay else None
        if self.ema is not None and state is not None and ema_weights_path(self.ckpt).is_file():
            self.ema.load_full_state_dict(
                load_file(str(ema_weights_path(self.ckpt))), state.get("ema_updates", 0)
            )
        self.skipped = int(state.get("skipped", 0)) if state is not None else 0
        self.pc = self.unwrapped.config

    # ---------------------------------------------------------------------------------------- loop
    def loop(self) -> None:
        """Steps until ``stop`` (or the time budget): each trained, logged, validated and saved."""
        cfg = self.cfg
        if cfg.progress and self.main:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=cfg.steps, initial=self.start, desc="train", unit="step", dynamic_ncols=True
            )
        budget = processes.TimeBudget(cfg.max_minutes, self.t_call)
        self.model.train()
        if cfg.num_workers:
            # Workers make the items: they seed them as this process would (see one_step).
            batches = iter(
                self._loader(_SeededItems(self.data), _SeededBatches(self.sampler, self._micro_batch_seed))
            )
        else:
            batches = iter(self._loader(self.data, self.sampler))
        while self.step < self.stop:
            if budget.exhausted(self.accelerator):
                self.stopped = "max_minutes"
                break
            t_step = time.perf_counter()
            lr, rows, grad_norm = self.one_step(batches)
            seconds = time.perf_counter() - t_step
            budget.observe(seconds)
            self._count(rows, seconds)
            if self.step % cfg.log_every == 0 or self.step == self.stop:
                self._log_step(lr, grad_norm)
            if (
                self.val_loader is not None
                and cfg.val_every
                and (self.step % cfg.val_every == 0 or self.step == cfg.steps)
            ):
                self.val_losses, self.ema_val_losses = self._run_validation(self.step)
            # Not inside a run of non-finite steps: the checkpoint stays the last good one.
            if (self.step % cfg.save_every == 0 or self.step == self.stop) and self.consecutive == 0:
                self.save(self.step)
                self.saved_at = self.step
        if self.stopped == "max_minutes" and self.saved_at != self.step and self.consecutive == 0:
            self.save(self.step)

    def one_step(self, batches: Any) -> tuple[float, torch.Tensor, float]:
        """Train one step: the step's learning rate and flow draws, ``accum`` micro-batches, then the
        optimizer step, or a skipped step when a loss or the gradient norm is not finite. Returns
        ``(lr, loss terms per micro-batch and process, gradient norm)``."""
        cfg, accelerator, model, opt, step = self.cfg, self.accelerator, self.model, self.opt, self.step
        lr = cfg.lr * lr_factor(step, cfg.steps, cfg.warmup_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        g = torch.Generator().manual_seed(mix_seed(cfg.seed, step, _NOISE))
        noise, t = self.unwrapped.objective.draw(
            cfg.batch_size, self.pc.horizon, self.pc.action_dim, generator=g
        )
        local = []
        for m in range(self.accum):
            # The per-micro-batch RNG (dropout, augmentation) is keyed by the slice of the global
            # batch, so the same slice gets the same draws however the batch is split.
            torch.manual_seed(self._micro_batch_seed(step, m))
            batch = next(batches)
            no_sync = accelerator.no_sync(model) if m < self.accum - 1 else contextlib.nullcontext()
            with no_sync:
                n_, t_ = _slice_draws(noise, t, self.sampler.slice_of(m))
                with _attention_kernel(cfg.attention_backend):
                    losses = model(batch, noise=n_, t=t_)
                accelerator.backward(losses.loss)
            local.append(_terms(losses))
        rows = self._gathered(torch.stack(local))
        max_norm = cfg.grad_clip if cfg.grad_clip else float("inf")
        grad_norm = processes.scalar(accelerator.clip_grad_norm_(model.parameters(), max_norm))
        losses_ok = bool(torch.isfinite(rows[:, 0]).all())
        self.step = step = step + 1
        if losses_ok and math.isfinite(grad_norm):
            opt.step()
            opt.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.update()
            self.consecutive = 0
        else:
            self._skip(rows)
        return lr, rows, grad_norm

    def _micro_batch_seed(self, step: int, micro: int) -> int:
        return mix_seed(self.cfg.seed, step, micro * self.world + self.rank, _RNG)

    def _skip(self, rows: torch.Tensor) -> None:
        """A non-finite step: no update, a record logged; after ``nan_patience`` in a row, stop."""
        record = self._bad_step_record(self.step, rows, self.sampler.global_batch(self.step - 1))
        if self.accelerator.scaler is not None:
            self.opt.step()  # fp16: the loss scaler skips the update and lowers its scale
        self.opt.zero_grad(set_to_none=True)
        self.skipped += 1
        self.consecutive += 1
        self.bad_steps = [*self.bad_steps, record][-self.cfg.nan_patience :]
        self._emit(record)
        if self.consecutive >= self.cfg.nan_patience:
            raise _stop_on_non_finite(
                self.out, self.ckpt, self.step, self.consecutive, self.skipped, self.bad_steps, self.main
            )

    # ------------------------------------------------------------------------------------- logging
    def _count(self, rows: torch.Tensor, seconds: float) -> None:
        self.window_samples += self.cfg.batch_size
        self.window_s += seconds
        self.total_samples += self.cfg.batch_size
        self.total_train_s += seconds
        self.last = {k: float(v) for k, v in zip(LOSS_TERMS, rows.mean(0).tolist(), strict=True)}
        if self.bar is not None:
            self.bar.update(1)

    def _log_step(self, lr: float, grad_norm: float) -> None:
        row = {
            "step": self.step,
            "lr": lr,
            **{k: _finite_or_none(v) for k, v in self.last.items()},
            "grad_norm": _finite_or_none(grad_norm),
            "samples_per_s": self.window_samples / self.window_s if self.window_s > 0 else None,
            "seconds": time.perf_counter() - self.t_call,
            "skipped": self.skipped,
        }
        self.window_samples, self.window_s = 0, 0.0
        self._emit(row)
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.last['loss']:.4g}", refresh=False)

    def _emit(self, row: dict[str, Any]) -> None:
        if not self.main:
            return
        self.log_file.write(json.dumps(row) + "\n")
        self.log_file.flush()
        if self.on_log is not None:
            self.on_log(row)

    def _gathered(self, local: torch.Tensor) -> torch.Tensor:
        local = local.to(self.accelerator.device)
        return (self.accelerator.gather(local) if self.world > 1 else local).double().cpu()

    def _bad_step_record(self, step: int, rows: torch.Tensor, global_batch: list[int]) -> dict[str, Any]:
        micro = []
        finite_rows = torch.isfinite(rows[:, 0])
        for i in range(rows.shape[0]):
            r, m = divmod(i, self.accum)  # gather order: process-major, then micro-step
            if bool(finite_rows.all()) or not bool(finite_rows[i]):
                items = describe_items(self.datasets, global_batch[self.sampler.slice_of(m, r)])
                values = rows[i].tolist()
                terms = {
                    k: v if math.isfinite(v) else str(v) for k, v in zip(LOSS_TERMS, values, strict=True)
                }
                micro.append({"process": r, "micro_step": m, "losses": terms, "items": items})
        bad_grads = [
            n
            for n, p in self.unwrapped.named_parameters()
            if p.grad is not None
            and not bool(torch.isfinite(p.grad.to_local() if hasattr(p.grad, "to_local") else p.grad).all())
        ]
        return {
            "step": step,
            "event": "non_finite",
            "micro_batches": micro,
            "non_finite_grads": bad_grads[:20],
        }

    # ----------------------------------------------------------------------------------- validation
    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        cfg, model = self.cfg, self.model
        model.eval()
        rows = []
        for k, batch in enumerate(self.val_loader):
            g = torch.Generator().manual_seed(mix_seed(cfg.seed, k, _VAL_NOISE))
            noise, t = self.unwrapped.objective.draw(
                self.val_sampler.batch_size, self.pc.horizon, self.pc.action_dim, generator=g
            )
            torch.manual_seed(mix_seed(cfg.seed, k, self.rank, _VAL_RNG))
            n_, t_ = _slice_draws(noise, t, self.val_sampler.slice_of(0))
            with _attention_kernel(cfg.attention_backend):
                rows.append(_terms(model(batch, noise=n_, t=t_)))
        model.train()
        mean = self._gathered(torch.stack(rows)[None]).mean(dim=(0, 1))
        return {k: float(v) for k, v in zip(LOSS_TERMS, mean.tolist(), strict=True)}

    def _run_validation(self, step: int) -> tuple[dict[str, float], dict[str, float]]:
        val = self._validate()
        row: dict[str, Any] = {"step": step, "event": "validation"}
        row.update({f"val_{k}": _finite_or_none(v) for k, v in val.items()})
        ema_val: dict[str, float] = {}
        if self.ema is not None:
            with self.ema.applied():
                ema_val = self._validate()
            row.update({f"ema_val_{k}": _finite_or_none(v) for k, v in ema_val.items()})
        self._emit(row)
        return val, ema_val

    # ---------------------------------------------------------------------------------- checkpoint
    def save(self, step: int) -> None:
        """Write the checkpoint of ``step`` (every process joins: under FSDP gathering the weights and
        the optimizer state is collective)."""
        unwrapped, ema = self.unwrapped, self.ema
        weights = full_model_state(unwrapped) if self.fsdp else None
        opt_state = optimizer_state(unwrapped, self.opt.optimizer)
        ema_weights = None
        if ema is not None:
            averaged = ema.full_state_dict()
            if self.main:
                base = weights if weights is not None else unwrapped.state_dict()
                ema_weights = {k: averaged.get(k, v) for k, v in base.items()}
        if self.main:
            trainer_state = {
                "format": STATE_FORMAT,
                "optimizer": opt_state,
                "step": step,
                "ema_updates": 0 if ema is None else ema.updates,
                "skipped": self.skipped,
                "num_processes": self.world,
                "config": asdict(self.cfg),
            }
            unwrapped.save_pretrained(
                self.ckpt, trainer_state=trainer_state, state_dict=weights, ema_state_dict=ema_weights
            )
        self.accelerator.wait_for_everyone()

    # ------------------------------------------------------------------------------------------ end
    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.log_file is not None:
            self.log_file.close()
        self.model.train(self.policy_was)
        # Drop Accelerate's autocast wrapper from the policy's forward (1 process, mixed precision).
        self.accelerator.unwrap_model(self.model, keep_fp32_wrapper=False)

    def report(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "resumed_from": self.resumed_from,
            "stopped": self.stopped,
            "last_losses": self.last,
            "val_losses": self.val_losses,
            "ema_val_losses": self.ema_val_losses,
            "skipped": self.skipped,
            "samples_per_s": self.total_samples / self.total_train_s if self.total_train_s > 0 else None,
            "seconds": time.perf_counter() - self.t_call,
            "num_processes": self.world,
            "gradient_accumulation_steps": self.accum,
            "mixed_precision": self.accelerator.mixed_precision,
            "distributed_type": self.distributed_type,
            "checkpoint": str(self.ckpt),
        }


def _stop_on_non_finite(
    out: Path, ckpt: Path, step: int, consecutive: int, skipped: int, bad_steps: list[dict], main: bool
) -> NonFiniteLossError:
    report = {
        "step": step,
        "consecutive": consecutive,
        "skipped": skipped,
        "checkpoint": str(ckpt) if (ckpt / WEIGHTS_FILE).is_file() else None,
        "bad_steps": bad_steps,
    }
    if main:
        write_json_atomic(out / REPORT_FILE, report)
    last = bad_steps[-1]
    first = last["micro_batches"][0] if last["micro_batches"] else {}
    items = first.get("items", [])[:4]
    message = (
        f"training stopped at step {step}: {consecutive} consecutive steps with a non-finite loss or "
        "gradient "
        f"(cfg.nan_patience). Last one: losses {first.get('losses')} on items {items}"
        f"{' ...' if len(first.get('items', [])) > 4 else ''}; non-finite gradients in "
        f"{last['non_finite_grads'][:3] or 'none'}. The last good checkpoint ({report['checkpoint']}) is "
        f"untouched; full report in {out / REPORT_FILE}"
    )
    return NonFiniteLossError(message, report)
