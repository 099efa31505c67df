"""How an observation space lays out in the flat vector the rollout stores.

Observations travel through the rollout as flat float32 vectors (``RolloutBatch.obs`` is
``(T, N, D)``), whatever the space. :func:`obs_layout` says which slice of that vector
holds which part of the observation, so that the policy's feature extractor can cut it
back into images and vectors:

* a ``Box`` is one part, flattened, keeping its raw values (an ``uint8`` image stays in
  ``0..255``; the extractor scales it to ``[0, 1]``);
* a ``Discrete`` is one part, one-hot;
* a ``Dict`` is one part per key, in the space's key order, each as above.

A part is an **image** when it is a ``Box`` of ``uint8`` or ``bool`` with two axes
(``H×W``, one channel) or three, one of which is the channel axis: channel-first
(``C×H×W``) when the first axis is strictly the smallest, else channel-last
(``H×W×C``, gymnasium's and MinAtar's convention). The extractor transposes
channel-last images once, batched, inside its forward pass. Observation normalisation
skips image parts (:meth:`ObsLayout.normalize_mask`).

>>> from gymnasium import spaces
>>> import numpy as np
>>> layout = obs_layout(spaces.Dict({"board": spaces.Box(0, 1, (10, 10, 4), bool),
...                                  "turn": spaces.Discrete(2)}))
>>> [(p.key, p.kind, p.image_shape, p.offset, p.size) for p in layout.parts]
[('board', 'image', (4, 10, 10), 0, 400), ('turn', 'onehot', None, 400, 2)]
"""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["ObsLayout", "ObsPart", "image_axes", "obs_layout"]


@dataclass(frozen=True)
class ObsPart:
    """One part of an observation: a ``Dict`` key, or the whole space.

    Attributes:
        key: The ``Dict`` key, or ``None`` for a plain space.
        kind: ``"image"``, ``"vector"`` (a ``Box`` fed as is) or ``"onehot"`` (``Discrete``).
        shape: The part's own shape in the env (``(n,)`` for one-hot).
        offset, size: Where the part sits in the flat vector.
        image_shape: ``(C, H, W)`` for images, else ``None``.
        channel_last: The env gives the image as ``H×W×C``.
        scale: Multiplier to ``[0, 1]`` (``1/255`` for ``uint8``, else 1).
        dtype: The env's dtype.
    """

    key: str | None
    kind: str
    shape: tuple[int, ...]
    offset: int
    size: int
    image_shape: tuple[int, int, int] | None = None
    channel_last: bool = False
    scale: float = 1.0
    dtype: str = "float32"


@dataclass(frozen=True)
class ObsLayout:
    """The parts of an observation space in the flat vector (see the module docstring)."""

    space: gym.Space
    parts: tuple[ObsPart, ...]

    @property
    def dim(self) -> int:
        """Length ``D`` of the flat vector."""
        return sum(p.size for p in self.parts)

    @property
    def has_images(self) -> bool:
        return any(p.kind == "image" for p in self.parts)

    @property
    def is_dict(self) -> bool:
        return isinstance(self.space, spaces.Dict)

    def normalize_mask(self) -> np.ndarray | None:
        """Flat ``bool`` mask of the entries observation normalisation may touch (images
        are skipped); ``None`` when every entry may be normalised."""
        if not self.has_images:
            return None
        mask = np.ones(self.dim, dtype=bool)
        for p in self.parts:
            if p.kind == "image":
                mask[p.offset : p.offset + p.size] = False
        return mask


def image_axes(shape: tuple[int, ...]) -> tuple[tuple[int, int, int], bool] | None:
    """``((C, H, W), channel_last)`` for an image shape, or ``None`` if it is not one.

    Two axes are ``H×W`` (one channel); of three, the first is the channel axis when it
    is strictly the smallest, else the last is (``H×W×C``).
    """
    if len(shape) == 2:
        return (1, shape[0], shape[1]), False
    if len(shape) != 3:
        return None
    if shape[0] < shape[1] and shape[0] < shape[2]:
        return (shape[0], shape[1], shape[2]), False
    return (shape[2], shape[0], shape[1]), True


def _is_image_box(space: gym.Space) -> bool:
    return (
        isinstance(space, spaces.Box)
        and space.dtype in (np.uint8, np.bool_)
        and len(space.shape) in (2, 3)
    )


def _part(key: str | None, space: gym.Space, offset: int) -> ObsPart:
    if isinstance(space, spaces.Discrete):
        n = int(space.n)
        return ObsPart(key, "onehot", (n,), offset, n, dtype="float32")
    if not isinstance(space, spaces.Box):
        where = f"Dict key {key!r}: " if key is not None else ""
        raise ValueError(
            f"unsupported observation space {where}{space!r}; supported: Box (images "
            "and vectors), Discrete (one-hot) and a Dict of those. Wrap the env, e.g. "
            "with gymnasium.wrappers.FlattenObservation"
        )
    shape = tuple(int(s) for s in space.shape)
    size = int(np.prod(shape, dtype=np.int64))
    scale = 1.0 / 255.0 if space.dtype == np.uint8 else 1.0
    dtype = str(space.dtype)
    if _is_image_box(space):
        axes = image_axes(shape)
        assert axes is not None  # 2 or 3 axes
        chw, last = axes
        return ObsPart(key, "image", shape, offset, size, chw, last, scale, dtype)
    return ObsPart(key, "vector", shape, offset, size, scale=scale, dtype=dtype)


def obs_layout(space: gym.Space) -> ObsLayout:
    """The :class:`ObsLayout` of an observation space.

    Raises:
        ValueError: For a space that is not a ``Box``, ``Discrete`` or a ``Dict`` of them
            (naming the key), or a nested ``Dict``.
    """
    if isinstance(space, spaces.Dict):
        parts: list[ObsPart] = []
        offset = 0
        for key, sub in space.spaces.items():
            if isinstance(sub, spaces.Dict):
                raise ValueError(
                    f"unsupported observation space: Dict key {key!r} is itself a Dict; "
                    "flatten the nesting (one level of keys), e.g. with a ObservationWrapper"
                )
            part = _part(str(key), sub, offset)
            parts.append(part)
            offset += part.size
        if not parts:
            raise ValueError("the observation space is an empty Dict; give it at least one key")
        return ObsLayout(space, tuple(parts))
    return ObsLayout(space, (_part(None, space, 0),))
