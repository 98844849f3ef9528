#!/usr/bin/env python3
"""Where a gpu_opt decode step's time goes inside its CUDA graph (LAB_GPU_TRACE=1).

ncu serializes the kernels and flushes the caches between them, so it shows each kernel's whole ramp-up
and tail; inside the graph, with programmatic dependent launch, a kernel's blocks start before the
previous kernel ends. Here every launch of a decode() step marks, with the GPU's %globaltimer, its first
block's start, the first block past griddepcontrol.wait (the previous kernel's results visible), and its
last block's end (gpu_opt_engine.cu, TraceMarks). Per kind of launch and per token:
  busy   wait released -> last block done: the kernel's own work
  drain  the previous launch's last block -> this one's release: the kernel boundary, where no kernel of
         the step does its work (the weights this launch loaded before the wait stream meanwhile)
  pre    this launch's first block -> its release: blocks resident early, loading their first weights
  first phase  a block's own release -> x staged (matvec) or its split's partial written (attention),
         averaged over the launch's blocks
  SMs    the SMs a launch's blocks ran on (%smid; session 21: a grid launched early is packed, not spread)
and the bytes each kind must read over the read ceiling measured first (our read kernel), so that
"busy at the ceiling" says how close each kernel's own streaming gets.

A second table splits the step's time beyond its bytes at the ceiling (each kind's busy time past its
bytes, the drains, the rest) into shares: the budget any change to the step is spending from.

  PYTHONPATH=<gpu bundle> python3 cuda/gpu_opt/step_trace.py --model_dir M --context 512 --out DIR
  python3 cuda/gpu_opt/step_trace.py --from_json DIR/step_trace.json --out DIR2   # the tables again, no GPU
"""

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

# (mlp: LAB_GPU_MLP=fused's one kernel, in gate_up's and down's places; a step has one or the other)
KINDS = ["qkv", "attention", "o_proj", "gate_up", "down", "mlp", "lm_head"]


def bytes_per_step(cfg, context):
    """fp16 weights per product and the fp16 K/V rows attention reads at `context` positions."""
    from lab.bench.counting import kv_elements, product_elements

    b = {k: 2 * v for k, v in product_elements(cfg).items()}
    return dict(b, attention=2 * kv_elements(cfg, context), mlp=b["gate_up"] + b["down"])


