"""The machine's ceilings, measured in the same run as the numbers they judge.

CPU  read bandwidth: lab._membw (cc/bench): OpenMP, all cores, each summing its slice of a float array
     with 8 vector accumulators (AVX-512/AVX2 chosen at run time), the array on 2 MiB pages (THP; the
     share the kernel granted is in the method); also one thread, and all cores on 4 KiB pages (what a
     stream pays in page-table walks: cpu_opt keeps its weights on 2 MiB pages for it). Without the module
     (e.g. a bundle that lacks it): numpy's sgemv over the array, which the output says.
     peak fp32 FLOP/s: lab._membw's FMA kernel (12 independent FMA chains per thread, best of the
     ISAs the CPU has); also an fp32 matmul through torch (or numpy) for the attainable GEMM rate.
GPU  read bandwidth: the higher of two reads of 4 GiB: the lab's read kernels (lab._engine.gpu_read_bandwidth,
     cuda/common/read_ceiling.h: the decode kernels' 16-byte streaming load, best of 4 launch shapes, and
     on sm_90+ bulk copies (TMA) into shared memory, contiguous or in 1 MB slices, since session 16: 4,607
     against 4,231 GB/s for the load on an H200) and torch's x.sum() over an fp16 tensor; both are kept in
     the JSON. copy: y.copy_(x) counting bytes read + written; fp16 tensor-core rate: torch.matmul of
     two 8192 x 8192 fp16 matrices.
     All timed with CUDA events after warm-up, on random data.
Each ceiling is reported as best (the roof) and median over its repeats.
"""

import time

import numpy as np

from lab.bench.timing import summarize


def _membw():
    try:
        from lab import _membw

        return _membw
    except ImportError:
        return None


def _ceiling(samples, unit, method, **extra):
    s = summarize(samples)
    return {"best": s["max"], "median": s["median"], "min": s["min"], "samples": s["samples"], "unit": unit,
            "method": method, **extra}


def _pages_note(pages, share):
    if pages == "small":
        return "4 KiB pages"
    return "2 MiB pages (THP: " + ("share unknown" if share < 0 else f"{share:.0%} granted") + ")"


def cpu_read_bandwidth(n_bytes=2 << 30, repeats=10, threads=0, pages="huge") -> dict:
    m = _membw()
    if m is not None:
        nt = threads or m.max_threads()
        g, share = m.read_bandwidth_pages(int(n_bytes), int(repeats), int(threads), pages=pages)
        isa = m.simd_levels()[0]
        return _ceiling(g, "GB/s", f"lab._membw OpenMP sum of a {n_bytes / 2**30:.2f} GiB float array on "
                        f"{_pages_note(pages, share)}, {nt} thread(s), {isa}, 256 KiB chunks guided",
                        threads=nt, bytes=int(n_bytes),
                        fallback=False, pages=pages)
    # Fallback: numpy sgemv of [n/1024, 1024] by ones(1024): the matrix read once, BLAS threads.
    n = int(n_bytes) // 4 // 1024
    a = np.random.default_rng(0).standard_normal((n, 1024), dtype=np.float32)
    v = np.ones(1024, dtype=np.float32)
    a @ v
    g = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ v
        g.append(a.nbytes / (time.perf_counter() - t0) / 1e9)
    return _ceiling(g, "GB/s", f"FALLBACK numpy sgemv over a {a.nbytes / 2**30:.2f} GiB float array "
                    "(lab._membw not found: this reads below the machine's all-cores bandwidth)",
                    threads=None, bytes=int(a.nbytes), fallback=True)


def read_probe(n_bytes=512 << 20, repeats=2):
    """A short CPU read-bandwidth sample to take next to a measurement (after each timed decode block):
    cpu_read_bandwidth's all-threads lab._membw kernel on a smaller array. Returns (probe, method):
    probe() -> the GB/s of its `repeats` passes (after one warm-up pass; the array is allocated and
    first-touched on every call), method says what it is. (None, reason) without lab._membw: the numpy
    fallback is slow and reads below the machine's bandwidth, no measure of its phase."""
    m = _membw()
    if m is None:
        return None, "lab._membw not found"
    method = (f"lab._membw OpenMP sum of a {n_bytes / 2**20:.0f} MiB float array, {m.max_threads()} thread(s), "
              f"{m.simd_levels()[0]}, {repeats} pass(es) after a warm-up pass")
    return (lambda: cpu_read_bandwidth(n_bytes, repeats)["samples"]), method


def cpu_fma_peak(seconds=0.2, threads=0, repeats=3) -> dict:
    m = _membw()
    if m is None:
        return None
    best = None
    for isa in [s for s in m.simd_levels() if s != "scalar"]:
        g = [m.fma_peak(isa, seconds, int(threads)) for _ in range(repeats)]
        c = _ceiling(g, "GFLOP/s", f"lab._membw fp32 FMA chains, {isa}, {threads or m.max_threads()} thread(s)",
                     isa=isa, threads=threads or m.max_threads())
        if best is None or c["best"] > best["best"]:
            best = c
    return best


def cpu_matmul_rate(n=2048, repeats=5) -> dict:
    """fp32 GEMM rate through torch (numpy if torch is missing)."""
    try:
        import torch

        a, b = torch.randn(n, n), torch.randn(n, n)
        mm, what = (lambda: torch.matmul(a, b)), f"torch.matmul fp32 {n}^3, {torch.get_num_threads()} threads"
    except ImportError:
        rng = np.random.default_rng(0)
        a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
        mm, what = (lambda: a @ b), f"numpy matmul fp32 {n}^3"
    mm()
    g = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        mm()
        g.append(2 * n**3 / (time.perf_counter() - t0) / 1e9)
    return _ceiling(g, "GFLOP/s", what)


