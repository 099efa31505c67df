"""Feature extractors: from the flat observation vector to the features the MLP head reads.

The rollout stores every observation as a flat float vector
(:mod:`~natgrad.rl.envs.layout`); :class:`ObsFeatures` cuts it back into its parts and
sends each through its own extractor (SB3's ``CombinedExtractor`` for ``Dict`` spaces,
its ``NatureCNN`` for one image), concatenating the results:

* an **image** goes through a CNN, chosen by size unless set: :class:`NatureCNN` (Mnih
  et al., 2015, the DQN network SB3 uses) from 36×36 up, :class:`SmallCNN` (Young & Tian,
  2019, the MinAtar network) below. It is transposed to ``C×H×W`` (when the env gives
  ``H×W×C``) and scaled to ``[0, 1]`` (``uint8``) inside the forward pass, batched;
* a **vector** (``Box``) or a **one-hot** (``Discrete``) part passes as it is.

``features_extractor`` (a :class:`~natgrad.rl.config.PolicyConfig` field; SB3's
``policy_kwargs=dict(features_extractor_class=...)`` maps onto it) picks the CNN:
``"auto"``, ``"nature"``, ``"small"``, ``"flatten"`` (images flattened and scaled, no
CNN), or ``"module:Class"``, an SB3-style extractor built as
``Class(observation_space, **features_extractor_kwargs)`` with a ``features_dim``
attribute, called on the observation in the space's own layout (a dict of tensors for a
``Dict`` space; images scaled to ``[0, 1]`` but not transposed, as SB3 gives them).

>>> import torch
>>> from gymnasium import spaces
>>> from natgrad.rl.envs.layout import obs_layout
>>> f = ObsFeatures(obs_layout(spaces.Box(0, 1, (10, 10, 4), bool)))
>>> type(f.extractors[0]).__name__, f.features_dim, f(torch.zeros(2, 400)).shape
('SmallCNN', 128, torch.Size([2, 128]))
"""

from __future__ import annotations

import importlib
import math
from typing import Any

import torch
from torch import Tensor, nn

from natgrad.rl.envs.layout import ObsLayout, ObsPart

__all__ = [
    "EXTRACTOR_NAMES",
    "NatureCNN",
    "ObsFeatures",
    "SmallCNN",
    "extractor_name",
    "needs_extractor",
]

EXTRACTOR_NAMES = ("auto", "nature", "small", "flatten")
NATURE_MIN = 36  # 36 → 8 → 3 → 1 through NatureCNN's three convolutions
SMALL_MIN = 3


def _conv_out(size: int, kernel: int, stride: int) -> int:
    return (size - kernel) // stride + 1


class NatureCNN(nn.Module):
    """The DQN network (Mnih et al., 2015): three ReLU convolutions, then ``features_dim``.

    ``Conv(32, 8×8, /4) → Conv(64, 4×4, /2) → Conv(64, 3×3, /1) → Linear(features_dim)``,
    ReLU after each. Needs images of at least 36×36.

    Args:
        image_shape: ``(C, H, W)`` of the input.
        features_dim: Output size (SB3's default: 512).
    """

    def __init__(self, image_shape: tuple[int, int, int], features_dim: int = 512) -> None:
        super().__init__()
        c, h, w = image_shape
        if min(h, w) < NATURE_MIN:
            raise ValueError(
                f"an image observation of C×H×W {c}×{h}×{w} is too small for NatureCNN, which "
                f"needs at least {NATURE_MIN}×{NATURE_MIN}; set policy_kwargs="
                "dict(features_extractor='small') (the MinAtar CNN) or 'flatten'"
            )
        for k, s in ((8, 4), (4, 2), (3, 1)):
            h, w = _conv_out(h, k, s), _conv_out(w, k, s)
        self.cnn = nn.Sequential(
            nn.Conv2d(c, 32, 8, stride=4), nn.ReLU(),
            nn.Conv2d(32, 64, 4, stride=2), nn.ReLU(),
            nn.Conv2d(64, 64, 3, stride=1), nn.ReLU(),
            nn.Flatten(),
        )  # fmt: skip
        self.linear = nn.Sequential(nn.Linear(64 * h * w, features_dim), nn.ReLU())
        self.features_dim = int(features_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.cnn(x))


