"""The bench's plan: ceilings, then each engine, then each peer; derived numbers; files written.

Two plans for the TTFT (Options.interleave):
  sequential   each runner measured completely (TTFT, then decode), one after another, then closed;
  interleaved  (CPU only) every runner opened first and kept; the TTFT measured in paired rounds
               (timing.measure_ttft_interleaved), so a phase change of a shared machine hits every
               runner alike and the engine-vs-peer ratio can be taken per round; then each runner's
               decode as in the sequential plan.
With Options.adjacent_read, every timed decode block of a CPU runner is followed by a short read-bandwidth
sample (ceilings.read_probe), recorded with the point, against which derive() puts the decode's GB/s.
Failures: an engine that fails to open or to run, and a peer that fails to load or runs out of memory, become
that runner's error record (the others are still measured); a GPU asked for (a gpu_* engine, device "cuda")
where torch sees no CUDA GPU stops the run before any measurement (DeviceError naming the need).
"""

import gc
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lab.bench import ceilings as ceil_mod
from lab.bench import counting, peers as peers_mod, report, timing


@dataclass
class Options:
    model_dir: Path
    model_name: str = ""
    engines: list = field(default_factory=lambda: ["cpu_fp32"])
    prompt_lengths: list = field(default_factory=lambda: [128, 512, 1024])
    contexts: list = field(default_factory=lambda: [128, 512, 2048])
    decode_tokens: int = 32
    decode_modes: list = field(default_factory=lambda: ["greedy"])  # timing.DECODE_MODES, each measured
    warmup: int = 1
    repeats: int = 3
    peers: list = field(default_factory=list)
    device: str = "cpu"               # where peers run
    peer_dtypes: list = None          # default: fp32 + bf16 on CPU, fp16 on GPU
    peer_attn: list = None           # default: sdpa on CPU; sdpa and eager on GPU
    out_dir: Path = None
    ceilings: bool = True
    cpu_read_bytes: int = 2 << 30
    gpu_read_bytes: int = 4 << 30
    cpu_matmul_n: int = 2048
    gpu_matmul_n: int = 8192
    ceiling_repeats: int = 10
    fma_seconds: float = 0.2
    weight_precision: dict = field(default_factory=dict)  # engine -> precision overrides
    kv_precision: dict = field(default_factory=dict)
    seed: int = 0
    plot: bool = True
    readme: list = field(default_factory=list)       # [(path, marker)]
    interleave: bool = True          # paired TTFT rounds where every runner is on the CPU (module docstring)
    adjacent_read: bool = True       # a read-bandwidth sample after each timed CPU decode block
    adjacent_read_bytes: int = 512 << 20
    adjacent_read_repeats: int = 2


