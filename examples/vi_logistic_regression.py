"""Bayesian logistic regression on scikit-learn's bundled breast-cancer data: NG-VI vs Adam.

Both fit a full-covariance Gaussian ``q(w)`` (31 weights: 30 standardised features
plus a bias, prior ``N(0, I)``) with the same number of log-joint evaluations per
step (``2 * n_samples``, antithetic). NG-VI uses ``ρ = 1`` for three steps and
``ρ = 0.5`` afterwards; Adam uses a decaying learning rate ``0.05 / (1 + t/100)``.
The script prints an ELBO trajectory (common random numbers, so the columns are
comparable) and held-out accuracy of the posterior mean ``σ(xᵀμ)`` and of the
posterior predictive ``E_q[σ(xᵀw)]``.

Run:  python examples/vi_logistic_regression.py [--ng-steps 30] [--adam-steps 2000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer

from natgrad.vi import BayesianLogisticRegression, FullGaussianQ, elbo, fit, fit_adam

F64 = torch.float64
REPORT_AT = (0, 1, 2, 3, 5, 10, 20, 30, 100, 300, 1000, 2000)


def load_data(seed: int, n_train: int = 400):
    """Shuffled train/test split, standardised with training statistics, bias column appended."""
    X, y = load_breast_cancer(return_X_y=True)
    perm = np.random.default_rng(seed).permutation(len(y))
    tr, te = perm[:n_train], perm[n_train:]
    mean, std = X[tr].mean(0), X[tr].std(0)
    Xs = np.hstack([(X - mean) / std, np.ones((len(y), 1))])

    def as_t(a):
        return torch.tensor(a, dtype=F64)

    return as_t(Xs[tr]), as_t(y[tr]), as_t(Xs[te]), as_t(y[te])


def evaluate(model, q, X_test, y_test, seed: int) -> dict[str, float]:
    """Held-out accuracy of the posterior mean and the predictive, and mean log predictive."""
    p_mean = model.predict_proba(q, X_test, n_samples=None)
    g = torch.Generator().manual_seed(seed)
    p_pred = model.predict_proba(q, X_test, n_samples=2000, generator=g).clamp(1e-12, 1 - 1e-12)
    lpd = (y_test * p_pred.log() + (1 - y_test) * (-p_pred).log1p()).mean()
    return {
        "acc_mean": float(((p_mean > 0.5).to(F64) == y_test).to(F64).mean()),
        "acc_predictive": float(((p_pred > 0.5).to(F64) == y_test).to(F64).mean()),
        "test_log_pred": float(lpd),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ng-steps", type=int, default=30)
    p.add_argument("--adam-steps", type=int, default=2000)
    p.add_argument("--n-samples", type=int, default=16, help="antithetic pairs per step")
    p.add_argument("--elbo-samples", type=int, default=500, help="pairs for reported ELBOs")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    X_tr, y_tr, X_te, y_te = load_data(args.seed)
    model = BayesianLogisticRegression(X_tr, y_tr, prior_var=1.0)
    d = model.dim
    q0 = FullGaussianQ(torch.zeros(d, dtype=F64), torch.eye(d, dtype=F64))

    def elbo_crn(q) -> float:  # common random numbers across methods and steps
        g = torch.Generator().manual_seed(12345)
        return float(elbo(model, q, n_samples=args.elbo_samples, generator=g))

    def recorder(store: dict[int, float]):
        def callback(t, q, info):
            if t + 1 in REPORT_AT:
                store[t + 1] = elbo_crn(q)

        return callback

    ng_elbo: dict[int, float] = {0: elbo_crn(q0)}
    adam_elbo: dict[int, float] = {0: ng_elbo[0]}
    g = torch.Generator().manual_seed(args.seed)

    t0 = time.perf_counter()
    q_ng, hist = fit(
        model, q0, steps=args.ng_steps, step_size=lambda t: 1.0 if t < 3 else 0.5,
        n_samples=args.n_samples, generator=g, callback=recorder(ng_elbo),
    )  # fmt: skip
    t_ng = time.perf_counter() - t0
    t0 = time.perf_counter()
    q_adam, _ = fit_adam(
        model, q0, steps=args.adam_steps, lr=lambda t: 0.05 / (1.0 + t / 100.0),
        n_samples=args.n_samples, generator=g, callback=recorder(adam_elbo),
    )  # fmt: skip
    t_adam = time.perf_counter() - t0
    failed = sum(not h.ok for h in hist)

    print(f"Breast cancer, {len(y_tr)} train / {len(y_te)} test, d={d}, "
          f"{2 * args.n_samples} log-joint evaluations per step")  # fmt: skip
    print(f"{'step':>6} {'NG-VI ELBO':>12} {'Adam ELBO':>12}")
    for t in REPORT_AT:
        if t in ng_elbo or t in adam_elbo:
            ng = f"{ng_elbo[t]:12.3f}" if t in ng_elbo else f"{'':12}"
            ad = f"{adam_elbo[t]:12.3f}" if t in adam_elbo else f"{'':12}"
            print(f"{t:>6} {ng} {ad}")
    res_ng = evaluate(model, q_ng, X_te, y_te, args.seed)
    res_adam = evaluate(model, q_adam, X_te, y_te, args.seed)
    print(f"{'':>20} {'acc(mean)':>10} {'acc(pred)':>10} {'log pred':>9} {'time':>7}")
    for name, r, secs, steps in (("NG-VI", res_ng, t_ng, len(hist)),
                                 ("Adam", res_adam, t_adam, args.adam_steps)):  # fmt: skip
        print(f"{name + f' ({steps} steps)':>20} {r['acc_mean']:10.3f} {r['acc_predictive']:10.3f} "
              f"{r['test_log_pred']:9.4f} {secs:6.2f}s")  # fmt: skip
    if failed:
        print(f"NG-VI: {failed} step(s) failed (non-PD precision) and were not applied")
    return {"ngvi": {"elbo": ng_elbo, **res_ng}, "adam": {"elbo": adam_elbo, **res_adam}}


if __name__ == "__main__":
    torch.set_num_threads(1)  # small matrices: one thread is fastest
    main()
