"""One factory convention across the components: ``get_*`` returns the registered class (or callable),
``create_*`` builds an instance; the names of before still work, warn once and give the same thing."""

import warnings

import pytest
import torch

from flowvla.flow import TIME_SAMPLERS, create_time_sampler, get_time_sampler_class
from flowvla.fusion import FUSIONS, create_fusion, get_fusion_class
from flowvla.routing import ROUTERS, create_router, get_router_class
from flowvla.solvers import available_solvers, create_grid, create_solver, get_solver_class


@pytest.mark.parametrize("name", available_solvers())
def test_solvers(name):
    cls = get_solver_class(name)
    assert isinstance(create_solver(name), cls)


@pytest.mark.parametrize("name", sorted(TIME_SAMPLERS))
def test_time_samplers(name):
    assert type(create_time_sampler(name)) is get_time_sampler_class(name)


@pytest.mark.parametrize("name", sorted(FUSIONS))
def test_fusions(name):
    kwargs = {"grid_size": (2, 2), "num_views": 1} if name == "region" else {}
    made = create_fusion(name, 8, 4, **kwargs)
    assert type(made) is FUSIONS[name][0]
    again = get_fusion_class(name)(8, 4, **kwargs)
    assert type(again) is type(made) and getattr(again, "mode", None) == getattr(made, "mode", None)


@pytest.mark.parametrize("kind", sorted(ROUTERS))
def test_routers(kind):
    router = create_router(kind, 3, 2, 8, layers="all")
    assert type(router) is get_router_class(kind)


@pytest.mark.parametrize(
    "get", [get_solver_class, get_time_sampler_class, get_router_class], ids=["solver", "time", "router"]
)
def test_an_unknown_name_is_one_line_naming_the_known_ones(get):
    with pytest.raises(ValueError, match="choose one of") as e:
        get("nope")
    assert "\n" not in str(e.value)


def test_old_names_still_work_and_warn_once(monkeypatch):
    import flowvla.deprecation

    monkeypatch.setattr(flowvla.deprecation, "_WARNED", set())  # other tests may have used them
    from flowvla.policy import RouterConfig, build_router, build_time_sampler

    cases = [
        (lambda: flowvla.get_solver("heun"), lambda: create_solver("heun")),
        (lambda: flowvla.make_grid("uniform", 4), lambda: create_grid("uniform", 4)),
        (lambda: build_time_sampler("beta"), lambda: create_time_sampler("beta")),
        (lambda: build_router(RouterConfig(kind="scalar_mix", layers="all"), 3, 2, 8),
         lambda: create_router("scalar_mix", 3, 2, 8, layers="all")),
    ]  # fmt: skip
    for old, new in cases:
        with pytest.warns(FutureWarning, match="deprecated; use flowvla"):
            got = old()
        want = new()
        if isinstance(want, torch.Tensor):
            assert torch.equal(got, want)
        else:
            assert type(got) is type(want)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            old()  # the second call is silent
