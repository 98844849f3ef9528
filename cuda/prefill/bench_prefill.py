"""Full prefill kernel-lab run on a GPU host: ceiling, peers, every kernel version; JSON + Markdown out.

    python3 cuda/prefill/bench_prefill.py --bench path/to/prefill_bench --out DIR [--m 128,1024,8192]
                                          [--attn_n 1024,8192,32768] [--reps 20]

1. The card's measured fp16 tensor-core rate (the ceiling): torch.matmul of 8192^3 fp16 random
   matrices (cuBLAS), median of 20 timed runs, measured before and after the kernels.
2. Peers on the same shapes: torch.matmul(x, w.t()) (cuBLAS) for each GEMM and
   scaled_dot_product_attention(is_causal=True, enable_gqa=True) for attention.
3. prefill_bench, one process per GEMM version and one for attention (a crash in one version cannot
   take the others' results with it), each checking correctness before it times.
Writes DIR/prefill_results.json and DIR/prefill_results.md; prints the Markdown table last.
`bench_prefill.py --markdown DIR/prefill_results.json` re-renders the table from a saved run.
"""

import argparse
import datetime
import json
import subprocess
import sys
import time
from pathlib import Path


def ints(s):
    return [int(x) for x in s.split(",") if x]


def time_cuda(torch, fn, warmup=5, reps=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for a, b in ev:
        a.record()
        fn()
        b.record()
    torch.cuda.synchronize()
    ms = sorted(a.elapsed_time(b) for a, b in ev)
    mid = len(ms) // 2
    med = ms[mid] if len(ms) % 2 else 0.5 * (ms[mid - 1] + ms[mid])
    return med, ms[0], ms[-1]


def ceiling(torch):
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.float16)
    b = torch.randn(n, n, device="cuda", dtype=torch.float16)
    med, lo, hi = time_cuda(torch, lambda: torch.matmul(a, b))
    del a, b
    return {"tflops": 2 * n**3 / (med * 1e-3) / 1e12, "ms_median": med, "ms_min": lo, "ms_max": hi}


SHAPES = [("qkv", 6144, 4096, "none"), ("o", 4096, 4096, "residual"), ("gate_up", 28672, 4096, "swiglu"),
          ("down", 4096, 14336, "residual")]


def torch_peers(torch, ms, attn_ns):
    out = []
    for m in ms:
        for name, n, k, epi in SHAPES:
            x = torch.randn(m, k, device="cuda", dtype=torch.float16)
            w = (torch.randn(n, k, device="cuda") / k**0.5).half()
            med, lo, hi = time_cuda(torch, lambda: torch.matmul(x, w.t()))
            out.append({"kind": "gemm", "name": name, "version": "torch.matmul (cuBLAS)", "M": m, "N": n, "K": k,
                        "epilogue": "none (product only)", "ms_median": med, "ms_min": lo, "ms_max": hi,
                        "tflops": 2 * m * n * k / (med * 1e-3) / 1e12, "ok": None})
            del x, w
    sdpa = torch.nn.functional.scaled_dot_product_attention
    for n in attn_ns:
        h, kv, d = 32, 8, 128
        q = torch.randn(1, h, n, d, device="cuda", dtype=torch.float16)
        k = torch.randn(1, kv, n, d, device="cuda", dtype=torch.float16)
        v = torch.randn(1, kv, n, d, device="cuda", dtype=torch.float16)
        try:
            med, lo, hi = time_cuda(torch, lambda: sdpa(q, k, v, is_causal=True, enable_gqa=True), warmup=3)
            flops = 4.0 * d * h * 0.5 * n * (n + 1)
            out.append({"kind": "attn", "version": "torch sdpa (is_causal, enable_gqa)", "n": n, "pos": 0, "heads": h,
                        "kv_heads": kv, "head_dim": d, "ms_median": med, "ms_min": lo, "ms_max": hi,
                        "tflops": flops / (med * 1e-3) / 1e12, "ok": None})
        except Exception as e:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
            out.append({"kind": "attn", "version": "torch sdpa", "n": n, "error": str(e)})
        del q, k, v
    torch.cuda.empty_cache()
    return out


def run_bench(binary, args, log, timeout):
    cmd = [binary] + args
    print("$", " ".join(cmd), flush=True)
    t0 = time.time()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        rc, stdout, stderr = p.returncode, p.stdout, p.stderr
    except subprocess.TimeoutExpired as e:
        rc, stdout, stderr = "timeout", (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), (
            (e.stderr or b"").decode() if isinstance(e.stderr, bytes) else (e.stderr or ""))
    log.write(f"$ {' '.join(cmd)}  (rc={rc}, {time.time() - t0:.1f} s)\n{stdout}\n{stderr}\n")
    sys.stderr.write(stderr)
    results, device = [], None
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            results.append(json.loads(line[7:]))
        elif line.startswith("DEVICE "):
            device = json.loads(line[7:])
    return rc, results, device


def fmt(x, nd=3):
    return "" if x is None else f"{x:.{nd}f}"


