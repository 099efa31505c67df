"""Time to return: wall seconds until the training return first reaches sb3-contrib's documented
final return, natgrad's preset against sb3-contrib with rl-baselines3-zoo's settings.

For each (env, seed) the two arms run side by side, one natgrad training (``natgrad
train`` at the env's preset, through ``bench/suite.py``'s machinery, pinned sources)
and one sb3-contrib training (``bench/sb3_learning.py --time-to LEVEL``) at the same
time, so that they see the same machine load.  The training return is the mean of the
last 100 episodes in both (natgrad's ``episode_return``, sb3's ``ep_rew_mean``); the
clock starts when each process starts.  A pair waits for the suite's runs in flight to
end, and the suite's schedulers start nothing (``scope_pause``) until natgrad's arm ends;
then they use its core again, so that sb3-contrib's arm keeps seeing two busy cores.  One JSON
line per pair goes to
``bench/results/time_to_return.jsonl``; the natgrad run is also a suite run, and is
added to ``bench/results/suite.jsonl`` if that run is not there yet.

    python bench/time_to_return.py --envs Hopper-v5,HalfCheetah-v5 --seeds 0-2
"""

from __future__ import annotations

import argparse
import functools
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import suite
from suite_report import TIME_TO

RESULTS = suite.ROOT / "bench" / "results" / "time_to_return.jsonl"


def run_pair(env_id: str, seed: int, steps: int, out: Path, src: Path, commit: str,
             level: float, python: str = sys.executable,
             on_first_done: Any = None) -> dict[str, Any]:  # fmt: skip
    """Run natgrad and sb3-contrib at once on (env, seed); both arms' time to ``level``.

    ``on_first_done()`` is called when natgrad's arm ends (the suite may then use its
    core again, keeping the load on sb3-contrib's arm as it was).
    """
    import os
    import shutil

    job = suite.Job(env_id, "trpo", seed, steps)
    digest = suite.preset_digest(src, env_id, "trpo")
    run_dir = out / "runs" / env_id / f"seed{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    (run_dir / "suite_start.json").write_text(json.dumps({"time": time.time()}))
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}
    with open(run_dir.with_name(f"seed{seed}.natgrad.log"), "w") as log:
        ours = subprocess.Popen(suite.command(job, run_dir, python), stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=str(out))  # fmt: skip
        sb3_cmd = [python, str(suite.ROOT / "bench" / "sb3_learning.py"), "--env", env_id,
                   "--first-seed", str(seed), "--seeds", "1", "--jobs", "1",
                   "--steps", str(steps), "--time-to", str(level),
                   "--label", str(run_dir)]  # fmt: skip
        with open(run_dir.with_name(f"seed{seed}.sb3.log"), "w+") as sb3_log:
            theirs = subprocess.Popen(sb3_cmd, stdout=sb3_log, stderr=subprocess.STDOUT,
                                      text=True, env=env)  # fmt: skip
            while ours.poll() is None:
                time.sleep(2)
            if on_first_done is not None:
                on_first_done()
            theirs.wait()
            sb3_log.seek(0)
            sb3_out = sb3_log.read()
    if ours.returncode != 0 or theirs.returncode != 0:
        raise RuntimeError(f"{env_id} seed {seed}: natgrad exit {ours.returncode}, sb3 exit "
                           f"{theirs.returncode}: {sb3_out[-2000:]}")  # fmt: skip
    started = json.loads((run_dir / "suite_start.json").read_text())["time"]
    wall = (run_dir / "eval.json").stat().st_mtime - started  # natgrad's own wall time
    ng = suite.collect(job, run_dir, wall, commit, digest, {"time_to": level})
    sb3 = next(json.loads(s) for s in reversed(sb3_out.splitlines()) if '"seed"' in s)
    ng_t = (ng["first_reach"].get("time_to") or {}).get("wall_s")
    sb3_t = sb3["time_to"]["wall_s"]
    return {
        "env": env_id, "seed": seed, "level": level, "steps": steps, "commit": commit,
        "natgrad": {"wall_s_to_level": ng_t, "env_steps_to_level":
                    (ng["first_reach"].get("time_to") or {}).get("env_steps"),
                    "eval_mean": ng["eval"]["mean"], "wall_s": ng["wall_s"]},
        "sb3": {"wall_s_to_level": sb3_t, "env_steps_to_level": sb3["time_to"]["env_steps"],
                "eval_mean": sb3["eval_mean"], "wall_s": sb3["wall_s"], "curve": sb3["curve"]},
        "ratio": None if ng_t is None or sb3_t is None else round(ng_t / sb3_t, 3),
        "suite_line": ng,
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default=",".join(TIME_TO))
    parser.add_argument("--seeds", default="0-2")
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--results", type=Path, default=RESULTS)
    parser.add_argument("--out", type=Path, default=suite.OUT.with_name("time_to_return"))
    parser.add_argument("--commit", action="store_true", help="git-commit the results files")
    args = parser.parse_args()
    args.out = args.out.resolve()
    src, commit = suite.pin_sources(suite.ROOT, args.out)
    done = {(x["env"], x["seed"], x["steps"]) for x in suite.read_results(args.results)}
    for seed in suite.parse_seeds(args.seeds):
        for env_id in args.envs.split(","):
            if (env_id, seed, args.steps) in done:
                continue
            suite.wait_while_paused(suite.PAUSE_FILE)
            scope = args.out.parent
            hold = suite.scope_pause(scope)
            hold.touch()  # the suite starts nothing more; wait for its runs to end
            try:
                while suite.trainings_in(scope, suite._cmdlines()):
                    time.sleep(10)
                line = run_pair(
                    env_id,
                    seed,
                    args.steps,
                    args.out,
                    src,
                    commit,
                    TIME_TO[env_id],
                    on_first_done=functools.partial(hold.unlink, missing_ok=True),
                )
            finally:
                hold.unlink(missing_ok=True)
            args.results.parent.mkdir(parents=True, exist_ok=True)
            with open(args.results, "a", encoding="utf-8") as f:
                f.write(json.dumps(line) + "\n")
            keys = {suite.line_key(x) for x in suite.read_results(suite.RESULTS)}
            if suite.line_key(line["suite_line"]) not in keys:
                with open(suite.RESULTS, "a", encoding="utf-8") as f:
                    f.write(json.dumps(line["suite_line"]) + "\n")
            print(f"{env_id} seed {seed}: natgrad {line['natgrad']['wall_s_to_level']} s, "
                  f"sb3 {line['sb3']['wall_s_to_level']} s", flush=True)  # fmt: skip
            if args.commit:
                suite.commit_results(args.results, f"time to return: {env_id} seed {seed}")
                suite.commit_results(
                    suite.RESULTS, f"suite: {env_id} trpo seed {seed} (time to return)"
                )


if __name__ == "__main__":
    main()
