"""The algorithms: :class:`TRPO` and :class:`NPG` on one :class:`OnPolicyAlgorithm` base.

* :mod:`~natgrad.rl.algos.base`: construction, the learn loop, acting, persistence;
* :mod:`~natgrad.rl.algos.trpo`, :mod:`~natgrad.rl.algos.npg`: each algorithm's step;
* :mod:`~natgrad.rl.algos.step`: the surrogate, the Fisher operator, K-FAC's direction;
* :mod:`~natgrad.rl.algos.critic`, :mod:`~natgrad.rl.algos.critic_fitter`,
  :mod:`~natgrad.rl.algos.critic_worker`: the critic's regression.
"""

from natgrad.rl.algos.base import OnPolicyAlgorithm
from natgrad.rl.algos.npg import NPG
from natgrad.rl.algos.trpo import TRPO

ALGORITHMS: dict[str, type[OnPolicyAlgorithm]] = {"trpo": TRPO, "npg": NPG}

__all__ = ["ALGORITHMS", "NPG", "TRPO", "OnPolicyAlgorithm"]
