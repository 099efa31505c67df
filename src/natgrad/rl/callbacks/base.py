"""Callbacks: Stable-Baselines3's protocol, run by the one learn loop.

``learn()`` calls, for each training run::

    init_callback(model) → on_training_start(locals, globals)
    repeat per iteration: on_rollout_start → (collect) → on_rollout_end
                          → (update) → on_step        (False stops training)
    on_training_end

One difference from SB3: ``on_step`` runs once per *iteration* (after the policy and
critic updates, with the iteration's ``metrics`` in ``self.locals``), not once per env
step; frequencies are therefore counted in iterations or env steps, as each callback
says. A plain function ``fn(locals_, globals_) -> bool`` is accepted wherever a
callback is (SB3's ``ConvertCallback``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from natgrad.rl.algos.base import OnPolicyAlgorithm

__all__ = ["BaseCallback", "CallbackList", "ConvertCallback", "EventCallback", "as_callback"]


class BaseCallback:
    """Base class of callbacks (SB3's ``BaseCallback``); override the ``_on_*`` hooks.

    Args:
        verbose: 0 silent, 1 info messages.

    Attributes:
        model: The algorithm being trained (set by :meth:`init_callback`).
        n_calls: Times :meth:`on_step` has run (iterations).
        num_timesteps: The model's env steps at the last call.
        total_timesteps: The step count at which this ``learn`` call ends.
        locals, globals: The learn loop's variables (``metrics``, ``rollout``, ...).
    """

    def __init__(self, verbose: int = 0) -> None:
        self.verbose = verbose
        self.n_calls = 0
        self.num_timesteps = 0
        self.total_timesteps = 0
        self.locals: dict[str, Any] = {}
        self.globals: dict[str, Any] = {}
        self.parent: BaseCallback | None = None
        self.model: OnPolicyAlgorithm | None = None

    # --- what learn() calls -------------------------------------------------------------
    def init_callback(self, model: OnPolicyAlgorithm) -> None:
        self.model = model
        self._init_callback()

    def on_training_start(
        self, locals_: dict[str, Any], globals_: dict[str, Any], total_timesteps: int = 0
    ) -> None:
        self.locals, self.globals = locals_, globals_
        self.num_timesteps = self._model.num_timesteps
        self.total_timesteps = total_timesteps
        self._on_training_start()

    def on_rollout_start(self) -> None:
        self._on_rollout_start()

    def on_rollout_end(self) -> None:
        self._on_rollout_end()

    def on_step(self) -> bool:
        """Once per iteration; returning ``False`` stops training."""
        self.n_calls += 1
        self.num_timesteps = self._model.num_timesteps
        return self._on_step() is not False

    def on_training_end(self) -> None:
        self._on_training_end()

    def update_locals(self, locals_: dict[str, Any]) -> None:
        self.locals.update(locals_)
        self.update_child_locals(locals_)

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        """Pass ``locals_`` on to child callbacks (containers override this)."""

    # --- hooks for subclasses -----------------------------------------------------------
    def _init_callback(self) -> None:
        pass

    def _on_training_start(self) -> None:
        pass

    def _on_rollout_start(self) -> None:
        pass

    def _on_rollout_end(self) -> None:
        pass

    def _on_step(self) -> bool | None:
        return True

    def _on_training_end(self) -> None:
        pass

    @property
    def _model(self) -> OnPolicyAlgorithm:
        if self.model is None:
            raise RuntimeError(
                f"{type(self).__name__} is not attached to a model; pass it to learn()"
            )
        return self.model


class EventCallback(BaseCallback):
    """A callback that triggers a child callback on an event (SB3's ``EventCallback``)."""

    def __init__(self, callback: BaseCallback | None = None, verbose: int = 0) -> None:
        super().__init__(verbose)
        self.callback = callback
        if callback is not None:
            callback.parent = self

    def init_callback(self, model: OnPolicyAlgorithm) -> None:
        super().init_callback(model)
        if self.callback is not None:
            self.callback.init_callback(model)

    def _on_training_start(self) -> None:
        if self.callback is not None:
            self.callback.on_training_start(self.locals, self.globals, self.total_timesteps)

    def _on_event(self) -> bool:
        return self.callback.on_step() if self.callback is not None else True

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        if self.callback is not None:
            self.callback.update_locals(locals_)


class CallbackList(BaseCallback):
    """Runs callbacks in order; training stops if any ``on_step`` returns ``False``."""

    def __init__(self, callbacks: Iterable[BaseCallback]) -> None:
        super().__init__()
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, BaseCallback):
                raise ValueError(
                    f"CallbackList takes BaseCallback objects, got {type(cb).__name__}"
                )

    def init_callback(self, model: OnPolicyAlgorithm) -> None:
        super().init_callback(model)
        for cb in self.callbacks:
            cb.init_callback(model)

    def _on_training_start(self) -> None:
        for cb in self.callbacks:
            cb.on_training_start(self.locals, self.globals, self.total_timesteps)

    def _on_rollout_start(self) -> None:
        for cb in self.callbacks:
            cb.on_rollout_start()

    def _on_rollout_end(self) -> None:
        for cb in self.callbacks:
            cb.on_rollout_end()

    def _on_step(self) -> bool:
        go_on = True
        for cb in self.callbacks:
            go_on = cb.on_step() and go_on  # every callback sees every iteration
        return go_on

    def _on_training_end(self) -> None:
        for cb in self.callbacks:
            cb.on_training_end()

    def update_child_locals(self, locals_: dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.update_locals(locals_)


class ConvertCallback(BaseCallback):
    """Wraps ``fn(locals_, globals_) -> bool`` (``False`` stops), called per iteration."""

    def __init__(self, callback: Callable[[dict[str, Any], dict[str, Any]], Any]) -> None:
        super().__init__()
        self.callback = callback

    def _on_step(self) -> bool:
        return self.callback(self.locals, self.globals) is not False


def as_callback(callback: Any) -> BaseCallback:
    """A callback from ``None``, a :class:`BaseCallback`, a list of them or a function."""
    if callback is None:
        return CallbackList([])
    if isinstance(callback, BaseCallback):
        return callback
    if isinstance(callback, (list, tuple)):
        return CallbackList([as_callback(cb) for cb in callback])
    if callable(callback):
        return ConvertCallback(callback)
    raise ValueError(
        f"callback={callback!r} is not a callback; pass a BaseCallback, a list of them, or "
        "a function fn(locals_, globals_) -> bool"
    )
