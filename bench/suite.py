"""The MuJoCo suite: natgrad's TRPO and NPG presets on the nine standard v5 tasks, over seeds.

Every training is one ``natgrad train`` subprocess (the CLI contract: ``--algo``,
``--seed``, ``--steps``, ``--run-dir``, ``--set field=value``), run on a pinned copy
of the sources; its final deterministic evaluation (10 episodes), learning curve,
wall seconds, steps/s, commit and settings are appended as one JSON line to the
results file.  A run already in the results file is skipped, so an interrupted suite
resumes where it stopped.  At most ``--jobs`` (2) trainings run at once, and none is
started while the file ``--pause-file`` (/work/PAUSE_SUITE) exists.

    python bench/suite.py run --envs Hopper-v5,Ant-v5 --algos trpo,npg --seeds 0-2
    python bench/suite.py run --envs Ant-v5 --seeds 0 --set max_kl=0.02   # a variant
    python bench/suite.py summary                  # every (env, algo, variant) group
    python bench/suite.py render                   # docs/suite_results.md + docs/img/suite.png

The rendered table (bench/suite_report.py) uses the runs whose settings are today's
preset's (asked for by preset or by ``--set``; see ``bench/suite_core.py``) at the step
budget.  ``--queue FILE`` runs the lines of FILE too, read again as it grows, and
several schedulers (and ``bench/time_to_return.py``) share the ``--jobs`` slots.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

if str(Path(__file__).resolve().parent) not in sys.path:  # also when loaded by path (tests)
    sys.path.insert(0, str(Path(__file__).resolve().parent))

from suite_core import (  # noqa: E402  (re-exported: suite.X is the bench's interface)
    ALGOS,
    CURVE_POINTS,
    EXEC_FIELDS,
    NEUTRAL,
    NEUTRAL_WITH,
    OUT,
    PAUSE_FILE,
    RESULTS,
    ROOT,
    TASKS,
    Job,
    collect,
    command,
    flat_config,
    line_key,
    pin_sources,
    preset_digest,
    preset_tables,
    read_results,
    resolve_config,
    resolve_configs,
    run_key,
    settings_hash,
)

__all__ = [
    "ROOT",
    "RESULTS",
    "OUT",
    "PAUSE_FILE",
    "TASKS",
    "ALGOS",
    "CURVE_POINTS",
    "Job",
    "EXEC_FIELDS",
    "NEUTRAL",
    "NEUTRAL_WITH",
    "preset_tables",
    "preset_digest",
    "resolve_configs",
    "resolve_config",
    "flat_config",
    "settings_hash",
    "run_key",
    "line_key",
    "read_results",
    "pin_sources",
    "command",
    "collect",
    "run_suite",
    "make_jobs",
    "read_queue",
    "parse_seeds",
    "trainings_in",
    "scope_pause",
    "wait_while_paused",
    "commit_results",
]


# --- the scheduler ----------------------------------------------------------------------
def wait_while_paused(*pause_files: Path | None, poll: float = 10.0) -> None:
    """Return once none of ``pause_files`` exists (the shared one, or a scope's own)."""
    said = False
    while any(p is not None and p.exists() for p in pause_files):
        if not said:
            names = ", ".join(str(p) for p in pause_files if p is not None and p.exists())
            print(f"suite: paused while {names} exists", flush=True)
            said = True
        time.sleep(poll)


def scope_pause(scope: Path) -> Path:
    """The file that pauses the schedulers of ``scope`` (``bench/time_to_return.py`` needs
    the machine to itself for its pairs)."""
    return scope / ".suite.pause"


def commit_results(results: Path, message: str) -> None:
    """Commit only the results file (other staged work is left alone); retries a busy index."""
    repo = results.resolve().parents[2]
    for _ in range(10):
        subprocess.run(["git", "-C", str(repo), "add", str(results)], capture_output=True)
        done = subprocess.run(["git", "-C", str(repo), "commit", "-q", "-m", message, "--",
                               str(results)], capture_output=True, text=True)  # fmt: skip
        said = done.stdout + done.stderr
        if done.returncode == 0 or "nothing" in said or "no changes" in said:
            return
        time.sleep(3)
    print(f"suite: could not commit {results}: {done.stderr.strip()}", file=sys.stderr)


def _cmdlines() -> dict[int, list[str]]:
    """Every process's argv, read from /proc (empty where /proc is missing)."""
    out: dict[int, list[str]] = {}
    for d in Path("/proc").glob("[0-9]*"):
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        out[int(d.name)] = [a.decode(errors="replace") for a in argv if a]
    return out


def trainings_in(scope: Path, cmdlines: dict[int, list[str]]) -> set[int]:
    """Pids of the trainings (natgrad or sb3-contrib) whose arguments name a path in ``scope``."""
    root = str(scope.resolve())
    found = {pid for pid, argv in cmdlines.items()
             if any(a.startswith(root) for a in argv)
             and any("natgrad.cli" in a or "sb3_learning" in a for a in argv)}  # fmt: skip
    return {pid for pid in found if _parent(pid) not in found}  # not a training's helper


def _parent(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat.rsplit(")", 1)[1].split()[1])


@contextlib.contextmanager
def slot_lock(scope: Path) -> Iterator[None]:
    """An exclusive lock on ``scope/.suite.lock`` while a scheduler counts and starts."""
    import fcntl

    scope.mkdir(parents=True, exist_ok=True)
    with open(scope / ".suite.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ran_with(run_dir: Path) -> str | None:
    """The settings hash of the run in ``run_dir`` (from its config.json), if readable."""
    try:
        return settings_hash(json.loads((run_dir / "config.json").read_text())["config"])
    except (OSError, ValueError, KeyError):
        return None


def _start_record(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "suite_start.json").read_text())
    except (OSError, ValueError):
        return {}


def run_suite(jobs: list[Job], results: Path = RESULTS, out: Path = OUT, n_jobs: int = 2,
              pause_file: Path | None = PAUSE_FILE, commit: bool = False,
              python: str = sys.executable, repo: Path = ROOT, poll: float = 2.0,
              scope: Path | None = None, queue: Path | None = None,
              follow: bool = False) -> list[dict]:  # fmt: skip
    """Run the jobs not yet in ``results``, ``n_jobs`` at a time; returns the new lines.

    At most ``n_jobs`` trainings run under ``scope`` (default: ``out``'s parent), counting
    those of other suites and of ``bench/time_to_return.py``.  A run found finished on disk
    (its scheduler died) with the same preset tables is collected instead of rerun; one
    still in flight under another scheduler is waited for.  With ``queue``, the jobs of
    that file (:func:`read_queue`) are added as its lines appear (and dropped, if not yet
    started, as they go); ``follow`` keeps waiting
    for more when all are done.
    """
    from suite_report import first_reach_levels

    out = out.resolve()
    scope = (scope or out.parent).resolve()
    src, rev = pin_sources(repo, out)
    done = {line_key(x) for x in read_results(results)}
    pending: list[tuple[Job, str]] = []
    known: set[Job] = set()
    queued: set[tuple] = set()

    def add(more: list[Job]) -> None:
        resolve_configs(src, [(j.env, j.algo, j.overrides) for j in more if j not in known])
        for job in more:
            if job in known:
                continue
            known.add(job)
            digest = settings_hash(resolve_config(src, job.env, job.algo, job.overrides))
            key = run_key(job, digest)
            if key not in done and key not in queued:  # the same settings asked for twice
                queued.add(key)
                pending.append((job, digest))

    add(jobs)
    print(f"suite: {len(jobs) - len(pending)} of {len(jobs)} runs done; code {rev}", flush=True)
    env = {**os.environ, "PYTHONPATH": str(src), "PYTHONUNBUFFERED": "1"}
    running: list[tuple[Job, str, Path, subprocess.Popen, float, Any]] = []
    new: list[dict] = []

    def record(job: Job, run_dir: Path, wall: float, commit_id: str, digest: str) -> None:
        line = collect(
            job,
            run_dir,
            wall,
            commit_id,
            preset_digest(src, job.env, job.algo),
            first_reach_levels(job.env),
        )
        done.add(line_key(line))
        results.parent.mkdir(parents=True, exist_ok=True)
        with open(results, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        new.append(line)
        print(f"suite: done {job.env} {job.algo} seed {job.seed} {job.tag}: "
              f"{line['eval']['mean']:.1f} in {wall:.0f} s", flush=True)  # fmt: skip
        if commit:
            commit_results(results, f"suite: {job.env} {job.algo} seed {job.seed} {job.tag}")

    while True:
        if queue is not None:  # lines added are queued, lines removed are dropped
            listed = read_queue(queue)
            keep = set(listed) | set(jobs)
            for item in [p for p in pending if p[0] not in keep]:
                pending.remove(item)
                known.discard(item[0])
                queued.discard(run_key(*item))
            add(listed)
        if not (pending or running or follow):
            break
        cmdlines = _cmdlines()
        ours = {item[3].pid for item in running}
        others = trainings_in(scope, cmdlines) - ours
        for job, digest in list(pending):
            run_dir = out / "runs" / job.env / job.algo / job.tag / f"seed{job.seed}"
            started = _start_record(run_dir)
            if (run_dir / "eval.json").exists() and _ran_with(run_dir) == digest:
                pending.remove((job, digest))  # finished under a scheduler that died: collect
                wall = (run_dir / "eval.json").stat().st_mtime - started["time"]
                record(job, run_dir, wall, started.get("commit", "unknown"), digest)
                continue
            if any(str(run_dir) in argv for argv in cmdlines.values()):
                continue  # in flight under another scheduler: look again later
            if len(running) + len(others) >= n_jobs:
                break
            wait_while_paused(pause_file, scope_pause(scope))
            with slot_lock(scope):  # count again and start, one scheduler at a time
                others = trainings_in(scope, _cmdlines()) - {item[3].pid for item in running}
                if len(running) + len(others) >= n_jobs:
                    break
                pending.remove((job, digest))
                shutil.rmtree(run_dir, ignore_errors=True)  # a run cut short starts again
                run_dir.mkdir(parents=True)
                (run_dir / "suite_start.json").write_text(json.dumps(
                    {"time": time.time(), "settings": digest, "commit": rev}))  # fmt: skip
                log = open(run_dir.with_name(run_dir.name + ".log"), "w")
                proc = subprocess.Popen(command(job, run_dir, python), stdout=log,
                                        stderr=subprocess.STDOUT, env=env, cwd=str(out))  # fmt: skip
            print(f"suite: start {job.env} {job.algo} seed {job.seed} {job.tag}", flush=True)
            running.append((job, digest, run_dir, proc, time.perf_counter(), log))
        time.sleep(poll)
        for item in list(running):
            job, digest, run_dir, proc, t0, log = item
            if proc.poll() is None:
                continue
            running.remove(item)
            log.close()
            wall = time.perf_counter() - t0
            if proc.returncode != 0 or not (run_dir / "eval.json").exists():
                print(f"suite: FAILED {job} (exit {proc.returncode}); see {log.name}", flush=True)
                continue
            started = _start_record(run_dir).get("time")  # the run's own end, not when seen
            if started is not None:
                wall = (run_dir / "eval.json").stat().st_mtime - float(started)
            record(job, run_dir, wall, rev, digest)
    return new


def parse_seeds(text: str) -> list[int]:
    """``"0-4"`` -> 0..4, ``"0,3,5"`` -> those."""
    seeds: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        seeds += list(range(int(lo), int(hi) + 1)) if hi else [int(lo)]
    return seeds


def make_jobs(envs: list[str], algos: list[str], seeds: list[int], steps: int,
              overrides: list[str]) -> list[Job]:  # fmt: skip
    for algo in algos:
        if algo not in ALGOS:
            raise ValueError(f"--algos: unknown algorithm {algo!r}; use trpo and/or npg")
    pairs = []
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set {item!r}: expected FIELD=VALUE, e.g. --set max_kl=0.02")
        k, v = item.split("=", 1)
        pairs.append((k.strip(), v.strip()))
    ov = tuple(sorted(pairs))
    # seeds outermost: the first seed of every task finishes before the second starts
    return [Job(e, a, s, steps, ov) for s in seeds for a in algos for e in envs]


def _run_parser(r: argparse.ArgumentParser) -> None:
    r.add_argument("--envs", default=",".join(TASKS))
    r.add_argument("--algos", default="trpo,npg")
    r.add_argument("--seeds", default="0-2", help="e.g. 0-4 or 0,3,5")
    r.add_argument("--steps", type=int, default=1_000_000)
    r.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE")


def read_queue(path: Path) -> list[Job]:
    """The jobs of a queue file: one set of ``run`` arguments per line (``#`` comments)."""
    import shlex

    parser = argparse.ArgumentParser(prog=f"queue file {path}", add_help=False)
    _run_parser(parser)
    jobs: list[Job] = []
    if not path.exists():
        return jobs
    for text in path.read_text(encoding="utf-8").splitlines():
        text = text.split("#", 1)[0].strip()
        if text:
            a = parser.parse_args(shlex.split(text))
            jobs += make_jobs(a.envs.split(","), a.algos.split(","), parse_seeds(a.seeds),
                              a.steps, a.set)  # fmt: skip
    return jobs


def main(argv: list[str] | None = None) -> None:
    from suite_report import render, summary

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="run (env x algo x seed), skipping finished runs")
    _run_parser(r)
    r.add_argument("--queue", type=Path, default=None,
                   help="also run the jobs of this file (one set of these arguments a line), "
                   "read again as it grows")  # fmt: skip
    r.add_argument("--follow", action="store_true", help="with --queue: wait for more lines")
    r.add_argument("--only-queue", action="store_true", help="no jobs but the queue's")
    r.add_argument("--jobs", type=int, default=2, help="trainings at once (at most 2 here)")
    r.add_argument("--commit", action="store_true", help="git-commit the results after each run")
    r.add_argument("--no-pause", action="store_true", help="ignore the pause file")
    for p in (r, *(sub.add_parser(n, help=h) for n, h in
                   (("summary", "print every group"), ("render", "write the table and plot")))):  # fmt: skip
        p.add_argument("--results", type=Path, default=RESULTS)
        p.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if args.cmd == "run":
        jobs = [] if args.only_queue else make_jobs(
            args.envs.split(","), args.algos.split(","), parse_seeds(args.seeds), args.steps,
            args.set)  # fmt: skip
        run_suite(jobs, args.results, args.out, args.jobs,
                  None if args.no_pause else PAUSE_FILE, args.commit, queue=args.queue,
                  follow=args.follow)  # fmt: skip
    elif args.cmd == "summary":
        print(summary(read_results(args.results)))
    else:
        results = args.results.parent
        render(read_results(args.results), ROOT / "src",
               ttr_lines=read_results(results / "time_to_return.jsonl"),
               gsde_lines=read_results(results / "gsde.jsonl"))  # fmt: skip


if __name__ == "__main__":
    main()
