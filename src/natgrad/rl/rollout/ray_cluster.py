"""The Ray cluster itself: connecting, probing that it is alive, and the errors of the
Ray backend (:mod:`natgrad.rl.rollout.ray`)."""

from __future__ import annotations

import logging
import re
import threading
from typing import Any

import ray

from natgrad.rl.errors import RolloutError
from natgrad.rl.rollout.ray_worker import check_reachable, cpu_count

__all__ = ["RayClusterGone", "RayRolloutError", "cluster_alive", "connect", "first_line"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class RayRolloutError(RolloutError):
    """A Ray worker kept failing (env exception, death or hang) beyond ``max_restarts``."""


class RayClusterGone(RayRolloutError):
    """The Ray cluster went away (shut down or unreachable) during a rollout."""


def first_line(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def connect(address: str | None, init_kwargs: dict[str, Any] | None) -> bool:
    """Connect to ``address`` (``None``: start a local instance) unless Ray is already
    initialised in this process; returns whether this call started Ray."""
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = dict(
        include_dashboard=False, log_to_driver=False, ignore_reinit_error=True,
        logging_level=logging.WARNING,
    )  # fmt: skip
    if address is None:
        kwargs.update(address="local", num_cpus=cpu_count())
    else:
        check_reachable(address)
        kwargs["address"] = address
    kwargs.update(init_kwargs or {})
    try:
        ray.init(**kwargs)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ValueError(
            f"address={address!r}: cannot connect to a Ray cluster ({exc}); start one "
            "with `ray start --head` and pass its address ('auto' on a cluster node), "
            "or leave the address empty for a local Ray instance"
        ) from None
    return True


def cluster_alive(probe_timeout: float) -> bool:
    """Whether a node of the cluster answers a status request within ``probe_timeout``."""
    if not ray.is_initialized():
        return False
    answer: list[bool] = []

    def probe() -> None:
        try:
            answer.append(any(node.get("Alive") for node in ray.nodes()))
        except Exception:
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(probe_timeout)
    return bool(answer and answer[0])
