"""The suite's table and learning-curve grid, from ``bench/results/suite.jsonl``.

``render`` writes ``docs/suite_results.md`` (the README's results section: natgrad's
TRPO and NPG at the preset and step budget, mean ± std over seeds and each seed,
beside the published figures with their sources) and ``docs/img/suite.png`` (one
panel per task: the mean ± std over seeds of the training return against env steps).
``summary`` lists every (env, algo, variant) group, presets and ``--set`` variants alike.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "suite_results.md"
PLOT = ROOT / "docs" / "img" / "suite.png"

# Published figures: (mean, std or None). Columns and their sources.
COLUMNS = {
    "sb3": "sb3-contrib docs (v3, 3 seeds)",
    "ts_trpo": "Tianshou TRPO (10 seeds; max of test average)",
    "ts_npg": "Tianshou NPG",
    "baselines": "OpenAI baselines TRPO (6 seeds)",
}
SOURCES = {
    "sb3": 'sb3-contrib documentation, TRPO "Results" (MuJoCo v3, 1M steps, 3 seeds, '
    "rl-baselines3-zoo settings): https://sb3-contrib.readthedocs.io/en/master/modules/trpo.html",
    "ts_trpo": "Tianshou examples/mujoco/README.md, TRPO table (v3 tasks, v2 for Reacher and "
    "the pendulums; 1M steps, 10 seeds, the max over training of the average test return): "
    "https://github.com/thu-ml/tianshou/tree/master/examples/mujoco",
    "ts_npg": "Tianshou examples/mujoco/README.md, NPG table (as for TRPO)",
    "baselines": "OpenAI baselines benchmarks_mujoco1M.htm, trpo_mpi row (MuJoCo 1M, average "
    "of 6 seeds): https://github.com/openai/baselines/blob/master/benchmarks_mujoco1M.htm",
}
REFERENCES: dict[str, dict[str, tuple[float, float | None]]] = {
    "Ant-v5": {"sb3": (3554, 591), "ts_trpo": (2866.7, 707.9), "ts_npg": (2358.0, 517.5)},
    "HalfCheetah-v5": {
        "sb3": (1803, 46),
        "ts_trpo": (4471.2, 804.9),
        "ts_npg": (3485.2, 716.6),
        "baselines": (1289.7, None),
    },  # fmt: skip
    "Hopper-v5": {
        "sb3": (3372, 215),
        "ts_trpo": (2046.0, 1037.9),
        "ts_npg": (1915.2, 550.5),
        "baselines": (1912.9, None),
    },  # fmt: skip
    "Walker2d-v5": {
        "sb3": (4502, 234),
        "ts_trpo": (3826.7, 782.7),
        "ts_npg": (2503.2, 963.3),
        "baselines": (2342.63, None),
    },  # fmt: skip
    "Swimmer-v5": {
        "sb3": (359, 2),
        "ts_trpo": (40.9, 19.6),
        "ts_npg": (31.5, 8.0),
        "baselines": (94.96, None),
    },  # fmt: skip
    "Humanoid-v5": {"ts_trpo": (810.1, 126.1), "ts_npg": (765.1, 91.3)},
    "Reacher-v5": {"ts_trpo": (-5.1, 0.8), "ts_npg": (-4.5, 0.5), "baselines": (-4.82, None)},
    "InvertedPendulum-v5": {
        "ts_trpo": (1000.0, 0.0),
        "ts_npg": (1000.0, 0.0),
        "baselines": (905.1, None),
    },  # fmt: skip
    "InvertedDoublePendulum-v5": {
        "ts_trpo": (8435.2, 1073.3),
        "ts_npg": (9243.2, 276.0),
        "baselines": (6731.63, None),
    },  # fmt: skip
}
# The returns whose first crossing by the training return is timed (time to return).
TIME_TO = {"Hopper-v5": 3372.0, "HalfCheetah-v5": 1803.0}


def first_reach_levels(env_id: str) -> dict[str, float]:
    """The return levels whose first crossing a run of ``env_id`` records."""
    levels = {k: float(v[0]) for k, v in REFERENCES.get(env_id, {}).items()}
    if env_id in TIME_TO:
        levels["time_to"] = TIME_TO[env_id]
    return levels


def targets(env_id: str) -> dict[str, float | None]:
    """The targets: TRPO ≥ the best published column, NPG ≥ Tianshou NPG."""
    refs = REFERENCES.get(env_id, {})
    best = max((v[0] for v in refs.values()), default=None)
    npg = refs.get("ts_npg", (None, None))[0]
    return {"trpo": best, "npg": npg}


# --- grouping ---------------------------------------------------------------------------
def groups(lines: list[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Runs grouped by (env, algo, steps, settings); the last line per seed."""
    from suite import settings_hash

    out: dict[tuple, dict[int, dict[str, Any]]] = defaultdict(dict)
    for line in lines:
        key = (line["env"], line["algo"], line["steps"], settings_hash(line["config"]))
        out[key][line["seed"]] = line
    return {k: [v[s] for s in sorted(v)] for k, v in out.items()}


