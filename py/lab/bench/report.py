"""The bench's outputs: machine info, the Markdown table, the roofline plot, README injection."""

import datetime
import hashlib
import math
import os
import platform
import re
import socket
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import lab


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit(bundle_info: Path | None = None):
    """The commit the running code was built from: the GPU bundle's BUILD_INFO where the lab package comes
    from a bundle (the checkout a bundle runs in may be at another commit: on the GPU host its git metadata
    lagged the carried tree, session 17), else the repository's HEAD and whether tracked files changed."""
    from lab.paths import repo_root

    info = bundle_info or Path(lab.__file__).resolve().parents[1] / "BUILD_INFO"
    if info.exists():
        for line in info.read_text().splitlines():
            if line.startswith("commit="):
                return line.split("=", 1)[1] + " (bundle)", None
    root = repo_root()
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
        if re.fullmatch(r"[0-9a-f]{40}", commit):
            return commit, bool(dirty)
    except (OSError, subprocess.SubprocessError):
        pass
    return None, None


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("numpy", "torch", "transformers", "safetensors", "tokenizers"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    here = Path(lab.__file__).resolve().parent
    for so in sorted(here.glob("_*.so")):  # which build of our modules ran
        out[so.name] = hashlib.sha256(so.read_bytes()).hexdigest()[:12]
    return out


def machine_info(want_gpu: bool) -> dict:
    info = {
        "host": socket.gethostname(),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "platform": platform.platform(),
        "loadavg_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,  # others' load
        "gpu": None,
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_GiB"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pass
    if want_gpu or "torch" in sys.modules:
        try:
            import torch

            if torch.cuda.is_available():
                p = torch.cuda.get_device_properties(0)
                info["gpu"] = torch.cuda.get_device_name(0)
                info["gpu_memory_GiB"] = round(p.total_memory / 2**30, 1)
                info["gpu_count"] = torch.cuda.device_count()
                info["cuda"] = torch.version.cuda
        except ImportError:
            pass
    info["git_commit"], info["git_dirty"] = _git_commit()
    info["versions"] = _versions()
    try:
        from lab.engine import engine_names

        info["engines_built"] = engine_names()
    except ImportError:
        info["engines_built"] = None
    return info


def machine_label(info: dict, device: str) -> str:
    if device == "cuda" and info.get("gpu"):
        return info["gpu"]
    return f"{info['cpu_model']} ({info['usable_cpus']} cpus)"


def _fmt(x, digits=3) -> str:
    if x is None:
        return "—"
    if x == 0:
        return "0"
    return f"{x:.{digits}g}" if abs(x) < 10 ** digits else f"{x:,.0f}"


def pct_text(x, digits=3) -> str:
    """A percentage of a ceiling with `digits` significant digits, rounded down, trailing zeros kept:
    84.96 reads 84.9, not 85 (a row never shows a target it missed), 13.96 reads 13.9, 9.713 reads 9.71."""
    if x is None:
        return "—"
    if x <= 0:
        return f"{x:.1f}"
    d = max(0, digits - (math.floor(math.log10(x)) + 1))
    return f"{math.floor(x * 10 ** d + 1e-9) / 10 ** d:.{d}f}"


def ratio_text(x) -> str:
    """A speed-up against a peer with two decimals, rounded down: 1.696 reads 1.69x, not 1.70x."""
    return f"{math.floor(x * 100 + 1e-9) / 100:.2f}x"


def _spread(s, scale=1.0) -> str:
    return f"{_fmt(s['median'] * scale)} ({_fmt(s['min'] * scale)}–{_fmt(s['max'] * scale)})"


def table_rows(results: dict, best_only=True) -> list:
    """One dict per table line: engines, then peers (for peers measured in several variants, the best)."""
    rows = []
    for r in results["runners"]:
        for p in r["ttft"]:
            if best_only and r["kind"] == "peer" and not p.get("best_of_variants", True):
                continue
            rows.append({"machine": r["machine"], "engine": r["label"], "kind": r["kind"],
                         "what": f"TTFT {p['prompt_len']} tok", "value": _spread(p["seconds"], 1e3) + " ms",
                         "gbps": "—", "tflops": _fmt(p["tflops"]["median"]),
                         "pct": pct_text(p["pct_of_roof"]) + "%" if p["pct_of_roof"] is not None else "—",
                         "ratio": _ratio(p)})
        for p in r["decode"]:
            if best_only and r["kind"] == "peer" and not p.get("best_of_variants", True):
                continue
            rows.append({"machine": r["machine"], "engine": r["label"], "kind": r["kind"],
                         "what": f"decode @ {p['context']}" + _MODE_NOTE.get(p.get("mode"), ""),
                         "value": _spread(p["tok_s"]) + " tok/s",
                         "gbps": _fmt(p["gbps"]["median"]), "tflops": "—",
                         "pct": pct_text(p["pct_of_roof"]) + "%" if p["pct_of_roof"] is not None else "—",
                         "ratio": _ratio(p)})
    return rows


# Decode rows: greedy generation is the headline ("decode @ C"); the per-step logits API is labelled.
_MODE_NOTE = {"logits": ", logits to host"}


def _ratio(p) -> str:
    if p.get("ratio_vs_best_peer") is None:
        return "—"
    return f"{ratio_text(p['ratio_vs_best_peer'])} {p['best_peer']}"


def _modes_note(st) -> str:
    modes = st.get("decode_modes")
    if not modes:  # runs before decode modes existed timed decode(token) calls
        return " (decode() per token, logits to the host)"
    return (" (" + "; ".join({"greedy": "greedy generation, argmax where the logits are",
                              "logits": "'logits to host': decode() per token, logits copied to the host"}[m]
                             for m in modes) + ")")


def _plan_note(st) -> str:
    """The header's sentence on how the TTFT was measured (runs before the plans existed: sequential)."""
    if st.get("ttft_plan") == "interleaved":
        return (f" TTFT interleaved: per prompt length every runner's warm-ups, then {st['repeats']} rounds of one "
                "prefill per runner on the same prompt, the order rotated each round (engines vs the best peer "
                "round by round below the table).")
    why = f" ({st['ttft_plan_note']})" if st.get("ttft_plan_note") else ""
    return f" TTFT sequential: each runner measured completely, one after another{why}."


def paired_lines(results: dict) -> list:
    """Markdown bullets: each engine's interleaved TTFT against the best peer at that length, per round."""
    out = []
    for r in results["runners"]:
        for p in r["ttft"]:
            q = p.get("paired_vs_best_peer")
            if not q or not q["rounds"]:
                continue
            out.append(f"- {r['label']} vs {q['peer']}, TTFT {p['prompt_len']} tok: median of the per-round ratios "
                       f"{q['ratio_median']:.2f}x ({q['ratio_min']:.2f}–{q['ratio_max']:.2f}x), faster in "
                       f"{q['wins']} of {q['rounds']} rounds")
    if not out:
        return []
    return ["", "Paired TTFT (per round: the best peer's time / the engine's, >1: the engine faster):", ""] + out


def _blocks_note(gbps, samples) -> str:
    """Block by block: decode block j's GB/s against the mean of the samples taken right after it (the
    probe's passes, len(samples) / len(gbps) of them per block, in order); empty if they do not pair up."""
    if not gbps or not samples or len(samples) % len(gbps):
        return ""
    k = len(samples) // len(gbps)
    pairs = [(g, sum(samples[j * k:(j + 1) * k]) / k) for j, g in enumerate(gbps)]
    return "; block by block, decode / the sample after it: " + ", ".join(
        f"{g:.1f} / {b:.1f} GB/s ({100 * g / b:.0f}%)" for g, b in pairs)


def adjacent_lines(results: dict) -> list:
    """Markdown bullets: each CPU decode point's GB/s against the read bandwidth sampled next to it."""
    out = []
    for r in results["runners"]:
        for p in r["decode"]:
            a = p.get("adjacent_read")
            if not a or p.get("pct_of_adjacent_read") is None:
                continue
            out.append(f"- {r['label']}, decode @ {p['context']}{_MODE_NOTE.get(p.get('mode'), '')}: "
                       f"{_fmt(p['gbps']['median'])} GB/s = {p['pct_of_adjacent_read']:.0f}% of "
                       f"{a['median']:.1f} GB/s (median of {a['n']} samples, {a['min']:.1f}–{a['max']:.1f})"
                       + _blocks_note(p["gbps"]["samples"], a["samples"]))
    if not out:
        return []
    method = (results.get("settings") or {}).get("adjacent_read_method") or "a short read-bandwidth sample"
    return ["", f"Decode against the CPU read bandwidth sampled right after each of its timed blocks ({method}); "
            "the table's % of roof is against the run's ceiling:", ""] + out


def _other_read_note(c: dict) -> str:
    """The CPU read that is not the roof (2 MiB against 4 KiB pages), for the ceilings line."""
    k4 = c.get("read_all_4k")
    if not k4:
        return ""
    if c["bandwidth_GBps"] == k4["best"] and k4["best"] != c["read_all"]["best"]:
        return f"; on 2 MiB pages {c['read_all']['best']:.1f} GB/s (the roof is the higher read)"
    return f"; on 4 KiB pages {k4['best']:.1f} GB/s"


def _static_cache_note(results) -> str:
    """How hf_compile's static cache was sized: for each point since cf0a8bf; runs before it sized one cache
    for the run's longest need, which slowed the peer at the shorter points (its attention reads every slot)."""
    if not any(r.get("name") == "hf_compile" for r in results.get("runners", [])):
        return ""
    if results["settings"].get("peer_static_cache") == "per point":
        return " hf_compile's static cache is sized for each point (the TTFT length; the context plus its decoded tokens)."
    return (" hf_compile's static cache was sized for the run's longest need, which slows it at the shorter points "
            "(its attention reads every slot of the cache): its numbers there are below its best.")


def _short_commit(commit) -> str:
    """The commit as a table names it: a full hash cut to 12 digits, whatever follows it ('+dirty', ' (bundle)')
    kept whole (cutting the whole string at 18 characters once left 'e97c8e3+dirty (bun')."""
    return re.sub(r"^([0-9a-f]{12})[0-9a-f]{28}", r"\1", str(commit))


def markdown(results: dict) -> str:
    m, mod, st = results["machine"], results["model"], results["settings"]
    head = (f"Model `{mod['name']}` ({mod['num_params'] / 1e6:,.0f}M parameters), {m['date'][:10]}, "
            f"commit {_short_commit(m.get('git_commit'))}{' (dirty)' if m.get('git_dirty') else ''}. "
            f"Median of {st['repeats']} repeats (min–max) after {st['warmup']} warm-up; decode timed over "
            f"{st['decode_tokens']} tokens per repeat{_modes_note(st)}. GB/s = bytes each decoded token must read (weights + KV "
            f"cache) x tok/s; % of roof: decode vs the measured read bandwidth, TTFT vs the measured compute "
            f"peak; vs best peer: >1 is faster than the best peer at the same point.{_plan_note(st)}"
            f"{_static_cache_note(results)}")
    la, cpus = m.get("loadavg_at_start"), m.get("usable_cpus") or 1
    if la and max(la[0], (m.get("loadavg_at_end") or [0])[0]) > 0.5 * cpus:
        head += (f" **The machine was busy** (load average {la[0]:.1f} at start, "
                 f"{(m.get('loadavg_at_end') or [float('nan')])[0]:.1f} at end, {cpus} cpus): CPU numbers are noisy.")
    lines = [head, "", "| machine | engine | what | median (min–max) | GB/s | TFLOP/s | % of roof | vs best peer |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in table_rows(results):
        lines.append(f"| {r['machine']} | {r['engine']} | {r['what']} | {r['value']} | {r['gbps']} | "
                     f"{r['tflops']} | {r['pct']} | {r['ratio']} |")
    lines += paired_lines(results) + adjacent_lines(results)
    failed = [r for r in results["runners"] if r.get("error")]
    if failed:
        lines += [""] + [f"- **{r.get('label', r['name'])} failed**: {r['error']}" for r in failed]
    ce = results.get("ceilings") or {}
    if ce:
        lines += ["", "Ceilings measured in this run:", ""]
        if ce.get("cpu"):
            c = ce["cpu"]
            lines.append(f"- {m['cpu_model']}: read {c['bandwidth_GBps']:.1f} GB/s ({c['bandwidth_method']})"
                         + (f"; one thread {c['read_1thread']['best']:.1f} GB/s" if c.get("read_1thread") else "")
                         + _other_read_note(c)
                         + f"; compute {c['compute_GFLOPs']:.0f} GFLOP/s ({c['compute_method']}; an fp32 roof: "
                         "bf16 paths such as AVX512-BF16 can pass it)"
                         + (f"; fp32 matmul {c['matmul_fp32']['best']:.0f} GFLOP/s" if c.get("matmul_fp32") else ""))
            after = ce.get("cpu_read_after")
            if after:
                first = c["read_all"]
                lines.append(f"- CPU read bandwidth again at the end of the run: best {after['best']:.1f}, median "
                             f"{after['median']:.1f} GB/s (start: best {first['best']:.1f}, median {first['median']:.1f})")
                lo, hi = sorted((first["median"], after["median"]))
                if hi > 1.15 * lo:
                    lines.append("- **The CPU's read bandwidth changed during the run** (median "
                                 f"{first['median']:.1f} -> {after['median']:.1f} GB/s): a shared machine's neighbours "
                                 "come and go; CPU decode % of roof is against the start's best and may be off by as much.")
        if ce.get("gpu"):
            g = ce["gpu"]
            lines.append(f"- {g['name']}: read {g['read']['best']:.0f} GB/s ({g['read']['method']}); copy "
                         f"{g['copy']['best']:.0f} GB/s (read + write); fp16 matmul "
                         f"{g['matmul_fp16']['best'] / 1e3:.0f} TFLOP/s")
    return "\n".join(lines) + "\n"


def inject_readme(path, name: str, content: str) -> bool:
    """Puts `content` between <!-- bench:NAME --> and <!-- /bench:NAME --> in `path` (appends the pair
    at the end if absent). Returns True if the markers were already there. Idempotent."""
    path = Path(path)
    begin, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = path.read_text() if path.exists() else ""
    block = f"{begin}\n{content.rstrip()}\n{end}"
    pat = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pat.search(text):
        new, found = pat.sub(lambda _: block, text, count=1), True
    else:
        new, found = text + ("" if text.endswith("\n") or not text else "\n") + ("\n" if text else "") + block + "\n", False
    if new != text:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(new)
        tmp.replace(path)
    return found


def roofline_plot(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(9, 6))
    ai = np.logspace(-2, 4, 200)
    ce = results.get("ceilings") or {}
    styles = {"cpu": ("-", results["machine"]["cpu_model"]), "gpu": ("--", (ce.get("gpu") or {}).get("name"))}
    for key, (ls, name) in styles.items():
        c = ce.get(key)
        if not c:
            continue
        bw, peak = c["bandwidth_GBps"], c["compute_GFLOPs"]
        ax.plot(ai, np.minimum(peak, bw * ai), color="k", ls=ls, lw=1.5,
                label=f"{name}: {bw:,.0f} GB/s, {peak:,.0f} GFLOP/s")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(results["runners"]):
        col = colors[i % len(colors)]
        face = col if r["kind"] == "engine" else "none"
        for key, marker, what, size in (("decode", "o", "decode", "context"), ("ttft", "s", "prefill", "prompt_len")):
            pts = [p for p in r[key] if p.get("best_of_variants", True)]
            if not pts:
                continue
            ax.scatter([p["ai"] for p in pts], [p["gflops"] for p in pts], marker=marker, edgecolors=col,
                       facecolors=face, label=f"{r['label']} {what}")
            for p in pts:
                ax.annotate(str(p[size]), (p["ai"], p["gflops"]), fontsize=6, color=col, xytext=(3, 3),
                            textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte moved)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title(f"Roofline: {results['model']['name']}  ({results['machine']['date'][:10]})")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
