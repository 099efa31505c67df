"""Benchmark: the cost of one Fisher-vector product against one gradient.

The model is a Gaussian MLP policy (obs 11, tanh hidden layers, 3 actions,
state-independent log σ) on a batch of 2,048 in float32 with one thread,
the setting of a TRPO update on Hopper.  For each method it measures the
median time of

* ``grad``: forward and backward of the TRPO surrogate loss;
* ``mv``: one Fisher product, after set-up;
* ``setup``: building the operator (a linearisation, or the KL gradient
  with ``create_graph``), amortised over ``--cg-iters`` products, the number
  one CG solve makes;

and reports ``(setup / cg_iters + mv) / grad``, the ratio that real use pays.
``ggn_mlp`` is the hand-linearised :class:`MLPFisher` that the TRPO agent
uses for its default MLP policies; ``ggn`` shares the surrogate's forward
(``GGNFisher.from_distribution``), as the agent does for other actors; ``ggn_own_forward`` makes its own; ``ggn_func`` is one
``torch.func.jvp`` plus a stored vjp per product; ``func_linearize`` uses
``torch.func.linearize``; ``kl_hessian`` is the seed's and sb3-contrib's
double backprop.

    python bench/fvp.py            # prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from natgrad.distributions import DiagGaussian
from natgrad.fisher import GGNFisher, KLHessianFisher, MLPFisher
from natgrad.params import flatten, functional_model, numel

warnings.filterwarnings("ignore", message="Attempted to insert a get_attr Node")


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _policy(hidden: int, seed: int = 0):
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Linear(11, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, 3)
    )
    log_std = nn.Parameter(torch.zeros(3))
    return net, log_std


def measure(hidden: int, batch: int = 2048, cg_iters: int = 15, repeats: int = 30) -> dict:
    """Median times (seconds) and amortised ratios for one network width."""
    net, log_std = _policy(hidden)
    params = [*net.parameters(), log_std]
    f = functional_model(net, list(net.parameters()))
    obs = torch.randn(batch, 11)
    with torch.no_grad():
        old = DiagGaussian(net(obs), log_std).detach()
        actions = old.sample(torch.Generator().manual_seed(0))
        old_lp = old.log_prob(actions)
    adv = torch.randn(batch)

    def fn(ps, x):
        return DiagGaussian(f(ps[:-1], x), ps[-1])

    def surrogate(dist):
        return -(torch.exp(dist.log_prob(actions) - old_lp) * adv).mean()

    def grad():
        return torch.autograd.grad(surrogate(DiagGaussian(net(obs), log_std)), params)

    v = torch.randn(numel(params))
    t_grad = _median_time(grad, repeats)

    def shared_setup():
        dist = DiagGaussian(net(obs), log_std)
        g = flatten(torch.autograd.grad(surrogate(dist), params, retain_graph=True))
        return g, GGNFisher.from_distribution(dist, params)

    def shared_klh_setup():
        dist = DiagGaussian(net(obs), log_std)
        g = flatten(torch.autograd.grad(surrogate(dist), params, retain_graph=True))
        return g, KLHessianFisher.from_distribution(dist, params)

    def func_linearize():
        primals = tuple(p.detach() for p in params)
        _, jvp_fn = torch.func.linearize(lambda *ps: fn(ps, obs).params, *primals)
        return jvp_fn

    results = {}

    # Set-up cost beyond the gradient: shared set-ups include the gradient itself.
    def mlp_setup():
        g = grad()  # the surrogate gradient is needed anyway; MLPFisher adds its own forward
        return g, MLPFisher(net, obs, lambda out: DiagGaussian(out, log_std), log_std=log_std)

    methods = {
        "ggn_mlp": (lambda: mlp_setup()[1], t_grad),
        "ggn": (lambda: shared_setup()[1], t_grad),
        "kl_hessian": (lambda: shared_klh_setup()[1], t_grad),
        "ggn_own_forward": (lambda: GGNFisher(fn, params, obs), 0.0),
        "ggn_func": (lambda: GGNFisher(fn, params, obs, linearize=False), 0.0),
    }
    for name, (build, already_paid) in methods.items():
        t_setup = max(_median_time(build, max(5, repeats // 3)) - already_paid, 0.0)
        op = build()
        t_mv = _median_time(lambda op=op: op.mv(v), repeats)
        results[name] = {
            "mv_s": t_mv,
            "setup_s": t_setup,
            "mv_over_grad": t_mv / t_grad,
            "amortised_over_grad": (t_setup / cg_iters + t_mv) / t_grad,
        }
    t_lin_setup = _median_time(func_linearize, 3)
    jvp_fn = func_linearize()
    tangents = [t.view_as(p) for t, p in zip(torch.split(v, [p.numel() for p in params]), params)]
    t_lin_jvp = _median_time(lambda: jvp_fn(*tangents), repeats)
    results["func_linearize_jvp_only"] = {
        "mv_s": t_lin_jvp,
        "setup_s": t_lin_setup,
        "mv_over_grad": t_lin_jvp / t_grad,
        "amortised_over_grad": (t_lin_setup / cg_iters + t_lin_jvp) / t_grad,
    }
    return {"hidden": hidden, "batch": batch, "cg_iters": cg_iters, "grad_s": t_grad, **results}


def run(quick: bool = False) -> dict:
    """Run the benchmark; ``quick`` uses a small batch and few repeats (for tests)."""
    torch.set_num_threads(1)
    batch, repeats = (256, 3) if quick else (2048, 30)
    out = {"torch": torch.__version__, "threads": 1, "dtype": "float32"}
    for hidden in (64, 256):
        out[f"h{hidden}"] = measure(hidden, batch=batch, repeats=repeats)
    h64 = out["h64"]
    out["summary"] = {
        "ggn_mlp_amortised_over_grad_64": round(h64["ggn_mlp"]["amortised_over_grad"], 3),
        "ggn_mlp_amortised_over_grad_256": round(out["h256"]["ggn_mlp"]["amortised_over_grad"], 3),
        "ggn_amortised_over_grad_64": round(h64["ggn"]["amortised_over_grad"], 3),
        "kl_hessian_amortised_over_grad_64": round(h64["kl_hessian"]["amortised_over_grad"], 3),
        "ggn_amortised_over_grad_256": round(out["h256"]["ggn"]["amortised_over_grad"], 3),
        "kl_hessian_amortised_over_grad_256": round(
            out["h256"]["kl_hessian"]["amortised_over_grad"], 3
        ),
        "target_ggn_64": 1.3,
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batch, few repeats")
    args = parser.parse_args()
    print(json.dumps(run(args.quick)))


if __name__ == "__main__":
    main()