def _label(runs: list[dict[str, Any]]) -> str:
    ov = runs[0]["overrides"]
    return ",".join(f"{k}={v}" for k, v in sorted(ov.items())) or "preset"


def _fmt(x: float, like: float | None = None) -> str:
    """Whole numbers from 100 up (judged by ``like``, e.g. the mean beside a std), 0.1s from
    10, else 0.01s."""
    size = abs(x if like is None else like)
    return f"{x:,.0f}" if size >= 100 else f"{x:,.1f}" if size >= 10 else f"{x:,.2f}"


def _pm(m: float, s: float | None) -> str:
    return _fmt(m) + ("" if s is None else f" ± {_fmt(s, m)}")


def _stat(runs: list[dict[str, Any]]) -> tuple[float, float, list[float]]:
    vals = [float(r["eval"]["mean"]) for r in runs]
    return float(np.mean(vals)), float(np.std(vals)), vals


def summary(lines: list[dict[str, Any]]) -> str:
    """One line per group: env, algo, steps, variant, settings, mean ± std, seeds, minutes."""
    rows = []
    for (env, algo, steps, dig), runs in sorted(groups(lines).items()):
        m, s, vals = _stat(runs)
        ov = _label(runs)
        minutes = sum(r["wall_s"] for r in runs) / 60
        seeds = ",".join(str(r["seed"]) for r in runs)
        rows.append(f"{env:26s} {algo:4s} {steps:>8d} {ov:40s} {dig} "
                    f"{_pm(m, s):>16s} [{', '.join(_fmt(v) for v in vals)}] "
                    f"seeds {seeds}  {minutes:.0f} min")  # fmt: skip
    total = sum(r["wall_s"] for r in lines) / 3600
    rows.append(f"{len(lines)} runs, {total:.1f} h of run time")
    return "\n".join(rows)


def preset_runs(lines: list[dict[str, Any]], src: Path, steps: int) -> dict[tuple, list]:
    """The runs with the settings of today's preset (asked for by preset or by ``--set``)."""
    from suite import resolve_config, resolve_configs, settings_hash

    out: dict[tuple, list] = {}
    found = groups(lines)
    resolve_configs(src, sorted({(env, algo, ()) for env, algo, _, _ in found}))
    for (env, algo, st, dig), runs in found.items():
        if st == steps and dig == settings_hash(resolve_config(src, env, algo)):
            out[(env, algo)] = runs
    return out


def render(lines: list[dict[str, Any]], src: Path, steps: int = 1_000_000,
           doc: Path = DOC, plot: Path | None = PLOT,
           ttr_lines: list[dict[str, Any]] | None = None,
           gsde_lines: list[dict[str, Any]] | None = None) -> str:  # fmt: skip
    """Write the results section (markdown) and the curve grid; returns the markdown.

    ``ttr_lines`` (``bench/results/time_to_return.jsonl``) and ``gsde_lines``
    (``bench/results/gsde.jsonl``) add their tables when given.
    """
    from suite import TASKS

    chosen = preset_runs(lines, src, steps)
    head = ["task", "natgrad TRPO", "per seed", "natgrad NPG", "per seed",
            *[COLUMNS[c] for c in COLUMNS], "target met (TRPO / NPG)"]  # fmt: skip
    md = [
        f"### MuJoCo suite at {steps / 1e6:g}M steps",
        "",
        "natgrad's presets (`src/natgrad/presets/trpo.toml`), deterministic evaluation of "
        "10 episodes at the end of training, mean ± std over seeds (seeds 0, 1, ...); "
        "`python bench/suite.py run` then `python bench/suite.py render`. Published "
        "figures beside ours (v3/v4 tasks; ours are v5).",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for env in TASKS:
        cells = [env.removesuffix("-v5")]
        met = []
        for algo in ("trpo", "npg"):
            runs = chosen.get((env, algo))
            if not runs:
                cells += ["–", "–"]
                met.append("–")
                continue
            m, s, vals = _stat(runs)
            cells += [f"**{_pm(m, s)}** ({len(runs)})", ", ".join(_fmt(v, m) for v in vals)]
            t = targets(env)[algo]
            met.append("–" if t is None else ("yes" if m >= t else f"no ({_fmt(m - t, t)})"))
        refs = REFERENCES.get(env, {})
        for c in COLUMNS:
            v = refs.get(c)
            cells.append("–" if v is None else _pm(*v))
        cells.append(" / ".join(met))
        md.append("| " + " | ".join(cells) + " |")
    md += ["", "Sources:", ""] + [f"* {COLUMNS[c]}: {SOURCES[c]}" for c in COLUMNS]
    md += ["", "![Learning curves of the suite](img/suite.png)", ""]
    md += time_to_return_section(ttr_lines or [])
    md += gsde_section(gsde_lines or [])
    text = "\n".join(md)
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text, encoding="utf-8")
    if plot is not None:
        plot_grid(chosen, plot)
    return text


