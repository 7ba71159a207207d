"""Sensitivity diagnostics: does the policy's output move when, and only when, it should?

For a policy and a batch, the L2 distance between predicted chunks (same seed, so the initial noise
is shared) for:

- ``baseline_l2``: the same input twice -- must be exactly 0 (anything else is non-determinism);
- ``image_l2``: the same instruction with other images -- must be > 0 (the policy looks);
- ``synonym_l2``: a paraphrased instruction -- should be small;
- ``opposite_l2``: an instruction asking for the opposite -- should be large (``> synonym_l2``);
- ``held_out_l2``: a paraphrase from words no consistency loss trained on
  (``HELD_OUT_SYNONYMS``) -- should stay as small as ``synonym_l2`` and below ``opposite_l2``;
- ``geometry_l2`` (batches with ``depth``): the same images with another sample's depth and cameras
  -- 0 means the geometry branch is ignored (``image_l2`` changes both at once).

Paraphrases and opposites come from the batch (``instruction_synonym`` / ``instruction_opposite``),
from the caller, or from [`paraphrase`][flowvla.processing.instructions.paraphrase] /
[`opposite`][flowvla.processing.instructions.opposite], small word-substitution tables for
LIBERO-style instructions. Command line::

    python -m flowvla.diagnostics --policy runs/policy --batch batch.pt --out sensitivity.json
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from flowvla.processing.instructions import (
    HELD_OUT_SYNONYMS,
    OPPOSITES,
    SYNONYMS,
    held_out_paraphrase,
    opposite,
    paraphrase,
)

__all__ = [
    "HELD_OUT_SYNONYMS",
    "OPPOSITES",
    "SENSITIVITY_DISTANCES",
    "SYNONYMS",
    "held_out_paraphrase",
    "layer_usage",
    "main",
    "opposite",
    "paraphrase",
    "sensitivity_report",
    "summarize_router_weights",
]


#: The distances a sensitivity report can hold, each with a short label, in the order tables show them.
SENSITIVITY_DISTANCES: dict[str, str] = {
    "baseline_l2": "same input",
    "image_l2": "other images",
    "geometry_l2": "other depth, same images",
    "synonym_l2": "paraphrase",
    "held_out_l2": "held-out paraphrase",
    "opposite_l2": "opposite instruction",
}

_VIEW_KEYS = ("images", "depth", "intrinsics", "extrinsics")
_GEOMETRY_KEYS = ("depth", "intrinsics", "extrinsics")


def _swap_views(batch: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """Each sample gets the next sample's tensors under `keys`; in a batch of one, which has no next
    sample, the images and depth among `keys` are mirrored left-right instead (cameras kept)."""
    out = dict(batch)
    present = [k for k in keys if isinstance(batch.get(k), torch.Tensor)]
    if batch[present[0]].shape[0] > 1:
        for key in present:
            out[key] = batch[key].roll(1, dims=0)
    else:
        for key in present:
            if key in ("images", "depth"):
                out[key] = batch[key].flip(-1)
    return out


def _l2(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).flatten(1).norm(dim=1)


def sensitivity_report(
    policy: Any,
    batch: Mapping[str, Any],
    *,
    synonyms: Sequence[str] | None = None,
    opposites: Sequence[str] | None = None,
    held_out: Sequence[str] | None = None,
    other_batch: Mapping[str, Any] | None = None,
    seed: int = 0,
    solver: str | None = None,
    steps: int | None = None,
) -> dict[str, Any]:
    """The distances (means over the batch, plus per-sample values) as a JSON-ready dict.

    Args:
        policy: anything with ``predict_action(batch, solver=, steps=, seed=) -> (actions, info)``.
        batch: the inputs (``images``, ``instruction``, ``state``, ...).
        synonyms: one paraphrase per sample (default: the batch's ``instruction_synonym``, else
            [`paraphrase`][flowvla.processing.instructions.paraphrase]).
        opposites: one opposite per sample (default: ``instruction_opposite``, else
            [`opposite`][flowvla.processing.instructions.opposite]).
        held_out: one held-out paraphrase per sample (default:
            [`held_out_paraphrase`][flowvla.processing.instructions.held_out_paraphrase]; when no
            held-out rule applies to some instruction, the row is left out and ``skipped`` says why).
        other_batch: the batch with other images (default: images rolled across the batch).
        seed: noise seed shared by every prediction.
        solver: solver name (default: the policy's).
        steps: solver steps (default: the policy's).
    """
    instructions = list(batch["instruction"])
    synonyms = list(synonyms or batch.get("instruction_synonym") or [paraphrase(s) for s in instructions])
    opposites = list(opposites or batch.get("instruction_opposite") or [opposite(s) for s in instructions])
    skipped: dict[str, str] = {}
    if held_out is None:
        try:
            held_out = [held_out_paraphrase(s) for s in instructions]
        except ValueError as e:
            skipped["held_out_l2"] = str(e)
    rows = [("synonyms", synonyms), ("opposites", opposites)]
    if held_out is not None:
        held_out = list(held_out)
        rows.append(("held_out", held_out))
    for name, values in rows:
        if len(values) != len(instructions):
            raise ValueError(f"{name}: {len(values)} instructions for a batch of {len(instructions)}")

    def predict(b: Mapping[str, Any]) -> torch.Tensor:
        return policy.predict_action(b, solver=solver, steps=steps, seed=seed)[0]

    reference, reference_info = policy.predict_action(batch, solver=solver, steps=steps, seed=seed)
    distances = {
        "baseline_l2": _l2(reference, predict(batch)),
        "image_l2": _l2(
            reference, predict(other_batch if other_batch is not None else _swap_views(batch, _VIEW_KEYS))
        ),
        "synonym_l2": _l2(reference, predict({**batch, "instruction": synonyms})),
        "opposite_l2": _l2(reference, predict({**batch, "instruction": opposites})),
    }
    if held_out is not None:
        distances["held_out_l2"] = _l2(reference, predict({**batch, "instruction": held_out}))
    if isinstance(batch.get("depth"), torch.Tensor):
        distances["geometry_l2"] = _l2(reference, predict(_swap_views(batch, _GEOMETRY_KEYS)))
    scale = reference.float().flatten(1).norm(dim=1).mean().clamp_min(1e-12)
    report: dict[str, Any] = {k: float(v.mean()) for k, v in distances.items()}
    report["relative"] = {k: float(v.mean() / scale) for k, v in distances.items()}
    report["per_sample"] = {k: v.tolist() for k, v in distances.items()}
    report["instructions"] = {"original": instructions, "synonym": synonyms, "opposite": opposites}
    report["checks"] = {
        "deterministic": report["baseline_l2"] == 0.0,
        "looks_at_images": report["image_l2"] > 0.0,
        "opposite_beyond_synonym": report["opposite_l2"] > report["synonym_l2"],
    }
    if "geometry_l2" in report:
        report["checks"]["uses_geometry"] = report["geometry_l2"] > 0.0
    if held_out is not None:
        report["instructions"]["held_out"] = held_out
        # How far new words move the actions, in units of the trained synonyms' distance.
        report["held_out_over_synonym"] = report["held_out_l2"] / max(report["synonym_l2"], 1e-12)
        report["checks"]["held_out_below_opposite"] = report["held_out_l2"] < report["opposite_l2"]
    if skipped:
        report["skipped"] = skipped
    if "router_weights" in reference_info:
        report["layer_usage"] = summarize_router_weights(reference_info["router_weights"])
    report.update(seed=seed, solver=solver, steps=steps)
    return report


def summarize_router_weights(
    weights: torch.Tensor | Sequence[Any], *, name: str = "weights"
) -> dict[str, Any]:
    """Summarise a layer router's weights over a batch of samples.

    Args:
        weights: ``[B, K, L]``: per sample, head block and language-model layer (the policy's
            ``debug_info["router_weights"]``).
        name: what a shape error names as the source of ``weights``.

    Returns:
        ``per_block`` (``[K][L]``, the mean weights), ``per_layer`` (``[L]``, their mean over the
        blocks), ``sample_spread``: the largest standard deviation of one weight across the
        samples, 0 when the choice ignores the input (a fixed layer, a scalar mix) and above 0 when
        the router chooses per sample (gated, top-k), and ``samples`` (``B``).

    Raises:
        ValueError: ``weights`` is not ``[B, K, L]``.
    """
    w = torch.as_tensor(weights, dtype=torch.float64)
    if w.ndim != 3:
        raise ValueError(f"{name}: router weights must be [B, K, L], got shape {tuple(w.shape)}")
    spread = float(w.std(dim=0, unbiased=False).max()) if w.shape[0] > 1 else 0.0
    return {
        "per_block": w.mean(0).tolist(),
        "per_layer": w.mean((0, 1)).tolist(),
        "sample_spread": spread,
        "samples": int(w.shape[0]),
    }


def layer_usage(policy: Any, batch: Mapping[str, Any], *, seed: int = 0) -> dict[str, Any]:
    """Which hidden layers of the language model the flow head reads on ``batch``: the layer router's
    weights (``debug_info["router_weights"]``, ``[B, K, L]``: per sample, head block and layer)
    summarised over the samples.

    Args:
        policy: anything whose ``predict_action(batch, seed=)`` returns ``(actions, info)`` with
            ``info["router_weights"]``, e.g. a [`VLAPolicy`][flowvla.policy.VLAPolicy].
        batch: the inputs.
        seed: noise seed (the weights do not depend on it; the call samples actions anyway).

    Returns:
        [`summarize_router_weights`][flowvla.diagnostics.summarize_router_weights] of the weights.
        [`sensitivity_report`][flowvla.diagnostics.sensitivity_report] returns the same summary as
        its ``layer_usage`` entry, from the prediction it makes anyway.

    Raises:
        ValueError: the policy's ``info`` has no ``router_weights`` of shape ``[B, K, L]``.
    """
    _, info = policy.predict_action(batch, seed=seed)
    if "router_weights" not in info:
        raise ValueError("policy: its predict_action info has no 'router_weights' (no layer router)")
    return summarize_router_weights(info["router_weights"], name="policy")


def main(argv: list[str] | None = None) -> int:
    """CLI: load a saved policy and a ``torch.save``-d batch dict, print and write the report."""
    ap = argparse.ArgumentParser(
        prog="flowvla-diagnose",
        description="Sensitivity diagnostics of a saved flowvla policy.",
        allow_abbrev=False,  # one spelling per option: what the docs show is what parses
    )
    ap.add_argument("--policy", type=Path, required=True, help="directory written by save_pretrained")
    ap.add_argument("--batch", type=Path, required=True, help="a batch dict saved with torch.save")
    ap.add_argument("--out", type=Path, help="write the JSON report here")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--solver")
    ap.add_argument("--steps", type=int)
    args = ap.parse_args(argv)
    from flowvla.cli import fail
    from flowvla.extras import MissingExtraError
    from flowvla.io import write_json_atomic
    from flowvla.policy import VLAPolicy

    try:
        if not args.batch.is_file():
            raise FileNotFoundError(f"--batch: no file {str(args.batch)!r} (save one with torch.save)")
        policy = VLAPolicy.from_pretrained(args.policy)
        batch = torch.load(args.batch, weights_only=False)
        report = sensitivity_report(policy, batch, seed=args.seed, solver=args.solver, steps=args.steps)
    except (FileNotFoundError, ValueError, MissingExtraError) as e:
        return fail(ap.prog, e)
    print(
        json.dumps(
            {k: report[k] for k in ("baseline_l2", "image_l2", "synonym_l2", "opposite_l2", "checks")},
            indent=2,
        )
    )
    if args.out:
        write_json_atomic(args.out, report)
    return 0 if report["checks"]["deterministic"] else 1


if __name__ == "__main__":
    sys.exit(main())
