#!/usr/bin/env python3
"""gpu_opt decode variants side by side on one card, in one device call (README "Decode tuning").

Each variant is (bundle, environment): the engine reads its knobs when it is created, so every variant
runs in its own process, one after another, on the same model file (in the page cache after the first).
Per variant and context: a fresh prefill of a prompt as long as the context (the same prompt for every
variant), one decode step whose logits are kept (the same token for every variant, so the variants'
logits can be compared with each other on the same history), then blocks of decode
steps timed with the host clock exactly as `lab.bench.timing.measure_decode` does (--mode greedy, the
default: one `engine.generate` call per block, the loop on the device; --mode logits: `engine.decode`
calls, the logits on the host, the Python around them); tok/s is the median over the timed blocks.
% of read = bytes a token must read (`lab.bench.counting.decode_bytes`, weights +
K/V at the blocks' mean attended length) x tok/s over the read ceiling measured first in the same call
(`lab.bench.ceilings.gpu_ceilings`' roof: the higher of the lab's read kernel and torch's x.sum(), 4 GiB).

  python3 cuda/gpu_opt/decode_variants.py --model_dir M --out DIR \
      --variant new=/tmp/lab/gpu_bundle --variant base=/tmp/base/gpu_bundle \
      --variant "v1=/tmp/lab/gpu_bundle:LAB_GPU_DECODE_ATTN=v1" ...

Writes DIR/variants.json (per variant also the engine's own `variant` string: the tiles its tuner
picked in that process), DIR/variants.md, DIR/<label>.log (the engine's stderr, LAB_GPU_VERBOSE=1:
its tuning tables) and prints the table; with more than one context also DIR/variants.png (tok/s against
the context, one line per variant, the blocks' min-max as bars). --pack FILE.tgz also writes them (not the
probe logits) as one archive: a device call brings back only a few files.

  python3 cuda/gpu_opt/decode_variants.py --replot DIR/variants.md --out DIR   (the plot again, from a
      saved table: this tool's variants.md, or its printed log)
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import json, sys, time
import numpy as np
import lab._engine as E
args = json.loads(sys.argv[1])
eng = E.Engine(args["engine"], args["model"], args["max_context"])
cfg = eng.config
vocab = int(cfg["vocab_size"])
rng = np.random.default_rng(1234)
res = {"contexts": []}
for ctx in args["contexts"]:
    # Every context from a fresh prefill of the same prompt: greedy blocks feed back each variant's own
    # argmax, so after them the caches of two variants whose logits differ in the last bits hold other
    # tokens, and the next context's probe would compare different histories.
    eng.reset()
    prompt = np.random.default_rng(ctx).integers(0, vocab, ctx + 1)
    eng.prefill(prompt[:ctx])
    probe = eng.decode(int(prompt[ctx]))
    np.save(args["probe"] + f"_{ctx}.npy", np.asarray(probe, dtype=np.float32))
    n, rates, kv = args["tokens"], [], []
    for b in range(args["warmup"] + args["repeats"]):
        toks = rng.integers(0, vocab, n)
        start = eng.pos
        t0 = time.perf_counter()
        if args["mode"] == "greedy":
            eng.generate(int(toks[0]), n)
        else:
            for t in toks:
                eng.decode(int(t))
        dt = time.perf_counter() - t0
        if b >= args["warmup"]:
            rates.append(n / dt)
            kv.append(start + (n + 1) / 2)
    res["contexts"].append({"context": ctx, "tok_s": rates, "median": float(np.median(rates)),
                            "min": float(min(rates)), "max": float(max(rates)), "mean_kv_len": float(np.mean(kv))})
res["variant"] = eng.variant  # the tiles the tuner picked in this process, and any knob it names
print("RESULT " + json.dumps(res))
"""


def read_ceiling():
    """The bench's GPU read roof (lab.bench.ceilings.gpu_read_ceiling: the higher of the lab's read kernel
    and torch's x.sum(), 4 GiB, 10 passes each)."""
    import torch
    from lab.bench.ceilings import gpu_read_ceiling

    read, _, _ = gpu_read_ceiling(4 << 30, 10, log=lambda *_: None)
    torch.cuda.empty_cache()
    return {"best": read["best"], "median": read["median"], "card": torch.cuda.get_device_name(0),
            "method": read["method"]}


def pct_text(x):
    """% of the ceiling as the bench's tables show it (three significant digits, rounded down); imported
    here so that --replot runs without the lab package."""
    from lab.bench.report import pct_text as bench_pct

    return bench_pct(x)


def context_needed(contexts, steps):
    """The engine's context for a child that, per context, prefills a fresh prompt of that length and then
    decodes `steps` tokens."""
    return max(contexts) + steps


def parse_env(text):
    """ENV=VAL settings separated by commas, where a value may itself hold commas (LAB_GPU_TILES=gate_up=a,
    lm_head=b): a new setting starts only at a comma followed by an upper-case NAME and '='."""
    return dict(kv.split("=", 1) for kv in re.split(r",(?=[A-Z_][A-Z0-9_]*=)", text) if "=" in kv)


