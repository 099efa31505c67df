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

Peers, same model, same batch, same run (``bench/fvp_peers.py``; each arm is
skipped with a message in ``skipped`` when its package is missing):
``curvlinops_ggn`` (curvlinops' ``GGNLinearOperator``; for the policy, the GGN of
the MSE of the mean network, which at σ = 1 is the Fisher's mean-network block)
and ``nngeometry_fim`` (nngeometry's ``FIM`` as ``PMatImplicit``; ``regression``
for the policy, ``classif_logits`` for the CNN). Their products cover the
network's weights only; natgrad's also cover ``log σ``.

Second model: ``cnn``, the MNIST-1D 1-D CNN of ``bench/nets.py`` (5,210 weights)
as a classifier (categorical output) on a batch of 256 random signals of length 40
(only shapes matter for the timing); its gradient is the cross-entropy's.

``kfac``: the time of a K-FAC factor update + damped inverse + one preconditioned
gradient (the forward included, the gradient not) as a ratio to one gradient,
natgrad's :class:`~natgrad.optim.KFAC` against curvlinops' ``KFACLinearOperator`` +
``KFACInverseLinearOperator`` (one sampled target per input for both; weight and
bias in one Kronecker block for both). kfac-pytorch is not on PyPI, so it is not
measured (the message is in ``skipped``).

    python bench/fvp.py            # prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from natgrad.distributions import Categorical, DiagGaussian
from natgrad.fisher import GGNFisher, KLHessianFisher, MLPFisher
from natgrad.optim import KFAC
from natgrad.params import flatten, functional_model, numel

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fvp_peers  # noqa: E402
from nets import CNN1D  # noqa: E402

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


def _time_op(build, v, t_grad, cg_iters, repeats, already_paid=0.0) -> dict:
    """Set-up (minus what the gradient already paid) and product times of one operator."""
    t_setup = max(_median_time(build, max(5, repeats // 3)) - already_paid, 0.0)
    op = build()
    t_mv = _median_time(lambda: op.mv(v), repeats)
    return {
        "mv_s": t_mv,
        "setup_s": t_setup,
        "mv_over_grad": t_mv / t_grad,
        "amortised_over_grad": (t_setup / cg_iters + t_mv) / t_grad,
    }


def _peer_methods(skipped: dict, curvlinops, nngeometry) -> dict:
    """The peers' builders whose packages import; the others go to ``skipped``."""
    out = {}
    for name, package, build in (
        ("curvlinops_ggn", "curvlinops", curvlinops),
        ("nngeometry_fim", "nngeometry", nngeometry),
    ):
        why = fvp_peers.unavailable(package)
        if why is None:
            out[name] = build
        else:
            skipped[name] = why
    return out


def measure(
    hidden: int, batch: int = 2048, cg_iters: int = 15, repeats: int = 30, skipped=None
) -> dict:
    """Median times (seconds) and amortised ratios for one network width."""
    skipped = {} if skipped is None else skipped
    net, log_std = _policy(hidden)
    net_params = list(net.parameters())
    params = [*net_params, log_std]
    f = functional_model(net, net_params)
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
    v_net = v[: numel(net_params)]
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

    # Set-up cost beyond the gradient: shared set-ups include the gradient itself.
    def mlp_setup():
        g = grad()  # the surrogate gradient is needed anyway; MLPFisher adds its own forward
        return g, MLPFisher(net, obs, lambda out: DiagGaussian(out, log_std), log_std=log_std)

    methods = {
        "ggn_mlp": (lambda: mlp_setup()[1], t_grad, v),
        "ggn": (lambda: shared_setup()[1], t_grad, v),
        "kl_hessian": (lambda: shared_klh_setup()[1], t_grad, v),
        "ggn_own_forward": (lambda: GGNFisher(fn, params, obs), 0.0, v),
        "ggn_func": (lambda: GGNFisher(fn, params, obs, linearize=False), 0.0, v),
    }
    target = torch.zeros(batch, 3)  # the GGN of the MSE does not depend on the target
    peers = _peer_methods(
        skipped,
        lambda: fvp_peers.curvlinops_ggn(net, nn.MSELoss(), net_params, obs, target),
        lambda: fvp_peers.nngeometry_fim(net, obs, "regression"),
    )
    methods.update({name: (build, 0.0, v_net) for name, build in peers.items()})
    results = {
        name: _time_op(build, vec, t_grad, cg_iters, repeats, paid)
        for name, (build, paid, vec) in methods.items()
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


def measure_cnn(batch: int = 256, cg_iters: int = 15, repeats: int = 30, skipped=None) -> dict:
    """The same comparison on the MNIST-1D CNN classifier (categorical output)."""
    skipped = {} if skipped is None else skipped
    torch.manual_seed(0)
    model = CNN1D()
    params = list(model.parameters())
    f = functional_model(model, params)
    x = torch.randn(batch, 40)
    y = torch.randint(0, 10, (batch,), generator=torch.Generator().manual_seed(0))
    v = torch.randn(numel(params))

    def fn(ps, b):
        return Categorical(f(ps, b))

    def grad():
        return torch.autograd.grad(nn.functional.cross_entropy(model(x), y), params)

    t_grad = _median_time(grad, repeats)

    def shared_setup():
        dist = Categorical(model(x))
        g = torch.autograd.grad(
            nn.functional.cross_entropy(dist.logits, y), params, retain_graph=True
        )
        return g, GGNFisher.from_distribution(dist, params)

    methods = {
        "ggn": (lambda: shared_setup()[1], t_grad),
        "ggn_own_forward": (lambda: GGNFisher(fn, params, x), 0.0),
        "ggn_func": (lambda: GGNFisher(fn, params, x, linearize=False), 0.0),
    }
    methods.update(
        (name, (build, 0.0))
        for name, build in _peer_methods(
            skipped,
            lambda: fvp_peers.curvlinops_ggn(model, nn.CrossEntropyLoss(), params, x, y),
            lambda: fvp_peers.nngeometry_fim(model, x, "classif_logits"),
        ).items()
    )
    results = {
        name: _time_op(build, v, t_grad, cg_iters, repeats, paid)
        for name, (build, paid) in methods.items()
    }
    return {"model": "cnn1d", "batch": batch, "n_params": numel(params), "cg_iters": cg_iters,
            "grad_s": t_grad, **results}  # fmt: skip


def measure_kfac(hidden: int, batch: int = 2048, repeats: int = 30, skipped=None) -> dict:
    """K-FAC factor update + damped inverse + one solve, as a ratio to one gradient."""
    skipped = {} if skipped is None else skipped
    net, log_std = _policy(hidden)
    params = list(net.parameters())
    obs = torch.randn(batch, 11)
    target = torch.randn(batch, 3)
    damping = 1e-2

    def grad():
        return torch.autograd.grad(-DiagGaussian(net(obs), log_std).log_prob(target).mean(), params)

    t_grad = _median_time(grad, repeats)
    g = [t.detach() for t in grad()]
    kfac = KFAC(net, damping=damping, seed=0)

    def natgrad_kfac():
        with kfac.capture():
            dist = DiagGaussian(net(obs), log_std.detach())
        kfac.update_factors(dist)
        kfac.update_inverses()
        return kfac.solve(g)

    t = {"natgrad_kfac": _median_time(natgrad_kfac, repeats)}
    kfac.remove_hooks()
    if (why := fvp_peers.unavailable("curvlinops")) is None:

        def curvlinops_kfac():
            inv = fvp_peers.curvlinops_kfac(net, nn.MSELoss(), params, obs, target, damping)
            return inv @ g

        t["curvlinops_kfac"] = _median_time(curvlinops_kfac, repeats)
    else:
        skipped["curvlinops_kfac"] = why
    skipped["kfac_pytorch"] = fvp_peers.KFAC_PYTORCH
    return {"hidden": hidden, "batch": batch, "grad_s": t_grad,
            **{k: {"s": s, "over_grad": s / t_grad} for k, s in t.items()}}  # fmt: skip


def _best(res: dict, names) -> tuple[str, float] | None:
    found = [(n, res[n]["amortised_over_grad"]) for n in names if n in res]
    return min(found, key=lambda item: item[1]) if found else None


NATGRAD = ("ggn_mlp", "ggn", "ggn_own_forward", "ggn_func")
PEERS = ("curvlinops_ggn", "nngeometry_fim")


def run(quick: bool = False) -> dict:
    """Run the benchmark; ``quick`` uses a small batch and few repeats (for tests)."""
    torch.set_num_threads(1)
    batch, repeats = (256, 3) if quick else (2048, 30)
    skipped: dict[str, str] = {}
    out = {"torch": torch.__version__, "threads": 1, "dtype": "float32", "skipped": skipped}
    for hidden in (64, 256):
        out[f"h{hidden}"] = measure(hidden, batch=batch, repeats=repeats, skipped=skipped)
    out["cnn"] = measure_cnn(batch=64 if quick else 256, repeats=repeats, skipped=skipped)
    out["kfac"] = {
        f"h{hidden}": measure_kfac(hidden, batch=batch, repeats=repeats, skipped=skipped)
        for hidden in (64, 256)
    }
    h64 = out["h64"]
    summary = {
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
    # Target (issue 13): natgrad's best product <= the fastest peer's, on every model.
    for model in ("h64", "h256", "cnn"):
        ours, peer = _best(out[model], NATGRAD), _best(out[model], PEERS)
        if ours and peer:
            summary[f"{model}_natgrad_best"] = f"{ours[0]} {ours[1]:.3f}"
            summary[f"{model}_fastest_peer"] = f"{peer[0]} {peer[1]:.3f}"
            summary[f"{model}_natgrad_over_fastest_peer"] = round(ours[1] / peer[1], 3)
    out["summary"] = summary
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small batch, few repeats")
    args = parser.parse_args()
    print(json.dumps(run(args.quick)))


if __name__ == "__main__":
    main()
