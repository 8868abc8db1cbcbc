"""Render ``benchmarks/results/*.json`` into ``docs/benchmarks.md``.

Run: ``python -m benchmarks.report`` after any ``python -m benchmarks.<name>``.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "docs" / "benchmarks.md"

HEADER = """# Benchmarks

Every figure below was produced by the command shown above its table, on the machine named there, with both
sides measured in the same process run (alternating, median of the repeats). Ratios are jaxstars / baseline:
above 1 means jaxstars is faster for throughput; below 1 means jaxstars compiles faster. Regenerate this page with
`python -m benchmarks.report`.
"""


def _fmt(value: float) -> str:
    return f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"


def flows_section(data: dict) -> str:
    meta = data["meta"]
    lines = [
        "## Flow library vs flowjax (`benchmarks/flows.py`)",
        "",
        f"Command: `{meta['command']}` — machine: {meta['machine']}, jax {meta['jax']}, flowjax {meta['flowjax']}, "
        f"{meta['date']}. Train step: Adam on −mean log p, batch {meta['batch']}; log_prob on "
        f"{meta['eval_points']:,} points.",
        "",
        "| case | library | train steps/s | log_prob points/s | compile (s) |",
        "|---|---|---|---|---|",
    ]
    for name, row in data["results"].items():
        for lib in ("jaxstars", "flowjax"):
            if lib in row:
                r = row[lib]
                lines.append(
                    f"| {name} | {lib} | {_fmt(r['train_steps_per_s'])} | {_fmt(r['log_prob_points_per_s'])} | "
                    f"{r['compile_s']:.2f} |"
                )
        if "ratio" in row:
            q = row["ratio"]
            lines.append(
                f"| {name} | **ratio** | **{q['train_steps_per_s']:.2f}×** | **{q['log_prob_points_per_s']:.2f}×** | "
                f"**{q['compile_time']:.2f}×** |"
            )
    lines += [
        "",
        "Goal (issue: foundation): ≥ 1.0× flowjax on train steps/s and log_prob throughput for (a) and (b), compile "
        "time no worse. (c) CNF has no flowjax equivalent: absolute figures only. The BNAF rows compare the same "
        "network: jaxstars `depth=3` (3 block-linear layers) is flowjax `nn_depth=2` (2 hidden layers).",
        "",
    ]
    return "\n".join(lines)


def generic_section(name: str, data: dict) -> str:
    meta = data.get("meta", {})
    lines = [f"## {name} (`benchmarks/{name}.py`)", ""]
    if "command" in meta:
        lines.append(f"Command: `{meta['command']}` — machine: {meta.get('machine', '?')}, {meta.get('date', '')}.")
        lines.append("")
    lines.append("```json")
    lines.append(json.dumps(data.get("results", data), indent=2))
    lines.append("```")
    lines.append("")
    return "\n".join(lines)


def main() -> None:
    parts = [HEADER]
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        parts.append(flows_section(data) if path.stem == "flows" else generic_section(path.stem, data))
    DOC.write_text("\n".join(parts))
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