def run_bench(opts: Options, log=print) -> dict:
    from lab.engine import engine_names

    unknown = [e for e in opts.engines if e not in engine_names()]
    if unknown:
        raise ValueError(f"engines not built into lab._engine: {unknown} (built: {engine_names()})")
    bad = [p for p in opts.peers if p not in peers_mod.PEERS]
    if bad:
        raise ValueError(f"unknown peers {bad} (known: {', '.join(peers_mod.PEERS)})")
    cfg = _model_config(opts.model_dir)
    want_gpu = opts.device == "cuda" or any(e.startswith("gpu") for e in opts.engines)
    if want_gpu:  # before the GPU ceilings, the machine's GPU info and any runner
        require_cuda(opts)
    info = report.machine_info(want_gpu)
    rng = np.random.default_rng(opts.seed)
    need = timing.needed_context(opts.prompt_lengths, opts.contexts, opts.decode_tokens, opts.warmup, opts.repeats)

    ceilings = {}
    if opts.ceilings:
        ceilings["cpu"] = ceil_mod.cpu_ceilings(opts.cpu_read_bytes, opts.ceiling_repeats, opts.fma_seconds,
                                                opts.cpu_matmul_n, log=log)
        if want_gpu:
            ceilings["gpu"] = ceil_mod.gpu_ceilings(opts.gpu_read_bytes, opts.gpu_matmul_n, opts.ceiling_repeats,
                                                    log=log)

    probe, probe_method = _adjacent_probe(opts, log)
    plan, plan_note = ttft_plan(opts, cfg, log)
    kw = dict(opts=opts, cfg=cfg, need=need, rng=rng, probe=probe, log=log)
    if plan == "interleaved":
        runners, rounds = _run_interleaved(**kw)
    else:
        runners, rounds = _run_engines(**kw) + _run_peers(**kw), None

    # A shared machine's bandwidth can change while the run goes on (a neighbour starts or stops): the
    # read ceiling is measured again at the end, and the report flags a change (report.markdown).
    if opts.ceilings and ceilings.get("cpu") and not ceilings["cpu"]["read_all"].get("fallback"):
        log("ceilings: CPU read bandwidth again, after the measurements...")
        ceilings["cpu_read_after"] = ceil_mod.cpu_read_bandwidth(opts.cpu_read_bytes, max(3, opts.ceiling_repeats // 2))

    results = {
        "schema": "lab.bench/1",
        "machine": info,
        "model": {"dir": str(opts.model_dir), "name": opts.model_name or Path(opts.model_dir).name, "config": cfg,
                  "num_params": _num_params(cfg)},
        "settings": dict({k: (str(v) if isinstance(v, Path) else v) for k, v in vars(opts).items()},
                         ttft_plan=plan, ttft_plan_note=plan_note, adjacent_read_method=probe_method,
                         peer_static_cache="per point"),  # HFRunner.fit (before cf0a8bf: one for the run)
        "ceilings": ceilings,
        "runners": runners,
    }
    if rounds is not None:
        results["ttft_rounds"] = rounds
    info["loadavg_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    derive(results)
    return results


def _model_config(model_dir) -> dict:
    """counting's config of model_dir; FileNotFoundError / ValueError naming the file where it is missing or
    is no model config."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the model folder holds config.json and model.bin")
    try:
        return counting.config_from_model_dir(model_dir)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ValueError(f"{path}: not a usable model config ({type(e).__name__}: {e})") from None


def require_cuda(opts) -> None:
    """DeviceError (a RuntimeError) naming what needs the GPU where torch sees no CUDA GPU."""
    try:
        import torch

        ok, why = torch.cuda.is_available(), "torch.cuda.is_available() is False"
    except ImportError as e:
        ok, why = False, f"torch is not importable ({e})"
    if ok:
        return
    from lab.engine import DeviceError

    gpu = [e for e in opts.engines if e.startswith("gpu")]
    asked = ([f"engine{'s' if len(gpu) > 1 else ''} {', '.join(gpu)}"] if gpu else []) + (
        ["--device cuda (the peers)"] if opts.device == "cuda" else [])
    raise DeviceError(f"a CUDA GPU is needed for {' and '.join(asked)} (an NVIDIA GPU and a CUDA build of torch), "
                      f"but there is none here: {why}. Run on a GPU host, or measure the cpu_* engines with "
                      f"--device cpu.")


def ttft_plan(opts, cfg, log=print):
    """("interleaved" or "sequential", why): interleaved where asked and every runner is on the CPU and
    their weights fit in memory together (all are kept open)."""
    if not opts.interleave:
        return "sequential", "--nointerleave"
    if opts.device != "cpu" or any(e.startswith("gpu") for e in opts.engines):
        return "sequential", "GPU runners are measured one after another (large models, compilation)"
    need = _weights_bytes_together(opts, cfg)
    avail = _available_memory()
    if avail is not None and need > 0.7 * avail:
        log(f"TTFT plan: sequential, the runners' weights ({need / 2**30:.1f} GiB) do not fit in 70% of the "
            f"available memory ({avail / 2**30:.1f} GiB) together")
        return "sequential", f"the runners' weights ({need / 2**30:.1f} GiB) do not fit in memory together"
    return "interleaved", None


def _weights_bytes_together(opts, cfg) -> int:
    """Weight bytes of every engine and one peer model per dtype, all open at once."""
    n = _num_params(cfg)
    total = sum(n * counting.BYTES_PER_ELEMENT[counting.engine_precisions(e, opts.weight_precision)[0]]
                for e in opts.engines)
    if opts.peers:
        for dtype in opts.peer_dtypes or peers_mod.default_dtypes(opts.device):
            total += n * counting.BYTES_PER_ELEMENT[peers_mod.DTYPE_PRECISION.get(dtype, "fp32")]
    return total


def _available_memory():
    try:
        import psutil

        return psutil.virtual_memory().available
    except ImportError:
        return None


def _adjacent_probe(opts, log):
    """(probe or None, its method or why there is none) for the CPU decode points."""
    if not opts.adjacent_read:
        return None, None
    probe, method = ceil_mod.read_probe(opts.adjacent_read_bytes, opts.adjacent_read_repeats)
    log(f"adjacent read samples: {method}" if probe else f"adjacent read samples: none ({method})")
    return probe, method


def _record(r) -> dict:
    return {"name": r.name, "label": r.label, "kind": r.kind, "device": r.device}


def _measure_decode(r, opts, rng, vocab, probe, log) -> list:
    """Every decode mode's points; the adjacent read probe only for a runner on the CPU."""
    out = []
    for mode in opts.decode_modes:
        out += timing.measure_decode(r, opts.contexts, opts.decode_tokens, opts.warmup, opts.repeats, rng, vocab, log,
                                     mode=mode, probe=probe if r.device == "cpu" else None)
    return out


def _measure(r, opts, rng, vocab, log, probe=None) -> dict:
    rec = _record(r)
    rec["ttft"] = timing.measure_ttft(r, opts.prompt_lengths, opts.warmup, opts.repeats, rng, vocab, log)
    rec["decode"] = _measure_decode(r, opts, rng, vocab, probe, log)
    return rec


def _open_engine(name, opts, need, log):
    """(EngineRunner, None) or (None, error record)."""
    from lab.engine import open_engine

    log(f"{name}: opening on {opts.model_dir} (max context {need})")
    try:
        eng = open_engine(name, opts.model_dir, max_context=need)
    except Exception as e:  # noqa: BLE001 - one failing engine must not cost the others' numbers
        return None, _error_record(name, f"{type(e).__name__}: {e}", opts, log)
    r = timing.EngineRunner(name, eng)
    if eng.variant:
        r.label = f"{name} ({eng.variant})"
    return r, None


def _error_record(name, error, opts, log) -> dict:
    log(f"ERROR {name}: {error}")
    wp, kvp = counting.engine_precisions(name, opts.weight_precision, opts.kv_precision)
    return {"name": name, "label": name, "kind": "engine", "error": error,
            "device": "cuda" if name.startswith("gpu") else "cpu", "ttft": [], "decode": [],
            "weight_precision": wp, "kv_precision": kvp}


def _engine_fields(rec, r, opts, cfg, log) -> dict:
    """An engine's record completed: precisions counted, its stats and variant, the precision check."""
    eng = r.engine
    wp, kvp = counting.engine_precisions(r.name, opts.weight_precision, opts.kv_precision)
    rec.update(weight_precision=wp, kv_precision=kvp, engine_stats=dict(eng.stats()), variant=eng.variant,
               stats_implied=counting.precision_from_stats(cfg, eng.stats(), eng.max_context))
    _warn_precision(rec, wp, kvp, log)
    return rec


def _peer_error_record(name, dtype, attn, error, opts, log) -> dict:
    """A peer variant that failed to load or ran out of memory: its error, no points."""
    prec = peers_mod.DTYPE_PRECISION.get(dtype, "fp32")
    label = f"{name} ({prec}, {attn})"
    log(f"ERROR {label}: {error}")
    return {"name": name, "label": label, "kind": "peer", "error": error, "device": opts.device, "ttft": [],
            "decode": [], "weight_precision": prec, "kv_precision": prec, "dtype": dtype, "attn_implementation": attn}


# What a peer's measurement may meet and the run survive as that peer's error: out of memory (MemoryError,
# torch.cuda.OutOfMemoryError - named, so torch is not imported here). Anything else stops the bench.
_PEER_MEMORY_ERRORS = ("MemoryError", "OutOfMemoryError")


def _is_memory_error(e) -> bool:
    return isinstance(e, MemoryError) or type(e).__name__ in _PEER_MEMORY_ERRORS


def _peer_fields(rec, r) -> dict:
    import torch

    prec = peers_mod.DTYPE_PRECISION.get(r.dtype, "fp32")
    rec.update(weight_precision=prec, kv_precision=prec, dtype=r.dtype, compile_mode=r.compile_mode,
               attn_implementation=r.attn, torch_threads=torch.get_num_threads())
    return rec


def _run_engines(opts, cfg, need, rng, probe, log) -> list:
    """Sequential plan: each engine opened, measured completely and closed, in turn."""
    runners = []
    for name in opts.engines:
        r, err = _open_engine(name, opts, need, log)
        if err:
            runners.append(err)
            continue
        try:
            rec = _measure(r, opts, rng, cfg["vocab_size"], log, probe)
        except Exception as e:  # noqa: BLE001 - one failing engine must not cost the others' numbers
            runners.append(_error_record(name, f"{type(e).__name__}: {e}", opts, log))
        else:
            runners.append(_engine_fields(rec, r, opts, cfg, log))
        r.close()
        del r
        gc.collect()
    return runners


def _peer_variants(opts):
    """(dtype, attention implementations, [(peer name, attn)]) per peer model to load, in the bench's order."""
    attns = opts.peer_attn or peers_mod.default_attn(opts.device)
    for dtype in opts.peer_dtypes or peers_mod.default_dtypes(opts.device):
        yield dtype, attns, [(name, attn) for attn in attns for name in opts.peers
                             if not (name == "hf_compile" and attn != attns[0])]


def _run_peers(opts, cfg, need, rng, probe, log) -> list:
    """Sequential plan: per dtype one model loaded; each peer variant measured completely, in turn."""
    if not opts.peers:
        return []
    import torch

    runners = []
    for dtype, attns, variants in _peer_variants(opts):
        log(f"peers: loading transformers' LlamaForCausalLM ({dtype}, {opts.device})")
        try:
            model = peers_mod.load_peer_model(opts.model_dir, dtype, opts.device, attns[0])
        except Exception as e:  # noqa: BLE001 - a peer that cannot load must not cost the others' numbers
            err = f"{type(e).__name__}: {e}"
            runners += [_peer_error_record(name, dtype, attn, err, opts, log) for name, attn in variants]
            model = None
            variants = []
        for name, attn in variants:
            r = None
            try:
                model.set_attn_implementation(attn)
                r = peers_mod.HFRunner(name, model, dtype, opts.device, need, attn=attn)
                runners.append(_peer_fields(_measure(r, opts, rng, cfg["vocab_size"], log, probe), r))
            except Exception as e:  # noqa: BLE001 - out of memory is this peer's error; anything else stops
                if not _is_memory_error(e):
                    raise
                runners.append(_peer_error_record(name, dtype, attn, f"{type(e).__name__}: {e}", opts, log))
            if r is not None:
                r.close()
            del r
            if opts.device == "cuda":
                torch._dynamo.reset()  # drop compiled graphs (and their CUDA graph pools)
        del model
        gc.collect()
        if opts.device == "cuda":
            torch.cuda.empty_cache()
    return runners


def _run_interleaved(opts, cfg, need, rng, probe, log):
    """Interleaved plan (CPU): every engine and peer variant opened and kept, the TTFT in paired rounds,
    then each runner's decode in turn. Returns (records in the sequential plan's order, the rounds'
    orders by label)."""
    slots, live = [], []  # slots: a record (a failed engine) or an open runner, in order
    for name in opts.engines:
        r, err = _open_engine(name, opts, need, log)
        slots.append(err or r)
    models = []
    if opts.peers:
        for dtype, attns, variants in _peer_variants(opts):
            log(f"peers: loading transformers' LlamaForCausalLM ({dtype}, {opts.device})")
            try:
                models.append(peers_mod.load_peer_model(opts.model_dir, dtype, opts.device, attns[0]))
                slots += [peers_mod.HFRunner(name, models[-1], dtype, opts.device, need, attn=attn)
                          for name, attn in variants]
            except Exception as e:  # noqa: BLE001 - a peer that cannot load must not cost the others' numbers
                err = f"{type(e).__name__}: {e}"
                slots += [_peer_error_record(name, dtype, attn, err, opts, log) for name, attn in variants]
    live = [x for x in slots if not isinstance(x, dict)]
    log(f"TTFT interleaved over {len(live)} runners: {', '.join(r.label for r in live)}")
    points, orders, errors = timing.measure_ttft_interleaved(live, opts.prompt_lengths, opts.warmup, opts.repeats,
                                                             rng, cfg["vocab_size"], log)
    rounds = [{"prompt_len": o["prompt_len"], "rounds": [[live[i].label for i in rd] for rd in o["rounds"]]}
              for o in orders]
    ttft = {id(r): (points[i], errors.get(i)) for i, r in enumerate(live)}
    runners = []
    for x in slots:
        if isinstance(x, dict):
            runners.append(x)
            continue
        pts, err = ttft[id(x)]
        runners.append(_decode_after_interleaved(x, pts, err, opts, cfg, rng, probe, log))
        x.close()
    del slots, live, models
    gc.collect()
    return runners, rounds


def _decode_after_interleaved(r, ttft_points, error, opts, cfg, rng, probe, log) -> dict:
    """One runner's record in the interleaved plan: its TTFT points from the rounds, its decode now. An
    engine that failed or a peer out of memory becomes an error record; a peer that failed otherwise stops
    the bench, as in the sequential plan."""
    decode = []
    if error is None:
        try:
            decode = _measure_decode(r, opts, rng, cfg["vocab_size"], probe, log)
        except Exception as e:  # noqa: BLE001 - one failing engine must not cost the others' numbers
            error = f"{type(e).__name__}: {e}"
    if error is not None:
        if r.kind == "peer":
            if error.split(":", 1)[0] not in _PEER_MEMORY_ERRORS:  # errors come as "Type: message"
                raise RuntimeError(f"{r.label}: {error}")
            return _peer_error_record(r.name, r.dtype, r.attn, error, opts, log)
        return _error_record(r.name, error, opts, log)
    rec = dict(_record(r), ttft=ttft_points, decode=decode)
    return _engine_fields(rec, r, opts, cfg, log) if r.kind == "engine" else _peer_fields(rec, r)


def _warn_precision(rec, wp, kvp, log):
    imp = rec["stats_implied"]
    for what, p, got in (("weight", wp, imp["weight_bytes_per_element"]), ("KV", kvp, imp["kv_bytes_per_element"])):
        want = counting.BYTES_PER_ELEMENT[p]
        if got is not None and abs(got - want) > 0.15 * want:
            log(f"WARNING {rec['name']}: counting {what} elements as {p} ({want} B) but stats() implies "
                f"{got:.2f} B per element; pass --{what.lower()}_precision {rec['name']}=... if the table is wrong")


def _point_key(p):
    """Which peer point a point is compared with: same prompt length, or same context and decode mode."""
    return p["prompt_len"] if "prompt_len" in p else (p["context"], p.get("mode", "logits"))


def _num_params(cfg) -> int:
    p = counting.param_counts(cfg)
    return p["layers"] + p["final_norm"] + p["embedding_table"] + (0 if cfg["tie_word_embeddings"] else p["lm_head"])


def _scaled(summary, factor) -> dict:
    return timing.summarize([x * factor for x in summary["samples"]])


def derive(results: dict) -> None:
    """Bytes, FLOPs, GB/s, TFLOP/s, % of roof, best-of-dtypes and ratios vs the best peer, in place; where
    the TTFT was interleaved, an engine's per-round ratios against the best peer ("paired_vs_best_peer");
    where decode had adjacent read samples, its GB/s as % of their median ("pct_of_adjacent_read")."""
    cfg, ce = results["model"]["config"], results.get("ceilings") or {}
    for r in results["runners"]:
        r["machine"] = report.machine_label(results["machine"], r["device"])
        roof = ce.get("gpu" if r["device"] == "cuda" else "cpu")
        for p in r["ttft"]:
            n = p["prompt_len"]
            p["flops"] = counting.prefill_flops(cfg, n)
            p["bytes"] = counting.prefill_bytes(cfg, r["weight_precision"], r["kv_precision"], n)
            p["ms"] = _scaled(p["seconds"], 1e3)
            p["tok_s"] = timing.summarize([n / s for s in p["seconds"]["samples"]])
            p["tflops"] = timing.summarize([p["flops"] / s / 1e12 for s in p["seconds"]["samples"]])
            p["gflops"] = p["tflops"]["median"] * 1e3
            p["ai"] = p["flops"] / p["bytes"]
            p["pct_of_roof"] = 100 * p["gflops"] / roof["compute_GFLOPs"] if roof else None
        for p in r["decode"]:
            b = counting.decode_bytes(cfg, r["weight_precision"], r["kv_precision"], p["mean_kv_len"])
            p["bytes_per_token"] = b
            p["flops_per_token"] = counting.decode_flops(cfg, p["mean_kv_len"])
            p["gbps"] = _scaled(p["tok_s"], b["total"] / 1e9)
            p["ms_per_token"] = timing.summarize([1e3 / x for x in p["tok_s"]["samples"]])
            p["gflops"] = p["flops_per_token"] * p["tok_s"]["median"] / 1e9
            p["ai"] = p["flops_per_token"] / b["total"]
            p["pct_of_roof"] = 100 * p["gbps"]["median"] / roof["bandwidth_GBps"] if roof else None

    # Peers measured in several variants (dtypes, attention): the best per point is the one reported
    # (all stay in the JSON).
    best = {}  # (kind of point, size) -> (score, runner label, point)
    for r in results["runners"]:
        if r["kind"] != "peer":
            continue
        for key, pts, score in (("ttft", r["ttft"], lambda p: -p["seconds"]["median"]),
                                ("decode", r["decode"], lambda p: p["tok_s"]["median"])):
            for p in pts:
                size = _point_key(p)
                grp = (r["name"], key, size)
                p["best_of_variants"] = False
                if grp not in best or score(p) > best[grp][0]:
                    best[grp] = (score(p), r["label"], p)
    for _, _, p in best.values():
        p["best_of_variants"] = True
    top = {}
    for (_, key, size), (score, label, p) in best.items():
        if (key, size) not in top or score > top[(key, size)][0]:
            top[(key, size)] = (score, label, p)
    for r in results["runners"]:
        for key, pts in (("ttft", r["ttft"]), ("decode", r["decode"])):
            for p in pts:
                t = top.get((key, _point_key(p)))
                if t is None:
                    p["ratio_vs_best_peer"], p["best_peer"] = None, None
                    continue
                peer = t[2]
                p["best_peer"] = t[1]
                p["ratio_vs_best_peer"] = (peer["seconds"]["median"] / p["seconds"]["median"] if key == "ttft"
                                           else p["tok_s"]["median"] / peer["tok_s"]["median"])
                if key == "ttft" and r["kind"] == "engine":
                    p["paired_vs_best_peer"] = _paired(p, peer, t[1])
    for r in results["runners"]:
        for p in r["decode"]:
            adj = (p.get("adjacent_read") or {}).get("median")
            p["pct_of_adjacent_read"] = 100 * p["gbps"]["median"] / adj if adj else None


def _paired(p, peer, peer_label):
    """An engine's TTFT point against the best peer's, round by round (timing.pair_ratios), where both
    were measured in the same interleaved rounds; else None."""
    if not (p.get("interleaved") and peer.get("interleaved")):
        return None
    return dict(timing.pair_ratios(p["seconds"]["samples"], peer["seconds"]["samples"]), peer=peer_label)


def write_outputs(results: dict, out_dir: Path, plot=True, readme=(), log=print) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    md = report.markdown(results)
    results["table_markdown"] = md
    files = {"json": out_dir / "bench.json", "markdown": out_dir / "bench.md"}
    files["json"].write_text(json.dumps(results, indent=1, default=str) + "\n")
    files["markdown"].write_text(md)
    if plot:
        files["plot"] = out_dir / "roofline.png"
        report.roofline_plot(results, files["plot"])
    for path, name in readme:
        found = report.inject_readme(path, name, md)
        log(f"README {path}: {'replaced' if found else 'appended'} the table between the bench:{name} markers")
    for k, v in files.items():
        log(f"wrote {k}: {v}")
    return files