def rows_from(per, nbytes, ceiling):
    """The table's rows from a step's sums per kind (`per`: phase_seconds() per step), for the kinds that
    launched (a fused MLP's step has mlp where the split one has gate_up and down; an engine from before
    session 24 reports no mlp)."""
    rows = []
    for k in KINDS:
        n = per.get(f"{k}.launches", 0)
        if not n:
            continue
        busy, drain, pre, staged, spread, tail = (
            per[f"{k}.{x}"] for x in ("busy", "drain", "pre", "staged", "spread", "tail"))
        sms = per.get(f"{k}.sms")  # (an engine from before session 21 does not mark its SMs)
        ideal = nbytes[k] / (ceiling * 1e9)
        rows.append({"kind": k, "launches": n, "MB": nbytes[k] / 1e6, "busy_us": busy * 1e6, "drain_us": drain * 1e6,
                     "pre_us": pre * 1e6, "ideal_us": ideal * 1e6, "busy_gbps": nbytes[k] / busy / 1e9 if busy else 0,
                     "staged_us": staged / n * 1e6, "spread_us": spread / n * 1e6, "tail_us": tail * 1e6,
                     **({"sms": sms / n} if sms is not None else {})})
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model_dir", help="the model to trace (not with --from_json)")
    ap.add_argument("--from_json", help="render a trace's step_trace.json again (tables only, no GPU)")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=64, help="traced decode() steps")
    ap.add_argument("--max_context", type=int, default=0,
                    help="the engine's positions (default context + tokens + 16); its graph tuner times the step at "
                         "position min(max_context - 1, 1024 or LAB_GPU_TUNE_POS), so 2500 tunes as the bench's does")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    out = Path(a.out)
    if a.from_json:
        out.mkdir(parents=True, exist_ok=True)
        return write(json.loads(Path(a.from_json).read_text()), out)
    if not a.model_dir:
        raise SystemExit("step_trace: --model_dir or --from_json is needed")
    os.environ["LAB_GPU_TRACE"] = "1"
    import lab._engine as E

    samples, how = E.gpu_read_bandwidth(2 << 30, 5)
    ceiling = max(samples)
    need = a.context + a.tokens + 16
    if a.max_context and a.max_context < need:
        raise SystemExit(f"step_trace: --max_context {a.max_context} is below the {need} positions the trace needs")
    eng = E.Engine("gpu_opt", a.model_dir, max(a.max_context, need))
    cfg = eng.config
    rng = np.random.default_rng(0)
    eng.prefill(rng.integers(0, int(cfg["vocab_size"]), a.context))
    for t in rng.integers(0, int(cfg["vocab_size"]), 8):  # warm-up steps
        eng.decode(int(t))
    before = eng.phase_seconds()
    if not before:
        raise SystemExit("step_trace: the engine returned no trace (LAB_GPU_TRACE=1 not honoured?)")
    t0 = time.perf_counter()
    for t in rng.integers(0, int(cfg["vocab_size"]), a.tokens):
        eng.decode(int(t))
    wall = (time.perf_counter() - t0) / a.tokens
    after = eng.phase_seconds()
    steps = after["steps"] - before["steps"]
    per = {k: (after[k] - before[k]) / steps for k in after if k != "steps"}
    rows = rows_from(per, bytes_per_step(cfg, a.context + a.tokens // 2), ceiling)
    out.mkdir(parents=True, exist_ok=True)
    d = {"model_dir": a.model_dir, "context": a.context, "tokens": a.tokens, "max_context": eng.max_context,
         "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "ceiling_gbps": ceiling, "ceiling_how": how,
         "variant": eng.variant, "rows": rows, "step_s": per["step"], "wall_s": wall, "per_step": per}
    write(d, out)


def losses(d):
    """The step's time beyond its bytes at the ceiling, in us: each kind's busy time past its bytes, the drains,
    and the rest of the step (launch gaps the marks do not cover; may be negative where kernels overlap)."""
    rows = d["rows"]
    busy = sum(r["busy_us"] for r in rows)
    drains = sum(r["drain_us"] for r in rows)
    out = [(f"{r['kind']} beyond its bytes", r["busy_us"] - r["ideal_us"]) for r in rows]
    out += [("drains between kernels", drains), ("the rest of the step", d["step_s"] * 1e6 - busy - drains)]
    return out


def render(d):
    """The markdown of a trace (a dict as written to step_trace.json)."""
    rows, ceiling, step, wall = d["rows"], d["ceiling_gbps"], d["step_s"], d["wall_s"]
    tot = {"busy": sum(r["busy_us"] for r in rows) / 1e6, "drain": sum(r["drain_us"] for r in rows) / 1e6,
           "ideal": sum(r["ideal_us"] for r in rows) / 1e6}
    engine = f"; an engine of {d['max_context']} positions" if "max_context" in d else ""
    md = [f"# gpu_opt decode step inside its graph ({d.get('date', 'date not recorded')})", "",
          f"Model `{Path(d['model_dir']).name}`, context {d['context']} (+{d['tokens']} traced decode() steps, logits to the "
          f"host{engine}), {d['variant'] or 'defaults'}. "
          f"Read ceiling measured first: **{ceiling:.0f} GB/s** ({d['ceiling_how']}). "
          "Per token, summed over the launches of each kind (`busy`: from the first block past the PDL wait to "
          "the last block's end; `drain`: from the previous launch's last block to this one's release, the "
          "kernel boundary; `pre`: blocks resident before the release); `at the ceiling`: the kind's bytes "
          "over the read ceiling; `first phase`: per launch, a block's mean time from its own release to the end "
          "of its first phase (a matvec: x staged in shared memory; attention: its split's partial written); "
          "`ends spread`: per launch, the first released block's end to the last block's; `tail`: the busy time "
          "past the mean block's (release to end): at most what a balance of the blocks could give back, and "
          "mostly not there to win, since the SMs still running take the bandwidth of those done "
          "(cuda/kernels/README.md, \"SM rates\"); `SMs`: per launch, the SMs its blocks ran on (a grid launched "
          "early is packed onto the SMs with room: cuda/kernels/README.md, \"Where the readers run\").", "",
          "| kind | launches | MB | busy us | at the ceiling us | GB/s while busy | % of ceiling while busy | "
          "drain before it us | pre us | first phase us per launch | ends spread us per launch | tail us | SMs |",
          "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        spread = f"{r['spread_us']:.2f}" if "spread_us" in r else "—"  # (traces before session 18 lack them)
        tail = f"{r['tail_us']:,.1f}" if "tail_us" in r else "—"
        sms = f"{r['sms']:.0f}" if "sms" in r else "—"  # (traces before session 21 lack them)
        md.append(f"| {r['kind']} | {r['launches']:.0f} | {r['MB']:,.1f} | {r['busy_us']:,.1f} | {r['ideal_us']:,.1f} | "
                  f"{r['busy_gbps']:,.0f} | {100 * r['busy_gbps'] / ceiling:.1f}% | {r['drain_us']:,.1f} | {r['pre_us']:,.1f} | "
                  f"{r['staged_us']:.2f} | {spread} | {tail} | {sms} |")
    total_mb = sum(r["MB"] for r in rows)
    md += ["", f"Step (first block's start to the last block's end): **{step * 1e6:,.1f} us**; busy summed "
               f"{tot['busy'] * 1e6:,.1f} us, drains summed {tot['drain'] * 1e6:,.1f} us; the step's {total_mb:,.0f} MB at "
               f"the ceiling {tot['ideal'] * 1e6:,.1f} us = {100 * tot['ideal'] / step:.1f}% of the step; wall clock per "
               f"decode() {wall * 1e6:,.1f} us ({1 / wall:.1f} tok/s, host and the logits' copy included).", ""]
    loss = losses(d)
    total = sum(us for _, us in loss)
    md += [f"Where the step's {total:,.1f} us beyond its bytes at the ceiling go (busy past the bytes, per kind; "
           "the drains; the rest of the step):", "", "| where | us a step | share |", "| --- | ---: | ---: |"]
    md += [f"| {w} | {round(us, 1) or 0.0:,.1f} | {round(100 * us / total, 1) or 0.0:.1f}% |" for w, us in loss]  # no -0.0
    md.append("")
    return md


def write(d, out):
    md = render(d)
    (out / "step_trace.json").write_text(json.dumps(d, indent=1))
    (out / "step_trace.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
