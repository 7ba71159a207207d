"""flowvla's flow-matching VLA policy as a LeRobot policy plugin.

Installed, it makes ``--policy.type=flowvla`` available to ``lerobot-train`` and ``lerobot-eval``
(lerobot >= 0.4.3 imports every distribution named ``lerobot_policy_*`` at start). LeRobot finds the
pieces by convention: [`FlowVLAConfig`][lerobot_policy_flowvla.FlowVLAConfig] in
``configuration_flowvla``, [`FlowVLAPolicy`][lerobot_policy_flowvla.FlowVLAPolicy] in ``modeling_flowvla``
and ``make_flowvla_pre_post_processors`` in ``processor_flowvla``.
"""

from lerobot_policy_flowvla.configuration_flowvla import FlowVLAConfig
from lerobot_policy_flowvla.export import export_policy, import_policy
from lerobot_policy_flowvla.modeling_flowvla import FlowVLAPolicy
from lerobot_policy_flowvla.processor_flowvla import make_flowvla_pre_post_processors

__all__ = [
    "FlowVLAConfig",
    "FlowVLAPolicy",
    "export_policy",
    "import_policy",
    "make_flowvla_pre_post_processors",
]