def plot_grid(chosen: dict[tuple, list], path: Path) -> None:
    """3×3 panels, one per task: mean ± std band of the training return per algorithm."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from suite import TASKS

    fig = Figure(figsize=(12, 10))
    FigureCanvasAgg(fig)
    axes = fig.subplots(3, 3)
    for ax, env in zip(axes.flat, TASKS, strict=True):
        for algo, colour in (("trpo", "C0"), ("npg", "C1")):
            runs = chosen.get((env, algo))
            if not runs:
                continue
            hi = min(max(r["curve"]["env_steps"]) for r in runs)
            grid = np.linspace(0, hi, 100)
            ys = []
            for r in runs:
                x = np.asarray(r["curve"]["env_steps"], float)
                y = np.asarray([np.nan if v is None else v for v in r["curve"]["episode_return"]])
                ok = np.isfinite(y)
                ys.append(np.interp(grid, x[ok], y[ok]) if ok.any() else np.full_like(grid, np.nan))
            mean, std = np.nanmean(ys, axis=0), np.nanstd(ys, axis=0)
            ax.plot(grid, mean, color=colour, label=f"{algo.upper()} ({len(runs)} seeds)")
            ax.fill_between(grid, mean - std, mean + std, color=colour, alpha=0.25)
        ax.set_title(env)
        ax.set_xlabel("env steps")
        ax.grid(alpha=0.3)
        if ax.has_data():
            ax.legend(fontsize=8)
    axes[0, 0].set_ylabel("training return (last 100 episodes)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def time_to_return_section(lines: list[dict[str, Any]]) -> list[str]:
    """The time-to-return table: per env and seed, both arms' seconds to the level."""
    if not lines:
        return []
    md = [
        "### Time to return against sb3-contrib",
        "",
        "Wall seconds until the training return (mean of the last 100 episodes) first reaches "
        "sb3-contrib's documented final return, natgrad's preset against sb3-contrib 2.9 "
        "with rl-baselines3-zoo's settings, run side by side on this machine (one process "
        "each, same seed); `python bench/time_to_return.py`. Target: natgrad ≤ 1/4 of "
        "sb3-contrib's time, or sb3-contrib never gets there within 1M steps.",
        "",
        "| env | level | seed | natgrad s (steps) | sb3-contrib s (steps) | ratio | final eval natgrad / sb3 |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip

    def arm(a: dict[str, Any]) -> str:
        if a["wall_s_to_level"] is None:
            return f"not reached in {a['wall_s']:,.0f} s"
        return f"{a['wall_s_to_level']:,.0f} ({a['env_steps_to_level'] / 1e3:,.0f}k)"

    for x in sorted(lines, key=lambda x: (x["env"], x["seed"])):
        ratio = "–" if x["ratio"] is None else f"{x['ratio']:.2f}"
        md.append(f"| {x['env']} | {x['level']:,.0f} | {x['seed']} | {arm(x['natgrad'])} | "
                  f"{arm(x['sb3'])} | {ratio} | {x['natgrad']['eval_mean']:,.0f} / "
                  f"{x['sb3']['eval_mean']:,.0f} |")  # fmt: skip
    return [*md, ""]


def gsde_section(lines: list[dict[str, Any]]) -> list[str]:
    """gSDE runs (``bench/results/gsde.jsonl``), grouped by env, settings and steps."""
    if not lines:
        return []
    md = [
        "### gSDE",
        "",
        "`use_sde=true` (generalised state-dependent exploration); deterministic evaluation "
        "of 10 episodes at the end, mean ± std over seeds; `python bench/suite.py run "
        "... --results bench/results/gsde.jsonl`.",
        "",
        "| env | steps | settings over the preset | seeds | mean ± std | per seed |",
        "|---|---|---|---|---|---|",
    ]
    for (env, _, steps, _), runs in sorted(groups(lines).items()):
        m, s, vals = _stat(runs)
        md.append(f"| {env} | {steps / 1e3:,.0f}k | {_label(runs)} | {len(runs)} | "
                  f"**{_pm(m, s)}** | {', '.join(_fmt(v, m) for v in vals)} |")  # fmt: skip
    return [*md, ""]
