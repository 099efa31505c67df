"""The policy's networks: sizes, activation and initialisation of the default MLPs.

SB3's ``policy_kwargs`` map onto these fields (:meth:`PolicyConfig.from_policy_kwargs`):

>>> from torch import nn
>>> PolicyConfig.from_policy_kwargs(dict(net_arch=dict(pi=[32], vf=[64, 64]),
...                                      activation_fn=nn.ReLU)).policy_hidden
(32,)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from natgrad.rl.config.base import ConfigBase, _bad, _choice

__all__ = ["ACTIVATION_NAMES", "PolicyConfig"]

ACTIVATION_NAMES = ("tanh", "relu")


@dataclass
class PolicyConfig(ConfigBase):
    """Actor and critic networks (used unless a custom actor/critic module is given)."""

    policy_hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the actor MLP (SB3: net_arch["pi"])."""
    critic_hidden: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the critic MLP (SB3: net_arch["vf"])."""
    activation: str = "tanh"
    """Hidden activation of both MLPs: "tanh" or "relu" (SB3: activation_fn)."""
    ortho_init: bool = True
    """Orthogonal initialisation (gains √2 hidden, 0.01 policy head, 1 value head)."""
    log_std_init: float = 0.0
    """Initial log σ of Gaussian policies (with use_sde: of every entry of the exploration
    log-std matrix)."""
    use_sde: bool = False
    """Generalised state-dependent exploration (gSDE, Box actions, the default MLP actor):
    the noise is z(s) ε, z the actor's last hidden layer, ε a matrix held for
    sde_sample_freq steps (SB3: use_sde)."""
    sde_sample_freq: int = -1
    """With use_sde: draw a new exploration matrix every this many steps; -1 only at the
    start of each rollout (SB3: sde_sample_freq)."""
    features_extractor: str = "auto"
    """How observations become features (SB3: features_extractor_class): "auto" (a CNN
    per image, NatureCNN from 36×36 up and the small MinAtar CNN below; vectors as they
    are), "nature", "small", "flatten" (images flattened and scaled to [0, 1], no CNN), or
    "module:Class", an SB3-style extractor class (natgrad.rl.policies.extractors)."""
    features_dim: int = 0
    """Output size of each CNN (0: its default, 512 for NatureCNN, 128 for the small CNN)."""
    features_extractor_kwargs: dict[str, Any] | None = None
    """More keyword arguments for the extractor's constructor (SB3's name), e.g.
    {"channels": 32} for the small CNN."""

    def validate(self) -> None:
        super().validate()
        _choice(self, "activation", ACTIVATION_NAMES)
        name = self.features_extractor
        if ":" not in name:
            _choice(self, "features_extractor", ("auto", "nature", "small", "flatten"))
        if isinstance(self.features_dim, bool) or self.features_dim < 0:
            _bad("features_dim", self.features_dim, "an int >= 0 (0: the CNN's default)")
        kw = self.features_extractor_kwargs
        if kw is not None and not (isinstance(kw, dict) and all(isinstance(k, str) for k in kw)):
            _bad("features_extractor_kwargs", kw, "a dict of keyword arguments, or None")
        freq = self.sde_sample_freq
        if isinstance(freq, bool) or not isinstance(freq, int) or (freq < 1 and freq != -1):
            _bad("sde_sample_freq", freq, "an int >= 1, or -1 (once per rollout)")
        for name in ("policy_hidden", "critic_hidden"):
            sizes = getattr(self, name)
            if not sizes or any(
                isinstance(h, bool) or not isinstance(h, int) or h < 1 for h in sizes
            ):
                _bad(name, sizes, "a non-empty tuple of positive ints, e.g. (64, 64)")

    @classmethod
    def from_policy_kwargs(
        cls, kwargs: Mapping[str, Any] | None, base: PolicyConfig | None = None
    ) -> PolicyConfig:
        """Read SB3-style ``policy_kwargs`` (``net_arch``, ``activation_fn``,
        ``log_std_init``, ``ortho_init``, ``use_sde``, ``sde_sample_freq``,
        ``features_extractor_class``, ``features_extractor_kwargs``,
        ``share_features_extractor=False``) and natgrad's own field names over ``base``.

        ``net_arch`` is a list (both networks) or ``dict(pi=[...], vf=[...])``;
        ``activation_fn`` is ``nn.Tanh``/``nn.ReLU`` (the class) or ``"tanh"``/``"relu"``;
        ``features_extractor_class`` is a class (natgrad's or SB3's ``NatureCNN``,
        ``SmallCNN``, ``FlattenExtractor``, or any SB3-style extractor) or a name.
        """
        values = (base or cls()).to_dict()
        for key, value in dict(kwargs or {}).items():
            if key == "net_arch":
                if isinstance(value, Mapping):
                    unknown = set(value) - {"pi", "vf"}
                    if unknown:
                        raise ValueError(
                            f"policy_kwargs['net_arch'] has keys {sorted(unknown)}; use "
                            "dict(pi=[...], vf=[...]) or one list for both networks"
                        )
                    if "pi" in value:
                        values["policy_hidden"] = tuple(value["pi"])
                    if "vf" in value:
                        values["critic_hidden"] = tuple(value["vf"])
                else:
                    values["policy_hidden"] = values["critic_hidden"] = tuple(value)
            elif key == "activation_fn":
                values["activation"] = _activation_name(value)
            elif key == "features_extractor_class":
                from natgrad.rl.policies.extractors import extractor_name

                values["features_extractor"] = extractor_name(value)
            elif key == "features_extractor_kwargs" and value is not None:
                extra = dict(value)
                if "features_dim" in extra:
                    values["features_dim"] = int(extra.pop("features_dim"))
                values["features_extractor_kwargs"] = extra or None
            elif key == "share_features_extractor":
                if value:
                    raise ValueError(
                        "policy_kwargs['share_features_extractor']=True: natgrad's actor and "
                        "critic share nothing (the trust region bounds the actor alone); pass "
                        "False or leave it out"
                    )
            elif key in values:
                values[key] = tuple(value) if key.endswith("_hidden") else value
            else:
                raise ValueError(
                    f"policy_kwargs[{key!r}] is not supported; use net_arch, activation_fn, "
                    "log_std_init, ortho_init, features_extractor_class, "
                    "features_extractor_kwargs (or natgrad's names: "
                    f"{', '.join(cls.field_names())}); for other networks pass actor=/critic="
                )
        return cls.from_dict(values)


def _activation_name(value: Any) -> str:
    if isinstance(value, str) and value.lower() in ACTIVATION_NAMES:
        return value.lower()
    if isinstance(value, type) and issubclass(value, nn.Tanh):
        return "tanh"
    if isinstance(value, type) and issubclass(value, nn.ReLU):
        return "relu"
    raise ValueError(
        f"policy_kwargs['activation_fn']={value!r} is not supported by the default MLPs; use "
        "nn.Tanh or nn.ReLU, or pass your own actor=/critic= modules"
    )
