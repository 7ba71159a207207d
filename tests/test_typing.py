"""The shape-checking contract: wrong shapes name the argument; one switch turns checks off."""

import dataclasses
import importlib
import inspect
import os
import subprocess
import sys

import pytest
import torch

import flowvla
from flowvla import typing as ft
from flowvla.flow import masked_mse

PUBLIC_MODULES = [
    "flowvla.flow",
    "flowvla.solvers",
    "flowvla.dit",
    "flowvla.routing",
    "flowvla.geometry",
    "flowvla.fusion",
    "flowvla.processing",
    "flowvla.envs.cameras",
    "flowvla.backbones",
    "flowvla.backbones.composed",
    "flowvla.backbones.hf",
    "flowvla.backbones.timm_encoders",
    "flowvla.policy",
]


def _mentions_tensor(fn) -> bool:
    try:
        ann = inspect.get_annotations(fn)
    except TypeError:
        return False
    return any("Tensor" in str(a) for a in ann.values())


def _public_callables():
    for mod_name in PUBLIC_MODULES:
        mod = importlib.import_module(mod_name)
        for name in mod.__all__:
            obj = getattr(mod, name)
            if inspect.isfunction(obj):
                yield f"{mod_name}.{name}", obj
            elif inspect.isclass(obj):
                for attr, member in vars(obj).items():
                    if attr == "__init__" and dataclasses.is_dataclass(obj):
                        continue  # generated field assignment, no tensor logic
                    fn = member.__func__ if isinstance(member, staticmethod) else member
                    if inspect.isfunction(fn) and (
                        not attr.startswith("_") or attr in ("__call__", "__init__")
                    ):
                        yield f"{mod_name}.{name}.{attr}", fn


def test_version_is_exposed():
    assert isinstance(flowvla.__version__, str) and flowvla.__version__[0].isdigit()


TENSOR_CALLABLES = [
    (q, fn) for q, fn in _public_callables() if _mentions_tensor(getattr(fn, "__flowvla_unchecked__", fn))
]


def test_public_api_has_tensor_functions():
    assert len(TENSOR_CALLABLES) >= 15


@pytest.mark.parametrize("qualname, fn", TENSOR_CALLABLES, ids=[q for q, _ in TENSOR_CALLABLES])
def test_every_public_tensor_function_is_typechecked(qualname, fn):
    assert hasattr(fn, "__flowvla_unchecked__"), f"{qualname} takes tensors but is not @typechecked"


def test_wrong_shape_names_argument_and_expected_shape():
    with pytest.raises(ft.TypeCheckError) as info:
        masked_mse(torch.zeros(2, 3, 4), torch.zeros(2, 3, 5))
    msg = str(info.value)
    assert "target" in msg
    assert "B H A" in msg  # the expected shape, as annotated


def test_wrong_mask_shape_is_reported():
    with pytest.raises(ft.TypeCheckError) as info:
        masked_mse(torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))
    assert "mask" in str(info.value)


def test_runtime_switch_disables_checks():
    bad = (torch.zeros(2, 3, 4), torch.zeros(2, 3, 4), torch.ones(3, 3, dtype=torch.bool))
    ft.set_typecheck(False)
    try:
        assert not ft.typecheck_enabled()
        # Unchecked, the bad mask fails later inside torch, not with a TypeCheckError.
        with pytest.raises(RuntimeError) as info:
            masked_mse(*bad)
        assert not isinstance(info.value, ft.TypeCheckError)
    finally:
        ft.set_typecheck(True)
    with pytest.raises(ft.TypeCheckError):
        masked_mse(*bad)


def test_environment_switch_removes_the_wrapper():
    code = (
        "import flowvla.flow.objective as o, flowvla.typing as t;"
        "assert not hasattr(o.masked_mse, '__flowvla_unchecked__');"
        "assert not t.typecheck_enabled()"
    )
    env = {**os.environ, ft.TYPECHECK_ENV: "0"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
