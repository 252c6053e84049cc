"""How this run's results differ from the committed ones: the closing lines of `make run`.

    python -m pipelines.results [--rev HEAD]

The metrics files are kept in git (`cache: false`), so `dvc metrics diff <rev>` compares
the workspace with any commit. Determinism holds per machine, not across machines (the
trained weights of the multi-threaded recurrent models and some autoencoders depend on the
CPU the kernels run on), so on another machine `make run` may retrain to other figures; this
says which experiments moved and by how much (their headline metric), which sweeps moved,
and on which machine the committed results were made (`outputs/report/machines.json`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from pipelines import config, paths, runtime, tasks

MACHINES = "outputs/report/machines.json"


def metrics_diff(root: Path, rev: str) -> dict[str, dict[str, dict]]:
    """`dvc metrics diff <rev> --json`: per metrics file, each changed metric's old, new, diff."""
    result = subprocess.run([sys.executable, "-m", "dvc", "metrics", "diff", rev, "--json"], cwd=root,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise runtime.StageError(f"dvc metrics diff {rev} failed: {result.stderr.strip()[-300:]}")
    return json.loads(result.stdout or "{}")


def _committed(root: Path, rev: str, path: str) -> dict | None:
    out = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def _number(value) -> str:
    return "none" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


def _machine(entry: dict | None) -> str:
    if not entry or entry.get("machine_id", "unknown") == "unknown":
        return "an unrecorded machine"
    return f"{entry.get('host', '?')} ({entry['machine_id']}: {entry.get('cpu', '?')}, {entry.get('cpu_isa', '?')})"


def closing_lines(root: Path = paths.ROOT, rev: str = "HEAD") -> list[str]:
    """What moved against `rev`: one line per experiment or sweep whose metrics differ,
    headline first, then where the committed results and this run's come from."""
    params = config.load(root / "params.yaml")
    diff = metrics_diff(root, rev)
    lines, moved, new = [], 0, []
    for name, exp in params.experiments.items():
        if _committed(root, rev, f"outputs/experiments/{name}/eval/metrics.json") is None:
            new.append(name)   # no committed results to compare with
            continue
        headline = f"test_{tasks.get(config.task_name(exp)).headline}"
        changed = {f"{stage}/{key}": d for stage in ("train", "eval", "export")
                   for key, d in diff.get(f"outputs/experiments/{name}/{stage}/metrics.json", {}).items()}
        if not changed:
            continue
        moved += 1
        head = changed.pop(f"eval/{headline}", None)
        text = (f"{headline} {_number(head.get('old'))} -> {_number(head.get('new'))}"
                f" ({head['diff']:+.4g})" if head and head.get("diff") is not None else f"{headline} unchanged")
        others = ", ".join(sorted(k.split("/", 1)[1] for k in changed))
        lines.append(f"  {name}: {text}" + (f"; also {others}" if others else ""))
    for sweep in config.SWEEPS:
        changed = diff.get(f"outputs/{sweep}/metrics.json", {})
        if getattr(params, sweep) is not None and changed and _committed(root, rev, f"outputs/{sweep}/metrics.json"):
            moved += 1
            lines.append(f"  {sweep}: " + ", ".join(f"{k} {_number(d.get('old'))} -> {_number(d.get('new'))}"
                                                    for k, d in sorted(changed.items())))
    total = len(params.experiments) + sum(getattr(params, s) is not None for s in config.SWEEPS)
    fresh = [f"results: {len(new)} experiments have no committed results at {rev} yet: {', '.join(new)}"] \
        if new else []
    if not moved:
        if len(new) == len(params.experiments):
            return fresh
        return [*fresh, f"results: every metric equals the committed one ({rev}) in all {total - len(new)} "
                        "experiments and sweeps"]
    before = _committed(root, rev, MACHINES) or {}
    now = json.loads((root / MACHINES).read_text()) if (root / MACHINES).exists() else {}
    origins = sorted({_machine(before.get(n)) for n in params.experiments if n in before}) or ["no record"]
    here = sorted({_machine(now.get(n)) for n in params.experiments if n in now}) or ["no record"]
    return [*fresh, f"results: {moved} of {total - len(new)} experiments and sweeps differ from the committed ones "
                     f"({rev}):", *lines,
            f"committed results from: {'; '.join(origins)}", f"this run's: {'; '.join(here)}",
            "determinism holds per machine, not across machines (README, `Results across machines`); "
            f"`dvc metrics diff {rev}` lists every figure"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="How the workspace's results differ from a commit's.")
    parser.add_argument("--rev", default="HEAD", help="the commit to compare with (default HEAD)")
    args = parser.parse_args(argv)
    runtime.run_stage(lambda: print("\n".join(closing_lines(rev=args.rev))))


if __name__ == "__main__":
    main()
