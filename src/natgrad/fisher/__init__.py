"""The Fisher information matrix as an operator: which matrix, apart from how it is computed.

The Fisher of a model with output distribution ``p_θ`` on a batch of ``N``
inputs is the Hessian of the mean KL divergence with the first argument held
fixed (the seed article's ``kl_fixed``)::

    F = ∇²_θ  (1/N) Σₙ KL(p_θold(·|xₙ) ‖ p_θ(·|xₙ))  at θ = θold
      = (1/N) Σₙ Jₙᵀ F_out,ₙ Jₙ

where ``Jₙ`` is the Jacobian of the distribution's parameters with respect to
θ and ``F_out`` the distribution's own Fisher.  Every operator here has the
same interface (:class:`FisherOperator`: ``mv``, ``quad``, ``dense``,
``solve``) and differs only in how it computes the product:

* ``"ggn"`` (:class:`GGNFisher`): ``Jᵀ F_out J v``.  By default the model is
  *linearised once* (one forward, one backward with ``create_graph``) and each
  product is then two cheap backward passes: ``J v`` by the transpose trick
  (the derivative of ``Jᵀu`` with respect to ``u``) and ``Jᵀ w``.  With
  ``linearize=False`` each product is one ``torch.func.jvp`` and one vjp.
* ``"kl_hessian"`` (:class:`KLHessianFisher`): the seed's recipe, the gradient
  of ``(∇KL)·v`` by double backprop.  The reference, and the way for models
  whose output family has no closed-form Fisher.
* ``"empirical"`` (:class:`EmpiricalFisher`): the mean outer product of the
  scores at *observed* targets.  It is not the Fisher; it is named so that
  nobody mistakes it for one.
* :class:`DenseFisher`: an explicit matrix (the seed's ``fisher_matrix``).
* :class:`MLPFisher`: the GGN product of a plain MLP, linearised by hand (about
  a third cheaper than autograd's double backward); TRPO uses it for its
  default policies.

The model is a function ``fn(params, batch) -> Distribution`` of an explicit
list of parameter tensors (see :func:`natgrad.params.functional_model`).
"""

from natgrad.fisher.api import fisher_matrix, fisher_operator, kl_quadratic, metric_distance
from natgrad.fisher.base import (
    METHODS,
    DenseFisher,
    FisherOperator,
    ModelFn,
    subsample_batch,
)
from natgrad.fisher.empirical import EmpiricalFisher
from natgrad.fisher.ggn import GGNFisher
from natgrad.fisher.kl_hessian import KLHessianFisher
from natgrad.fisher.mlp import MLPFisher, supports_mlp_fisher

__all__ = [
    "METHODS",
    "DenseFisher",
    "EmpiricalFisher",
    "FisherOperator",
    "GGNFisher",
    "KLHessianFisher",
    "MLPFisher",
    "ModelFn",
    "fisher_matrix",
    "fisher_operator",
    "kl_quadratic",
    "metric_distance",
    "subsample_batch",
    "supports_mlp_fisher",
]