def table_lines(rows, contexts, ref):
    """The markdown table: per variant its env, then per context tok/s median (min-max) and % of the read
    ceiling (a dash where it has none), and the probe logits against variant `ref` ((!) where the argmax
    differs or a logit is not finite)."""
    lines = ["| variant | env | " + " | ".join(f"tok/s @{c} | % read @{c}" for c in contexts) + f" | logits vs {ref} |",
             "| --- | --- | " + " | ".join("---: | ---:" for _ in contexts) + " | --- |"]
    for row in rows:
        cs = {c["context"]: c for c in row.get("contexts", [])}
        cells = []
        for c in contexts:
            if c in cs:
                cells.append(f"{cs[c]['median']:.1f} ({cs[c]['min']:.1f}-{cs[c]['max']:.1f}) | {pct_text(cs[c]['pct_read'])}%")
            else:
                cells.append("— | —")
        errs = ", ".join(f"{c['rel_err_vs_' + ref]:.1e}{'' if c['argmax_same'] and c['finite'] else ' (!)'}"
                         for c in row.get("contexts", []) if "rel_err_vs_" + ref in c)
        env = ",".join(f"{k}={v}" for k, v in row["env"].items()) or "defaults"
        lines.append(f"| {row['label']} | {env} | " + " | ".join(cells) + f" | {errs or row.get('error', '')} |")
    return lines


def engine_lines(rows):
    """Under the table: each process's tiles and named knobs (the engine's variant()), so that an A/B of
    tuned processes says which tiles each one's tuner kept (session 20: they differed, and so did tok/s)."""
    named = [r for r in rows if r.get("variant")]
    if not named:
        return []
    return ["Tiles and knobs each process ran (the engine's `variant()`; tuned where the env pins none):", ""] + [
        f"- {r['label']}: {r['variant']}" for r in named]


def rows_from_table(text):
    """(contexts, rows) from the first table of this tool's output (variants.md, or the log that printed
    it): each row {"label", "env", "contexts": [{"context", "median", "min", "max"}]}, a context left out
    where its cell is a dash."""
    contexts, rows = None, []
    for line in text.splitlines():
        if contexts is None:
            if line.startswith("| variant | env |"):
                contexts = [int(c) for c in re.findall(r"tok/s @(\d+)", line)]
            continue
        if not line.startswith("|"):
            break  # the table's end
        if line.startswith("| ---"):
            continue
        cells = [x.strip() for x in line.strip().strip("|").split("|")]
        points = []
        for i, c in enumerate(contexts):
            m = re.match(r"([\d.]+) \(([\d.]+)-([\d.]+)\)", cells[2 + 2 * i])
            if m:
                points.append({"context": c, "median": float(m[1]), "min": float(m[2]), "max": float(m[3])})
        env = parse_env(cells[1])
        rows.append({"label": cells[0], "env": env, "contexts": points})
    if contexts is None:
        raise SystemExit("no decode_variants table found (a line starting '| variant | env |')")
    return contexts, rows


