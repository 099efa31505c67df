"""``natgrad train``: flags are generated from the agent's config dataclass.

Every config field ``name`` is a flag ``--name`` (underscores become dashes), with
the field's docstring as its help; ``--set name=value`` does the same.  The env's
preset is applied first, then the flags.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from natgrad.rl.config import CONFIGS, AgentConfig, TRPOConfig, parse_value

DEFAULT_ENV = "CartPole-v1"
ALIASES = {"total_steps": ["--steps"], "vec": ["--backend"]}


def _config_fields(cls: type[AgentConfig]) -> list[str]:
    return [f.name for f in fields(cls) if f.init and f.name != "env_id"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a TRPO or NPG agent on a Gymnasium env",
        description="Train a policy: live progress, CSV and TensorBoard logs, a learning-curve "
        "plot, a checkpoint and a deterministic evaluation, all in --run-dir.",
    )
    p.add_argument("env", nargs="?", default=None, help=f"Gymnasium env id (default {DEFAULT_ENV})")
    p.add_argument("--algo", choices=sorted(CONFIGS), default="trpo", help="algorithm (trpo)")
    p.add_argument("--run-dir", type=Path, default=None, help="where the run is written "
                   "(default runs/<env>_<algo>_seed<seed>)")  # fmt: skip
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its checkpoint")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="set any config field (repeatable)")  # fmt: skip
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--help-config", action="store_true", help="list every config field and exit")
    docs = TRPOConfig.field_docs()
    defaults = {f.name: f.default for f in fields(TRPOConfig) if f.default is not MISSING}
    group = p.add_argument_group(
        "config fields (each overrides the env's preset; [class default] shown)"
    )
    names = set(_config_fields(CONFIGS["trpo"])) | set(_config_fields(CONFIGS["npg"]))
    for name in sorted(names):
        flags = [f"--{name.replace('_', '-')}", *ALIASES.get(name, [])]
        text = f"{docs.get(name, '')} [{defaults.get(name)!r}]".replace("%", "%%")
        group.add_argument(*flags, dest=f"cfg_{name}", default=None, metavar="V", help=text)
    p.set_defaults(func=run)


def overrides_from_args(args: argparse.Namespace, cls: type[AgentConfig]) -> dict[str, Any]:
    """Parsed ``--field`` and ``--set field=value`` values, checked against ``cls``."""
    out: dict[str, Any] = {}
    valid = set(_config_fields(cls))
    for key, text in vars(args).items():
        if key.startswith("cfg_") and text is not None:
            name = key[4:]
            if name not in valid:
                raise ValueError(f"--{name.replace('_', '-')} is not a field of {cls.__name__}")
            out[name] = parse_value(cls, name, text)
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set max_kl=0.02")
        name, text = item.split("=", 1)
        out[name.strip()] = parse_value(cls, name.strip(), text.strip())
    return out


def print_config_help(cls: type[AgentConfig]) -> None:
    docs = cls.field_docs()
    for f in fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc,operator]
        print(f"{f.name} = {default!r}\n    {docs.get(f.name, '')}")


def run(args: argparse.Namespace) -> int:
    from natgrad.rl import session
    from natgrad.rl.agent import RolloutError
    from natgrad.rl.envs import check_env_id
    from natgrad.rl.presets import preset_for

    cls = CONFIGS[args.algo]
    if args.help_config:
        print_config_help(cls)
        return 0
    overrides = overrides_from_args(args, cls)
    if args.resume is not None:
        if args.env is not None or args.run_dir is not None:
            raise ValueError("--resume RUN_DIR takes the env and run dir from the checkpoint; "
                             "drop the ENV argument and --run-dir")  # fmt: skip
        agent, logger = session.resume(args.resume, overrides)
        run_dir = args.resume
        print(f"resuming {run_dir} at {agent.env_steps} steps")
    else:
        env = args.env or DEFAULT_ENV
        check_env_id(env)
        preset, source = preset_for(env)
        cfg = cls.from_dict({**preset, **overrides, "env_id": env})
        run_dir = args.run_dir or session.default_run_dir(cfg)
        agent, logger = session.start(cfg, run_dir, preset_source=source)
        print(f"{cfg.algo} on {env}: {cfg.total_steps} steps, {cfg.n_envs} env(s), "  # type: ignore[attr-defined]
              f"run dir {run_dir}\npreset: {source}")  # fmt: skip
    try:
        session.train(agent, logger, run_dir, progress=not args.no_progress,
                      evaluate=not args.no_eval)  # fmt: skip
    except (RolloutError, RuntimeError) as exc:  # env failures, a crashed worker, a lost cluster
        print(f"natgrad train: error: {exc}\nthe last good checkpoint in {run_dir} is intact",
              file=sys.stderr)  # fmt: skip
        return 1
    finally:
        agent.close()
    return 0
