"""Natural-gradient variational inference with Gaussian families.

Public API:

* :class:`DiagGaussianQ`, :class:`FullGaussianQ`: Gaussian variational families with
  moment, natural (``η1 = Σ⁻¹μ``, ``η2 = −½Σ⁻¹``) and mean parameter conversions.
* :func:`ngvi_step`: one natural-gradient step
  ``S ← (1−ρ) S − ρ E_q[∇² log p]``, ``μ ← μ + ρ S⁻¹ E_q[∇ log p]`` (pure function).
* :func:`fit`: loop of :func:`ngvi_step`, returning ``(q, history)``.
* :func:`fit_adam`: Adam on the reparameterised ELBO, a baseline.
* :func:`elbo`, :func:`expected_derivatives`: the underlying estimators.
* :class:`BayesianLinearRegression`, :class:`BayesianLogisticRegression`: example models.
* :class:`VariationalOnlineNewton`: a drop-in ``torch.optim`` optimiser that fits a
  mean-field Gaussian posterior over a network's weights (IVON update), with
  :func:`posterior_predictive` and :func:`classification_metrics` (accuracy, NLL, ECE).

Example:
    >>> import torch
    >>> from natgrad.vi import BayesianLinearRegression, FullGaussianQ, fit
    >>> X = torch.tensor([[1.0, 0.5], [0.2, 1.0], [1.0, 1.0]], dtype=torch.float64)
    >>> model = BayesianLinearRegression(X, X @ torch.tensor([1.0, -1.0], dtype=torch.float64),
    ...                                  noise_var=0.1, prior_var=1.0)
    >>> q0 = FullGaussianQ(torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64))
    >>> q, history = fit(model, q0, steps=1, step_size=1.0)
    >>> torch.allclose(q.covariance, model.posterior().covariance)
    True
"""

from natgrad.vi.adam import fit_adam
from natgrad.vi.estimators import (
    GaussianExpectations,
    LogJoint,
    elbo,
    expected_derivatives,
    standard_points,
)
from natgrad.vi.gaussian import DiagGaussianQ, FullGaussianQ, GaussianQ
from natgrad.vi.models import BayesianLinearRegression, BayesianLogisticRegression
from natgrad.vi.ngvi import VIStepInfo, fit, ngvi_step
from natgrad.vi.predictive import (
    classification_metrics,
    expected_calibration_error,
    posterior_predictive,
)
from natgrad.vi.von import VariationalOnlineNewton

__all__ = [
    "BayesianLinearRegression",
    "BayesianLogisticRegression",
    "DiagGaussianQ",
    "FullGaussianQ",
    "GaussianExpectations",
    "GaussianQ",
    "LogJoint",
    "VIStepInfo",
    "VariationalOnlineNewton",
    "classification_metrics",
    "elbo",
    "expected_calibration_error",
    "expected_derivatives",
    "fit",
    "fit_adam",
    "ngvi_step",
    "posterior_predictive",
    "standard_points",
]
