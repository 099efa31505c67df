"""``natgrad train``: a thin layer over ``TRPO(...).learn(...)`` with a run directory.

Flags are generated from the config dataclasses (algorithm, policy, rollout, run): every
field ``name`` is a flag ``--name`` (underscores become dashes) with the field's
docstring as its help, and ``--set name=value`` does the same. The env's preset is
applied first, then the flags. ``--resume RUN_DIR`` loads the run's checkpoint
(:meth:`~natgrad.rl.TRPO.load`, checked against its ``config.json``) and continues it;
settings given with it are written back to ``config.json``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

from natgrad.rl.config import (
    ALGO_CONFIGS,
    ConfigBase,
    concern_classes,
    parse_value,
    split_fields,
)

DEFAULT_ENV = "CartPole-v1"
ALIASES = {"total_steps": ["--steps"], "vec": ["--backend"]}


def _field_classes() -> list[type[ConfigBase]]:
    return [*ALGO_CONFIGS.values(), *list(concern_classes("trpo").values())[1:]]


def _default(f: Any) -> Any:
    return f.default if f.default is not MISSING else f.default_factory()


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a TRPO or NPG agent on a Gymnasium env",
        description="Train a policy: live progress, CSV and TensorBoard logs, a learning-curve "
        "plot, a checkpoint and a deterministic evaluation, all in --run-dir.",
    )
    p.add_argument("env", nargs="?", default=None,
                   help=f"Gymnasium env id (default {DEFAULT_ENV}); your own env as "
                   "'my_pkg.envs:MyEnv-v0' (the module is imported first)")  # fmt: skip
    p.add_argument("--algo", choices=sorted(ALGO_CONFIGS), default=None, help="algorithm (trpo)")
    p.add_argument("--run-dir", type=Path, default=None, help="where the run is written "
                   "(default runs/<env>_<algo>_seed<seed>)")  # fmt: skip
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR",
                   help="continue the run in RUN_DIR from its checkpoint")  # fmt: skip
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="set any config field (repeatable)")  # fmt: skip
    p.add_argument("--env-kwargs", action="append", default=[], metavar="KEY=VALUE",
                   help="keyword argument for gymnasium.make (repeatable; values are "
                   "Python literals or strings)")  # fmt: skip
    p.add_argument("--no-preset", action="store_true", help="ignore the env's preset")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-eval", action="store_true", help="skip the final evaluation")
    p.add_argument("--help-config", action="store_true", help="list every config field and exit")
    group = p.add_argument_group("config fields (each overrides the env's preset; [default])")
    seen: set[str] = set()
    for cls in _field_classes():
        docs = cls.field_docs()
        for f in fields(cls):
            if not f.init or f.name in seen:
                continue
            seen.add(f.name)
            flags = [f"--{f.name.replace('_', '-')}", *ALIASES.get(f.name, [])]
            text = f"{docs.get(f.name, '')} [{_default(f)!r}]".replace("%", "%%")
            group.add_argument(*flags, dest=f"cfg_{f.name}", default=None, metavar="V", help=text)
    p.set_defaults(func=run)


def settings_from_args(args: argparse.Namespace, algo: str) -> dict[str, Any]:
    """Parsed ``--field`` and ``--set field=value`` values, by name (checked later)."""
    owner = {n: cls for cls in concern_classes(algo).values() for n in cls.field_names()}
    out: dict[str, Any] = {}
    items = [(k[4:], v) for k, v in vars(args).items() if k.startswith("cfg_") and v is not None]
    for item in args.set:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set max_kl=0.02")
        name, text = item.split("=", 1)
        items.append((name.strip(), text.strip()))
    for name, text in items:
        if name not in owner:
            split_fields({name: None}, algo)  # raises, suggesting close names
        out[name] = parse_value(owner[name], name, text)
    return out


def env_kwargs_from_args(items: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--env-kwargs {item!r}: expected KEY=VALUE, e.g. render_mode=None")
        key, text = (s.strip() for s in item.split("=", 1))
        try:
            out[key] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            out[key] = text
    return out


def print_config_help(algo: str) -> None:
    for concern, cls in concern_classes(algo).items():
        print(f"[{concern}]  ({cls.__name__})")
        docs = cls.field_docs()
        for f in fields(cls):
            if f.init:
                print(f"  {f.name} = {_default(f)!r}\n      {docs.get(f.name, '')}")


def run(args: argparse.Namespace) -> int:
    from natgrad.rl import run as rundir
    from natgrad.rl.algos import ALGORITHMS, OnPolicyAlgorithm
    from natgrad.rl.config import RunConfig
    from natgrad.rl.errors import RolloutError
    from natgrad.rl.presets import preset_for

    if args.help_config:
        print_config_help(args.algo or "trpo")
        return 0
    if args.resume is not None:
        if args.env is not None or args.run_dir is not None or args.env_kwargs:
            raise ValueError("--resume RUN_DIR takes the env and run dir from the checkpoint; "
                             "drop the ENV argument, --run-dir and --env-kwargs")  # fmt: skip
        run_dir = args.resume
        payload = rundir.read_run_config(run_dir)
        algo = payload["algo"]
        if args.algo is not None and args.algo != algo:
            raise ValueError(f"--resume: the run in {run_dir} is {algo!r}; --algo {args.algo} "
                             "cannot change it (start a new run instead)")  # fmt: skip
        parts = split_fields(settings_from_args(args, algo), algo)
        if parts["policy"]:
            raise ValueError(f"--resume: {', '.join(parts['policy'])} cannot change in a "
                             "resumed run (the networks are in the checkpoint)")  # fmt: skip
        run_cfg = RunConfig.from_dict({**payload["config"]["run"], **parts["run"]})
        if "seed" in parts["run"] and parts["run"]["seed"] != payload["config"]["run"]["seed"]:
            raise ValueError("--resume: seed cannot change in a resumed run")
        rundir.check_writable(run_dir)
        model = OnPolicyAlgorithm.load(  # whatever the checkpoint holds, checked below
            run_dir / rundir.CHECKPOINT, **parts["algorithm"], **parts["rollout"]
        )
        try:
            rundir.check_resume(payload, model, run_dir)
        except ValueError:
            model.close()
            raise
        rundir.write_json(rundir.run_payload(model, run_cfg, payload.get("preset_source", "")),
                          run_dir / rundir.CONFIG)  # fmt: skip
        print(f"resuming {run_dir} at {model.num_timesteps} steps")
    else:
        algo = args.algo or "trpo"
        env = args.env or DEFAULT_ENV
        preset, source = ({}, "") if args.no_preset else preset_for(env, algo)
        settings = {**preset, **settings_from_args(args, algo)}
        parts = split_fields(settings, algo)
        run_cfg = RunConfig.from_dict(parts["run"])
        run_dir = args.run_dir or rundir.default_run_dir(env, algo, run_cfg.seed)
        rundir.check_new_run_dir(run_dir)
        model = ALGORITHMS[algo](
            env, config=ALGO_CONFIGS[algo].from_dict(parts["algorithm"]),
            policy_kwargs=parts["policy"], seed=run_cfg.seed, use_preset=False,
            env_kwargs=env_kwargs_from_args(args.env_kwargs), **parts["rollout"],
        )  # fmt: skip
        try:
            rundir.prepare_run_dir(run_dir)
            rundir.write_json(rundir.run_payload(model, run_cfg, source), run_dir / rundir.CONFIG)
            # The first checkpoint now: a disk too small or an env whose state does not
            # pickle shows at once, and "the last good checkpoint" always exists.
            model.save(run_dir / rundir.CHECKPOINT)
        except (ValueError, OSError):
            model.close()
            raise
        print(f"{algo} on {env}: {run_cfg.total_steps} steps, {model.rollout_config.n_envs} "
              f"env(s), run dir {run_dir}\npreset: {source or '(none)'}")  # fmt: skip
    try:
        remaining = run_cfg.total_steps - model.num_timesteps
        callbacks, interrupt = rundir.run_callbacks(
            model, run_cfg, run_dir, progress=not args.no_progress, resume=args.resume is not None
        )
        if remaining > 0:
            model.learn(remaining, callback=callbacks, reset_num_timesteps=False)
        if interrupt.requested:
            print(f"stopped at {model.num_timesteps} steps; checkpoint saved to "
                  f"{run_dir / rundir.CHECKPOINT}\ncontinue with: natgrad train --resume "
                  f"{run_dir}")  # fmt: skip
            return 0
        print(rundir.summarise(model, run_cfg, run_dir, evaluate=not args.no_eval))
    except (RolloutError, RuntimeError, OSError) as exc:  # env failures, a lost cluster, I/O
        print(f"natgrad train: error: {exc}\nthe last good checkpoint in {run_dir} is intact",
              file=sys.stderr)  # fmt: skip
        return 1
    except KeyboardInterrupt:  # a second Ctrl-C: stop at once
        print(f"natgrad train: interrupted; the last good checkpoint in {run_dir} is intact",
              file=sys.stderr)  # fmt: skip
        return 130
    finally:
        model.close()
    return 0
