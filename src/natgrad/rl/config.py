"""Typed configuration of the policy-gradient agents, one dataclass per algorithm.

Every field carries a docstring (the string literal under it); the command
line is generated from these fields (``natgrad train --set field=value``) and
``natgrad train --help-config`` prints them.  Values are validated at
construction: a bad value raises ``ValueError`` naming the field, its value
and the allowed range.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import math
import textwrap
from dataclasses import dataclass, field, fields
from typing import Any, get_type_hints


@dataclass
class AgentConfig:
    """Fields shared by TRPO and NPG."""

    env_id: str = "CartPole-v1"
    """Gymnasium environment id."""
    total_steps: int = 100_000
    """Environment steps to train for, all envs together."""
    seed: int = 0
    """Seed of the envs, the action noise, the network initialisation and minibatch order."""
    n_envs: int = 1
    """Number of parallel environments."""
    vec: str = "sync"
    """Rollout backend: "sync" (one process), "async" (subprocesses) or "ray" (Ray actors)."""
    workers: int = 0
    """Rollout workers: subprocesses for vec="async", Ray actors for vec="ray"; 0 picks one
    per CPU core (async) or one per env (ray), at most n_envs."""
    ray_address: str = ""
    """Address of a running Ray cluster for vec="ray" ("" starts a local Ray instance)."""
    n_steps: int = 2048
    """Steps per env per iteration; a batch holds n_steps × n_envs transitions."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    gae_lambda: float = 0.95
    """λ of generalised advantage estimation, in [0, 1]."""
    normalize_advantage: bool = True
    """Standardise advantages over the batch before the policy step."""
    max_kl: float = 0.01
    """Trust-region radius δ: the mean KL(old ‖ new) a step may reach."""
    cg_iters: int = 15
    """Conjugate-gradient iterations per policy step."""
    cg_damping: float = 0.1
    """Damping λ of the Fisher in CG: (F + λI) x = g."""
    cg_rtol: float = 1e-10
    """CG stops early once its residual ‖r‖ ≤ cg_rtol·‖g‖ (or cg_atol is reached)."""
    cg_atol: float = 1e-5
    """CG stops early once its residual ‖r‖ ≤ cg_atol; 1e-5 matches sb3-contrib's
    residual_tol = 1e-10 on ‖r‖²."""
    fisher: str = "ggn"
    """The metric of the step: "ggn" (exact Fisher products Jᵀ F_out J, linearised once),
    "kl_hessian" (exact, by double backprop: the reference) or "kfac" (K-FAC's
    Kronecker-factored Fisher solved directly, no CG: an ACKTR-style step)."""
    fisher_subsample: float = 1.0
    """Fraction of the batch used for Fisher products, in (0, 1]."""
    critic_lr: float = 1e-3
    """Adam learning rate of the critic."""
    n_critic_updates: int = 10
    """Epochs of critic regression per iteration."""
    batch_size: int = 128
    """Minibatch size of the critic regression."""
    policy_hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the actor MLP."""
    critic_hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the critic MLP."""
    activation: str = "tanh"
    """Hidden activation of both MLPs: "tanh" or "relu"."""
    ortho_init: bool = True
    """Orthogonal initialisation (gains √2 hidden, 0.01 policy head, 1 value head)."""
    log_std_init: float = 0.0
    """Initial state-independent log σ of Gaussian policies."""
    normalize_obs: bool = False
    """Running observation normalisation (statistics frozen within an iteration)."""
    normalize_reward: bool = False
    """Scale rewards by the running std of the discounted return."""
    clip_obs: float = 10.0
    """Clip normalised observations to [-clip_obs, clip_obs]."""
    threads: int = 1
    """torch threads for the update (1 is fastest for small MLPs)."""
    critic_worker: bool = True
    """Fit the (default MLP) critic in a helper process while the policy step runs, on a
    second CPU core; the results are bit-identical either way (off on one-core machines)."""
    checkpoint_every: int = 10
    """Write a checkpoint every this many iterations (and always at the end)."""
    eval_episodes: int = 10
    """Episodes of the deterministic evaluation at the end of training."""
    tensorboard: bool = True
    """Write TensorBoard event files next to progress.csv."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name.endswith("_hidden") and isinstance(value, list):
                setattr(self, f.name, tuple(value))
        self.validate()

    # --- validation -----------------------------------------------------------------
    def validate(self) -> None:
        """Raise ``ValueError`` for the first field outside its allowed range."""
        hints = get_type_hints(type(self))
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), hints[f.name])
        _positive_int(self, "total_steps", "n_envs", "n_steps", "cg_iters", "batch_size", "threads")
        _positive_int(self, "checkpoint_every", "n_critic_updates")
        if isinstance(self.workers, bool) or not 0 <= self.workers <= self.n_envs:
            _bad(
                "workers",
                self.workers,
                f"an int in [0, n_envs={self.n_envs}]: each worker needs an env",
            )
        if self.eval_episodes < 0:
            _bad("eval_episodes", self.eval_episodes, "an int >= 0")
        for name in ("gamma", "gae_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                _bad(name, getattr(self, name), "a number in [0, 1]")
        for name in ("max_kl", "critic_lr", "clip_obs"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                _bad(name, v, "a finite number > 0")
        if not (self.cg_damping >= 0 and math.isfinite(self.cg_damping)):
            _bad("cg_damping", self.cg_damping, "a finite number >= 0 (0.1 is usual)")
        for name in ("cg_rtol", "cg_atol"):
            if not getattr(self, name) >= 0:
                _bad(name, getattr(self, name), "a number >= 0")
        if not 0.0 < self.fisher_subsample <= 1.0:
            _bad("fisher_subsample", self.fisher_subsample, "a fraction in (0, 1]")
        _choice(self, "vec", ("sync", "async", "ray"))
        _choice(self, "fisher", ("ggn", "kl_hessian", "kfac"))
        _choice(self, "activation", ("tanh", "relu"))
        for name in ("policy_hidden", "critic_hidden"):
            sizes = getattr(self, name)
            if not sizes or any(not isinstance(h, int) or h < 1 for h in sizes):
                _bad(name, sizes, "a non-empty tuple of positive ints, e.g. (64, 64)")

    # --- introspection --------------------------------------------------------------
    @property
    def batch_steps(self) -> int:
        """Transitions per iteration: ``n_steps × n_envs``."""
        return self.n_steps * self.n_envs

    @property
    def iterations(self) -> int:
        """Iterations needed to reach ``total_steps`` (the last one may overshoot)."""
        return max(1, -(-self.total_steps // self.batch_steps))

    def to_dict(self) -> dict[str, Any]:
        """The constructor fields as plain values (tuples become lists)."""
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.init}

    def replace(self, **changes: Any) -> AgentConfig:
        """A validated copy with ``changes`` applied (unknown fields are an error)."""
        names = {f.name for f in fields(self) if f.init}
        for key in changes:
            if key not in names:
                raise ValueError(_unknown_field_message(type(self), key))
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentConfig:
        """Build from plain values; an unknown key is an error that suggests close names."""
        names = {f.name for f in fields(cls) if f.init}
        for key in data:
            if key not in names:
                raise ValueError(_unknown_field_message(cls, key))
        return cls(**data)

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """The docstring of every field, read from the class source."""
        docs: dict[str, str] = {}
        for klass in reversed(cls.__mro__):
            if not dataclasses.is_dataclass(klass):
                continue
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
            body = tree.body[0].body  # type: ignore[attr-defined]
            for node, nxt in zip(body, body[1:], strict=False):
                if (
                    isinstance(node, ast.AnnAssign)
                    and isinstance(node.target, ast.Name)
                    and isinstance(nxt, ast.Expr)
                    and isinstance(nxt.value, ast.Constant)
                    and isinstance(nxt.value.value, str)
                ):
                    docs[node.target.id] = " ".join(nxt.value.value.split())
        return docs


@dataclass
class TRPOConfig(AgentConfig):
    """Trust Region Policy Optimisation (Schulman et al., 2015): a line-searched natural step."""

    line_search_shrink: float = 0.8
    """Backtracking factor of the line search, in (0, 1)."""
    line_search_max_iter: int = 10
    """Trial points of the line search before the step is rejected (parameters restored)."""

    algo: str = field(default="trpo", init=False, repr=False)

    def validate(self) -> None:
        super().validate()
        if not 0 < self.line_search_shrink < 1:
            _bad("line_search_shrink", self.line_search_shrink, "a number in (0, 1)")
        _positive_int(self, "line_search_max_iter")


@dataclass
class NPGConfig(AgentConfig):
    """Natural Policy Gradient (Kakade, 2001): the natural step of fixed KL radius, no line search."""

    algo: str = field(default="npg", init=False, repr=False)


CONFIGS: dict[str, type[AgentConfig]] = {"trpo": TRPOConfig, "npg": NPGConfig}


# --- helpers -------------------------------------------------------------------------
def _bad(name: str, value: Any, allowed: str) -> None:
    raise ValueError(f"invalid config: {name}={value!r}; it must be {allowed}")


def _positive_int(cfg: AgentConfig, *names: str) -> None:
    for name in names:
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            _bad(name, v, "an int >= 1")


def _choice(cfg: AgentConfig, name: str, options: tuple[str, ...]) -> None:
    if getattr(cfg, name) not in options:
        _bad(name, getattr(cfg, name), f"one of {', '.join(map(repr, options))}")


def _check_type(name: str, value: Any, hint: Any) -> None:
    origin = getattr(hint, "__origin__", None)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif hint is str:
        ok = isinstance(value, str)
    elif origin is tuple:
        ok = isinstance(value, tuple)
    else:
        ok = True
    if not ok:
        _bad(name, value, f"of type {getattr(hint, '__name__', hint)}")


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _unknown_field_message(cls: type, key: str) -> str:
    import difflib

    names = [f.name for f in fields(cls) if f.init]
    close = difflib.get_close_matches(key, names, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; valid fields: {', '.join(names)}"
    return f"unknown config field {key!r} for {cls.__name__}{hint}"


def parse_value(cls: type[AgentConfig], name: str, text: str) -> Any:
    """Parse the command-line text for field ``name`` by the field's type."""
    hints = get_type_hints(cls)
    if name not in hints or name == "algo":
        raise ValueError(_unknown_field_message(cls, name))
    hint = hints[name]
    try:
        if hint is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if hint is int:
            return int(float(text)) if "e" in text.lower() else int(text)
        if hint is float:
            return float(text)
        if getattr(hint, "__origin__", None) is tuple:
            return tuple(int(x) for x in text.replace("(", "").replace(")", "").split(",") if x)
        return text
    except ValueError:
        raise ValueError(
            f"invalid config: {name}={text!r} cannot be read as {getattr(hint, '__name__', hint)}"
        ) from None