class SmallCNN(nn.Module):
    """The MinAtar network (Young & Tian, 2019): one 3×3 convolution, then ``features_dim``.

    ``Conv(channels, 3×3, /1) → ReLU → Linear(features_dim) → ReLU``, for tiny grids
    such as MinAtar's 10×10 (at least 3×3).

    Args:
        image_shape: ``(C, H, W)`` of the input.
        features_dim: Output size (MinAtar's: 128).
        channels: Filters of the convolution (MinAtar's: 16).
    """

    def __init__(
        self, image_shape: tuple[int, int, int], features_dim: int = 128, channels: int = 16
    ) -> None:
        super().__init__()
        c, h, w = image_shape
        if min(h, w) < SMALL_MIN:
            raise ValueError(
                f"an image observation of C×H×W {c}×{h}×{w} is too small for the small CNN "
                f"(3×3 kernel); set policy_kwargs=dict(features_extractor='flatten')"
            )
        self.cnn = nn.Sequential(nn.Conv2d(c, channels, 3, stride=1), nn.ReLU(), nn.Flatten())
        self.linear = nn.Sequential(
            nn.Linear(channels * (h - 2) * (w - 2), features_dim), nn.ReLU()
        )
        self.features_dim = int(features_dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(self.cnn(x))


def needs_extractor(layout: ObsLayout, name: str) -> bool:
    """Whether the policy needs :class:`ObsFeatures` (else: a plain MLP on the flat vector).

    Raises:
        ValueError: ``uint8`` data that is no image under ``"auto"`` (a 1-D ``uint8`` Box),
            or a CNN named for a space without images.
    """
    if ":" in name:
        return True
    if name == "flatten":
        return any(p.scale != 1.0 for p in layout.parts)
    for p in layout.parts:
        if p.kind == "vector" and p.dtype == "uint8" and name == "auto":
            where = f"Dict key {p.key!r} " if p.key is not None else ""
            raise ValueError(
                f"the observation {where}is uint8 of shape {p.shape}: not an image the CNNs "
                "can take (they need H×W or C×H×W / H×W×C); set policy_kwargs="
                "dict(features_extractor='flatten') to feed it to the MLP scaled to [0, 1]"
            )
    if name in ("nature", "small") and not layout.has_images:
        raise ValueError(
            f"features_extractor={name!r} needs an image observation (a uint8 or bool Box "
            f"with 2 or 3 axes), but the space is {layout.space!r}; use 'auto' or 'flatten'"
        )
    return layout.has_images


def _image(part: ObsPart, x: Tensor, transpose: bool = True) -> Tensor:
    img = x[:, part.offset : part.offset + part.size].reshape(x.shape[0], *part.shape)
    if len(part.shape) == 2 and transpose:
        img = img.unsqueeze(1)
    elif part.channel_last and transpose:
        img = img.permute(0, 3, 1, 2)
    return img * part.scale if part.scale != 1.0 else img


class ObsFeatures(nn.Module):
    """Flat observations ``(N, D)`` → features ``(N, features_dim)`` (module docstring).

    Args:
        layout: The observation space's layout.
        extractor: One of :data:`EXTRACTOR_NAMES`, or ``"module:Class"``.
        features_dim: Output size of each CNN (0: the CNN's default).
        extractor_kwargs: More keyword arguments for the extractor's constructor.
        ortho_init: Orthogonal initialisation with gain √2, zero biases (SB3's).

    Raises:
        ValueError: An image the chosen CNN cannot take (naming its shape and the option
            to set), an unknown name, or a class that cannot be imported or built.
    """

    def __init__(
        self,
        layout: ObsLayout,
        extractor: str = "auto",
        features_dim: int = 0,
        extractor_kwargs: dict[str, Any] | None = None,
        *,
        ortho_init: bool = True,
    ) -> None:
        super().__init__()
        self.layout, self.name = layout, extractor
        kwargs = dict(extractor_kwargs or {})
        if features_dim:
            kwargs["features_dim"] = int(features_dim)
        self.custom: nn.Module | None = None
        self.extractors = nn.ModuleList()
        if ":" in extractor:
            self.custom = _build_custom(extractor, layout, kwargs)
            self.features_dim = int(self.custom.features_dim)  # type: ignore[arg-type]
        else:
            if extractor not in EXTRACTOR_NAMES:
                raise ValueError(
                    f"features_extractor={extractor!r}; use one of {EXTRACTOR_NAMES} or "
                    "'module:Class' (an SB3-style extractor class)"
                )
            needs_extractor(layout, extractor)  # the clear errors
            dims = 0
            for part in layout.parts:
                module = self._for_part(part, extractor, kwargs)
                self.extractors.append(module)
                dims += int(getattr(module, "features_dim", part.size))
            self.features_dim = dims
        if ortho_init:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.orthogonal_(m.weight, gain=math.sqrt(2))
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)

    @staticmethod
    def _for_part(part: ObsPart, name: str, kwargs: dict[str, Any]) -> nn.Module:
        if part.kind != "image" or name == "flatten":
            return nn.Identity()
        assert part.image_shape is not None
        _, h, w = part.image_shape
        if name == "auto":
            name = "nature" if min(h, w) >= NATURE_MIN else "small"
        cls = NatureCNN if name == "nature" else SmallCNN
        try:
            return cls(part.image_shape, **kwargs)
        except TypeError as err:
            raise ValueError(
                f"features_extractor_kwargs={kwargs!r} do not fit {cls.__name__} ({err}); "
                "it takes features_dim" + (" and channels" if cls is SmallCNN else "")
            ) from None

    def forward(self, x: Tensor) -> Tensor:
        if self.custom is not None:
            return self.custom(self.structured(x))
        outs = []
        for part, module in zip(self.layout.parts, self.extractors, strict=True):
            if part.kind == "image":
                if isinstance(module, nn.Identity):  # "flatten": scaled pixels
                    seg = x[:, part.offset : part.offset + part.size]
                    outs.append(seg * part.scale if part.scale != 1.0 else seg)
                else:
                    outs.append(module(_image(part, x)))
            else:
                seg = x[:, part.offset : part.offset + part.size]
                outs.append(seg * part.scale if part.scale != 1.0 else seg)
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)

    def structured(self, x: Tensor) -> Any:
        """The observation in the space's own layout (SB3's preprocessed observation)."""
        vals = {}
        for part in self.layout.parts:
            if part.kind == "onehot":
                vals[part.key] = x[:, part.offset : part.offset + part.size]
            else:
                vals[part.key] = _image(part, x, transpose=False)
        return vals if self.layout.is_dict else vals[None]