def markdown(meta, rows, ceil_tf):
    lines = [f"Card: {meta['gpu']} ({meta['date']}); ceiling = torch.matmul 8192^3 fp16 "
             f"{meta['ceiling_before']['tflops']:.0f} TFLOP/s before, {meta['ceiling_after']['tflops']:.0f} after "
             f"(the percentages use the larger). Median of {meta['reps']} runs (min-max).", ""]
    lines += ["| GEMM | M | N | K | epilogue | version | ok (rel err) | ms median (min-max) | TFLOP/s | % ceiling |",
              "| --- | ---: | ---: | ---: | --- | --- | --- | --- | ---: | ---: |"]
    g = [r for r in rows if r.get("kind") == "gemm" and "skipped" not in r]
    g.sort(key=lambda r: (r["M"], [s[0] for s in SHAPES].index(r["name"]), r["version"]))
    for r in g:
        ok = "" if r.get("ok") is None else ("ok" if r["ok"] else "FAIL") + f" ({r['rel_err']:.1e})"
        t = r.get("tflops") or 0
        lines.append(f"| {r['name']} | {r['M']} | {r['N']} | {r['K']} | {r['epilogue']} | {r['version']} | {ok} | "
                     f"{fmt(r.get('ms_median'))} ({fmt(r.get('ms_min'))}-{fmt(r.get('ms_max'))}) | {t:.1f} | "
                     f"{100 * t / ceil_tf:.1f} |")
    lines += ["", "| attention | n | pos | heads | version | ok (rel err) | ms median (min-max) | TFLOP/s (causal) | % ceiling |",
              "| --- | ---: | ---: | --- | --- | --- | --- | ---: | ---: |"]
    a = [r for r in rows if r.get("kind") == "attn" and "error" not in r]
    a.sort(key=lambda r: (r["n"], r["pos"], r["version"]))
    for r in a:
        ok = "" if r.get("ok") is None else ("ok" if r["ok"] else "FAIL") + f" ({r['rel_err']:.1e})"
        t = r.get("tflops") or 0
        timing = (f"{fmt(r.get('ms_median'))} ({fmt(r.get('ms_min'))}-{fmt(r.get('ms_max'))}) | {t:.1f} | "
                  f"{100 * t / ceil_tf:.1f}") if r.get("ms_median") else "correctness only | | "
        lines.append(f"| causal GQA | {r['n']} | {r['pos']} | {r['heads']}/{r['kv_heads']} x {r['head_dim']} | "
                     f"{r['version']} | {ok} | {timing} |")
    lines.append("")
    for n in sorted({r["n"] for r in a}):
        u = [r for r in a if r["n"] == n and r["version"] == "unfused" and r.get("ms_median")]
        for f in [r for r in a if r["n"] == n and r["version"].startswith("flash") and r.get("ms_median")]:
            if u:
                lines.append(f"- n = {n}: {f['version']} is {u[0]['ms_median'] / f['ms_median']:.2f}x faster than unfused")
    skipped = [r for r in rows if "skipped" in r]
    if skipped:
        lines += ["", "Skipped: " + "; ".join(f"{r['name']} M={r['M']} {r['version']}: {r['skipped']}" for r in skipped)]
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--markdown":  # re-render DIR/prefill_results.json (no GPU needed)
        data = json.loads(Path(sys.argv[2]).read_text())
        meta = data["meta"]
        print(markdown(meta, data["results"], max(meta["ceiling_before"]["tflops"], meta["ceiling_after"]["tflops"])))
        return 0
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bench", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--m", default="128,1024,8192")
    ap.add_argument("--attn_n", default="1024,8192,32768")
    ap.add_argument("--versions", default="1,2,3,4")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--timeout", type=int, default=120, help="seconds per bench process")
    args = ap.parse_args()
    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gpu = torch.cuda.get_device_name(0)
    meta = {"gpu": gpu, "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d"),
            "torch": torch.__version__, "reps": args.reps}
    meta["ceiling_before"] = ceiling(torch)
    print(f"ceiling before: {meta['ceiling_before']['tflops']:.1f} TFLOP/s", flush=True)
    rows = torch_peers(torch, ints(args.m), ints(args.attn_n))
    torch.cuda.empty_cache()
    common = ["--m", args.m, "--attn_n", args.attn_n, "--reps", str(args.reps)]
    status = {}
    with open(out / "prefill_bench.log", "w") as log:
        for v in ints(args.versions):
            rc, res, dev = run_bench(args.bench, ["--only", "gemm", "--versions", str(v)] + common, log, args.timeout)
            status[f"gemm_v{v}"] = rc
            rows += res
            meta["device"] = dev or meta.get("device")
        rc, res, dev = run_bench(args.bench, ["--only", "attn"] + common, log, args.timeout)
        status["attn"] = rc
        rows += res
    meta["ceiling_after"] = ceiling(torch)
    meta["exit_status"] = status
    ceil_tf = max(meta["ceiling_before"]["tflops"], meta["ceiling_after"]["tflops"])
    (out / "prefill_results.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1))
    md = markdown(meta, rows, ceil_tf)
    (out / "prefill_results.md").write_text(md)
    print(md)
    print("exit status per process:", status)
    bad = [r for r in rows if r.get("ok") is False]
    return 1 if bad or any(s != 0 for s in status.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
