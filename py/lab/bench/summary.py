"""One line per engine and run: the README's summary of every stage, built from bench.json files.

For each engine in each run: decode tok/s at the context nearest 512 (with GB/s and % of the
machine's measured read bandwidth), TTFT at the prompt nearest 1024 (with % of the measured
compute roof), and the ratio to the best peer of that run. Numbers come only from the files.
"""

import json
from pathlib import Path

from lab.bench import report

STAGE = {"cpu_fp32": "1", "cpu_opt": "2", "gpu_naive": "3", "gpu_opt": "4"}


def _nearest(rows, key, target):
    return min(rows, key=lambda r: abs(r[key] - target)) if rows else None


def _run_folder(path) -> str:
    """The run's folder: bench.json's own, or its parent's when `run.sh bench` wrote it into <run>/bench/;
    under bench_results/, its path from there (a session's folder holds one folder a device call)."""
    folder = Path(path).parent
    if folder.name == "bench" and folder.parent.name:
        folder = folder.parent
    parts = folder.parts
    if "bench_results" in parts[:-1]:
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("bench_results") + 1:])
    return folder.name


def summary_rows(paths) -> list:
    """paths: bench.json files, each optionally followed by '@engine+engine' to keep only those engines."""
    rows = []
    for spec in paths:
        p, _, only = str(spec).partition("@")
        keep = set(only.split("+")) if only else None
        d = json.loads(Path(p).read_text())
        for r in d["runners"]:
            if r.get("kind") != "engine" or r.get("error") or (keep and r["name"] not in keep):
                continue
            machine = report.machine_label(d["machine"], r.get("device", "cpu"))
            pts = r.get("decode", [])
            dec = _nearest([p for p in pts if p.get("mode") != "logits"] or pts, "context", 512)
            tt = _nearest(r.get("ttft", []), "prompt_len", 1024)
            rows.append({
                "stage": STAGE.get(r["name"], "?"), "engine": r["name"], "machine": machine,
                "model": d["model"]["name"], "date": d["machine"].get("date", "")[:10],
                "decode": dec, "ttft": tt, "source": _run_folder(p),
                "dirty": bool(d["machine"].get("git_dirty")),
            })
    return sorted(rows, key=lambda x: (x["stage"], x["machine"], x["model"]))


def markdown(rows) -> str:
    out = ["| stage | engine | machine | model | decode tok/s (ctx) | GB/s, % of read BW | vs best peer | TTFT ms (tokens) | % of compute roof | run |",
           "| --- | --- | --- | --- | ---: | ---: | --- | ---: | ---: | --- |"]
    for r in rows:
        d, t = r["decode"], r["ttft"]
        dec = f"{d['tok_s']['median']:.1f} ({d['context']}{', greedy' if d.get('mode') == 'greedy' else ''})" if d else "—"
        # three significant digits, rounded down (report.pct_text): a target such as 85% of the read ceiling
        # must not be met by rounding
        bw = f"{d['gbps']['median']:,.0f}, {report.pct_text(d['pct_of_roof'])}%" if d else "—"
        peer = (f"{report.ratio_text(d['ratio_vs_best_peer'])} {d['best_peer']}" if d and d.get("best_peer") else "—")
        ttft = f"{t['ms']['median']:,.1f} ({t['prompt_len']})" if t else "—"
        roof = f"{report.pct_text(t['pct_of_roof'])}%" if t and t.get("pct_of_roof") is not None else "—"
        out.append(f"| {r['stage']} | `{r['engine']}` | {r['machine']} | {r['model']} | {dec} | {bw} | {peer} | "
                   f"{ttft} | {roof} | {r['source']} ({r['date']}{', uncommitted changes' if r.get('dirty') else ''}) |")
    return "\n".join(out) + ("\n\nMedians of repeats; each run measured its own ceilings and peers (see its bench.md). "
                              "Decode: greedy generation (`Engine.generate`, argmax where the logits are) where marked "
                              "greedy, else one `decode()` call per token with the logits copied to the host. % of compute roof: TTFT's "
                              "FLOPs against the machine's measured fp32 FMA peak (CPU) or fp16 matmul rate (GPU); "
                              "prefill products in bf16 (cpu_opt on AVX512-BF16) can pass the fp32 roof.\n")