def _build_custom(path: str, layout: ObsLayout, kwargs: dict[str, Any]) -> nn.Module:
    module_name, _, qualname = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for attr in qualname.split("."):
            obj = getattr(obj, attr)
    except (ImportError, AttributeError) as err:
        raise ValueError(
            f"features_extractor={path!r} cannot be imported ({err}); give 'module:Class' of "
            "an importable class"
        ) from None
    try:
        module = obj(layout.space, **kwargs)
    except TypeError as err:
        raise ValueError(
            f"features_extractor {path!r} could not be built as Class(observation_space, "
            f"**{kwargs!r}): {err}"
        ) from None
    if not isinstance(module, nn.Module) or not isinstance(
        getattr(module, "features_dim", None), int
    ):
        raise ValueError(
            f"features_extractor {path!r} must build an nn.Module with an int features_dim "
            "attribute (as SB3's BaseFeaturesExtractor)"
        )
    return module


def extractor_name(value: Any) -> str:
    """The :class:`~natgrad.rl.config.PolicyConfig` name of SB3's ``features_extractor_class``.

    natgrad's and SB3's ``NatureCNN`` and ``FlattenExtractor`` map to ``"nature"`` and
    ``"flatten"``, :class:`SmallCNN` to ``"small"``; any other class to its import path.
    """
    if isinstance(value, str):
        return value
    if not (isinstance(value, type) and issubclass(value, nn.Module)):
        raise ValueError(
            f"policy_kwargs['features_extractor_class']={value!r} is not supported: pass an "
            f"nn.Module class (SB3-style: Class(observation_space, **kwargs) with an int "
            f"features_dim) or a name: {', '.join(EXTRACTOR_NAMES)}"
        )
    if value is NatureCNN or (
        value.__name__ == "NatureCNN" and "stable_baselines3" in value.__module__
    ):
        return "nature"
    if value is SmallCNN:
        return "small"
    if value.__name__ == "FlattenExtractor" and "stable_baselines3" in value.__module__:
        return "flatten"
    return f"{value.__module__}:{value.__qualname__}"