def cpu_ceilings(read_bytes=2 << 30, repeats=10, fma_seconds=0.2, matmul_n=2048, log=print) -> dict:
    log("ceilings: CPU read bandwidth (all threads)...")
    out = {"read_all": cpu_read_bandwidth(read_bytes, repeats)}
    if not out["read_all"]["fallback"]:
        log("ceilings: CPU read bandwidth (one thread)...")
        out["read_1thread"] = cpu_read_bandwidth(read_bytes, max(3, repeats // 3), threads=1)
        log("ceilings: CPU read bandwidth on 4 KiB pages (all threads)...")
        out["read_all_4k"] = cpu_read_bandwidth(read_bytes, max(3, repeats // 2), pages="small")
        log("ceilings: CPU FMA peak...")
        out["fma_all"] = cpu_fma_peak(fma_seconds)
        out["fma_1thread"] = cpu_fma_peak(fma_seconds, threads=1)
    log("ceilings: CPU fp32 matmul...")
    out["matmul_fp32"] = cpu_matmul_rate(matmul_n)
    # The roof is the best read of the run: on 2 MiB pages where they help (a VM's nested page walks), but
    # a host whose bandwidth moves between the two reads must not be judged against the lower one.
    roof = max((c for c in (out["read_all"], out.get("read_all_4k")) if c), key=lambda c: c["best"])
    out["bandwidth_GBps"] = roof["best"]
    compute = out.get("fma_all") or out["matmul_fp32"]
    out["compute_GFLOPs"] = compute["best"]
    out["compute_method"] = compute["method"]
    out["bandwidth_method"] = roof["method"]
    for k in ("read_all", "read_1thread", "read_all_4k", "fma_all", "fma_1thread", "matmul_fp32"):
        c = out.get(k)
        if c:
            log(f"ceilings: {k}: best {c['best']:.1f} {c['unit']}, median {c['median']:.1f} ({c['method']})")
    return out


def _cuda_time(fn, warmup, repeats):
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        times.append(e0.elapsed_time(e1) / 1e3)
    return times


def gpu_read_ceiling(read_bytes=4 << 30, repeats=10, log=print) -> tuple:
    """The GPU read roof: (read, read_lab, read_torch), read the higher of the two (its method names the
    other); read_lab is None for a module without the lab's read kernel."""
    import torch

    x = torch.randn(int(read_bytes) // 2, dtype=torch.float16, device="cuda")
    nb = x.numel() * 2
    t = _cuda_time(lambda: x.sum(), 3, repeats)
    read_torch = _ceiling([nb / s / 1e9 for s in t], "GB/s", f"torch x.sum() over {nb / 2**30:.1f} GiB fp16")
    del x
    torch.cuda.empty_cache()
    read_lab = None
    try:
        from lab import _engine

        g, how = _engine.gpu_read_bandwidth(int(read_bytes), int(repeats))
        read_lab = _ceiling(g, "GB/s", how)
    except (ImportError, AttributeError) as e:  # a module without the kernel: torch's read alone
        log(f"ceilings: no lab read kernel ({e}); the GPU read ceiling is torch's alone")
    read = max([c for c in (read_lab, read_torch) if c], key=lambda c: c["best"])
    other = read_torch if read is read_lab else read_lab
    read = dict(read, method=read["method"] + (f"; the other read: {other['best']:.0f} GB/s, {other['method']}"
                                               if other else ""))
    return read, read_lab, read_torch


def gpu_ceilings(read_bytes=4 << 30, matmul_n=8192, repeats=10, log=print) -> dict:
    import torch

    dev = torch.device("cuda")
    name = torch.cuda.get_device_name(dev)
    log(f"ceilings: GPU ({name}) read, copy, fp16 matmul...")
    read, read_lab, read_torch = gpu_read_ceiling(read_bytes, repeats, log)
    x = torch.randn(int(read_bytes) // 2, dtype=torch.float16, device=dev)
    nb = x.numel() * 2
    y = torch.empty_like(x)
    t = _cuda_time(lambda: y.copy_(x), 3, repeats)
    copy = _ceiling([2 * nb / s / 1e9 for s in t], "GB/s",
                    f"torch y.copy_(x) of {nb / 2**30:.1f} GiB fp16, bytes read + written")
    del x, y
    torch.cuda.empty_cache()
    a = torch.randn(matmul_n, matmul_n, dtype=torch.float16, device=dev)
    b = torch.randn(matmul_n, matmul_n, dtype=torch.float16, device=dev)
    t = _cuda_time(lambda: torch.matmul(a, b), 5, repeats)
    mm = _ceiling([2 * matmul_n**3 / s / 1e9 for s in t], "GFLOP/s", f"torch.matmul fp16 {matmul_n}^3")
    del a, b
    torch.cuda.empty_cache()
    out = {"name": name, "read": read, "read_lab": read_lab, "read_torch": read_torch, "copy": copy, "matmul_fp16": mm, "bandwidth_GBps": read["best"],
           "bandwidth_method": read["method"], "compute_GFLOPs": mm["best"], "compute_method": mm["method"]}
    for k in ("read", "copy", "matmul_fp16"):
        c = out[k]
        log(f"ceilings: GPU {k}: best {c['best']:.0f} {c['unit']}, median {c['median']:.0f} ({c['method']})")
    return out
