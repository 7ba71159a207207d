"""flowvla: composable, typed PyTorch modules for flow-matching vision-language-action policies.

The flow-matching core, the action head, the layer routers, the 2D-3D fusions and geometry
encoders, the backbones, the policy and its diagnostics are re-exported here; components with
optional dependencies (``flowvla.envs``, ``flowvla.data``, ``flowvla.processing``) are imported by
their module path (backbones import ``transformers`` only when built).
"""

from flowvla._version import __version__
from flowvla.backbones import ComposedBackbone, HFVisionLanguageBackbone, VisionLanguageBackbone
from flowvla.diagnostics import sensitivity_report
from flowvla.dit import ContextCache, FlowActionHead
from flowvla.flow import (
    BetaTimeSampler,
    FlowMatchingLoss,
    FlowMatchingObjective,
    GaussianMixtureFlow,
    LinearPath,
    LogitNormalTimeSampler,
    UniformTimeSampler,
    from_reverse_time_field,
    to_reverse_time_field,
)
from flowvla.fusion import (
    Fusion,
    GlobalBroadcastFusion,
    RegionCrossAttentionFusion,
    TokenAlignedFusion,
    create_fusion,
)
from flowvla.geometry import (
    DenseFeatureEncoder,
    FourierPointEncoder,
    MLPPositionEncoder,
    PatchGrid,
    point_map_from_depth,
)
from flowvla.policy import PolicyConfig, VLAPolicy
from flowvla.routing import (
    FixedLayerRouter,
    LayerRouter,
    RoutedContexts,
    SampleGatedRouter,
    ScalarMixRouter,
    TopKRouter,
)
from flowvla.solvers import (
    FittedGrid,
    ODESolution,
    Solver,
    available_solvers,
    create_grid,
    create_solver,
    fit_time_grid,
    get_solver,
    get_solver_class,
    integrate,
    make_grid,
)
from flowvla.typing import set_typecheck

__all__ = [
    "BetaTimeSampler",
    "ComposedBackbone",
    "ContextCache",
    "DenseFeatureEncoder",
    "FittedGrid",
    "FixedLayerRouter",
    "FlowActionHead",
    "FlowMatchingLoss",
    "FlowMatchingObjective",
    "FourierPointEncoder",
    "Fusion",
    "GaussianMixtureFlow",
    "GlobalBroadcastFusion",
    "HFVisionLanguageBackbone",
    "LayerRouter",
    "LinearPath",
    "LogitNormalTimeSampler",
    "MLPPositionEncoder",
    "ODESolution",
    "PatchGrid",
    "PolicyConfig",
    "RegionCrossAttentionFusion",
    "RoutedContexts",
    "SampleGatedRouter",
    "ScalarMixRouter",
    "Solver",
    "TokenAlignedFusion",
    "TopKRouter",
    "UniformTimeSampler",
    "VLAPolicy",
    "VisionLanguageBackbone",
    "__version__",
    "available_solvers",
    "create_fusion",
    "create_grid",
    "create_solver",
    "fit_time_grid",
    "from_reverse_time_field",
    "get_solver",
    "get_solver_class",
    "integrate",
    "make_grid",
    "point_map_from_depth",
    "sensitivity_report",
    "set_typecheck",
    "to_reverse_time_field",
]