def plot(rows, path, title):
    """tok/s against the context, one line per variant, min-max of the blocks as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for row in rows:
        pts = row.get("contexts", [])
        if not pts:
            continue
        x = [p["context"] for p in pts]
        y = [p["median"] for p in pts]
        err = [[p["median"] - p["min"] for p in pts], [p["max"] - p["median"] for p in pts]]
        env = ",".join(f"{k}={v}" for k, v in row.get("env", {}).items()) or "defaults"
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=f"{row['label']}: {env}")
    ax.set_xlabel("context (tokens before the timed decode steps)")
    ax.set_ylabel("decode tok/s (median of blocks)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model_dir", help="the model folder (config.json, model.bin)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--variant", action="append",
                    help="label=bundle_dir[:ENV=VAL[,ENV=VAL...]] (a value may hold commas: a setting starts "
                         "only at ',NAME=' with NAME in capitals); the first is the reference for logits")
    ap.add_argument("--replot", help="a saved table (variants.md or the printed log): write DIR/variants.png only")
    ap.add_argument("--contexts", default="512,2048")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--timeout", type=int, default=90)
    ap.add_argument("--engine", default="gpu_opt")
    ap.add_argument("--mode", choices=["greedy", "logits"], default="greedy",
                    help="greedy: engine.generate() blocks (the bench's default); logits: decode() per token")
    ap.add_argument("--ceiling_gbps", type=float, default=0, help="skip measuring the read ceiling (tests)")
    ap.add_argument("--pack", help="also write this .tgz of --out without the probe logits (a device call "
                                   "returns only a few files: carry one archive back)")
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.replot:
        text = Path(a.replot).read_text()
        _, rows = rows_from_table(text)
        card = re.search(r"Card: ([^;]+);", text)
        plot(rows, out / "variants.png", f"gpu_opt decode variants, {card[1] if card else Path(a.replot).name}")
        print(f"wrote {out / 'variants.png'}")
        return
    if not a.variant or not a.model_dir:
        ap.error("--model_dir and --variant are required (or --replot)")
    contexts = [int(c) for c in a.contexts.split(",")]
    if contexts != sorted(set(contexts)):
        raise SystemExit(f"--contexts must increase: {a.contexts}")
    max_context = context_needed(contexts, 1 + (a.warmup + a.repeats) * a.tokens)

    import numpy as np

    sys.path.insert(0, a.variant[0].split("=", 1)[1].partition(":")[0])  # the first bundle's lab package
    from lab.bench import counting

    cfg = counting.config_from_model_dir(a.model_dir)
    ceiling = read_ceiling() if not a.ceiling_gbps else {"best": a.ceiling_gbps, "median": a.ceiling_gbps,
                                                          "card": "given", "method": "--ceiling_gbps"}
    print(f"read ceiling {ceiling['best']:.0f} GB/s ({ceiling['card']})", flush=True)

    rows = []

    def write_outputs():
        # Logits of the probe step against the first variant's (relative L2, argmax agreement).
        ref = rows[0]["label"]
        for row in rows:
            for c in row.get("contexts", []):
                fa, fb = out / f"probe_{row['label']}_{c['context']}.npy", out / f"probe_{ref}_{c['context']}.npy"
                if fa.exists() and fb.exists():
                    x, y = np.load(fa), np.load(fb)
                    c["rel_err_vs_" + ref] = float(np.linalg.norm(x - y) / max(np.linalg.norm(y), 1e-30))
                    c["argmax_same"] = bool(int(np.argmax(x)) == int(np.argmax(y)))
                    c["finite"] = bool(np.isfinite(x).all())

        doc = {"mode": a.mode, "ceiling": ceiling, "model": a.model_dir, "tokens": a.tokens, "warmup": a.warmup, "repeats": a.repeats,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "variants": rows}
        (out / "variants.json").write_text(json.dumps(doc, indent=1))
        lines = [f"Card: {ceiling['card']}, {doc['date']}; read ceiling {ceiling['best']:.0f} GB/s ({ceiling['method']}). "
                 f"Median of {a.repeats} blocks of {a.tokens} decode steps (after {a.warmup}), wall clock, mode {a.mode}.", ""]
        lines += table_lines(rows, contexts, ref)
        more = engine_lines(rows)
        lines += [""] + more if more else []
        (out / "variants.md").write_text("\n".join(lines) + "\n")
        if len(contexts) > 1:
            plot(rows, out / "variants.png", f"gpu_opt decode variants, {ceiling['card']}, {doc['date']}, "
                                             f"read ceiling {ceiling['best']:.0f} GB/s")
        return lines

    for spec in a.variant:
        label, rest = spec.split("=", 1)
        bundle, _, envs = rest.partition(":")
        env = dict(os.environ)
        env["PYTHONPATH"] = bundle
        env["LAB_GPU_VERBOSE"] = "1"
        extra = parse_env(envs)
        env.update(extra)
        args = {"mode": a.mode, "engine": a.engine, "model": a.model_dir, "max_context": max_context, "contexts": contexts, "tokens": a.tokens,
                "warmup": a.warmup, "repeats": a.repeats, "probe": str(out / f"probe_{label}")}
        t0 = time.time()
        try:
            # cwd = the output folder: `python -c` puts the current directory first on sys.path, and a
            # bundle's own folder there would shadow the variant's PYTHONPATH.
            p = subprocess.run([sys.executable, "-c", CHILD, json.dumps(args)], env=env, capture_output=True, text=True,
                               timeout=a.timeout, cwd=str(out))
            stdout, stderr, rc = p.stdout, p.stderr, p.returncode
        except subprocess.TimeoutExpired as e:
            stdout, stderr, rc = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), \
                (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or ""), -9
        (out / f"{label}.log").write_text(stderr + "\n--- stdout ---\n" + stdout)
        res = None
        for line in stdout.splitlines():
            if line.startswith("RESULT "):
                res = json.loads(line[7:])
        row = {"label": label, "bundle": bundle, "env": extra, "rc": rc, "seconds": round(time.time() - t0, 1)}
        if res:
            for c in res["contexts"]:
                b = counting.decode_bytes(cfg, "fp16", "fp16", c["mean_kv_len"])["total"]
                c["GBps"] = b * c["median"] / 1e9
                c["pct_read"] = 100 * c["GBps"] / ceiling["best"]
            row["contexts"] = res["contexts"]
            row["variant"] = res.get("variant", "")
        else:
            row["error"] = stderr.strip().splitlines()[-3:] if stderr.strip() else "no result"
        rows.append(row)
        print(f"{label}: rc {rc}, {row['seconds']} s " + " ".join(
            f"@{c['context']} {c['median']:.1f} tok/s {pct_text(c['pct_read'])}%" for c in row.get("contexts", [])),
            flush=True)
        write_outputs()

    lines = write_outputs()
    print("\n".join(lines))
    if a.pack:
        import tarfile
        with tarfile.open(a.pack, "w:gz") as tar:
            for f in sorted(out.iterdir()):
                if f.is_file() and not f.name.startswith("probe_"):
                    tar.add(f, arcname=f.name)


if __name__ == "__main__":
    main()
