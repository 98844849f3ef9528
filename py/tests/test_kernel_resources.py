"""The decode matvec tiles' resource contract, read from ptxas's report of the build (tools/lab.bzl writes
one for every CUDA source, the `ptxas` output group; //cuda:gpu_opt_ptxas is gpu_opt's): the r2 tiles fit 768
threads an SM, so that qkv's 384 (w8) or 768 (w4) blocks at hidden 4096 run in one wave, and the register
tiles of the bench's row spill nothing. Session 22's norm fold took qkv w8.u1.r2 from 80 to 82 registers,
two blocks an SM instead of three, and the step 2.2% slower (cuda/gpu_opt/README.md, "Session 22"); only a
pinned control run showed it. Also the short attention layout's two kernels (gpu_opt_knobs.cu's report): two
blocks an SM without spills. A CPU test: it needs the build's report, not a GPU, so it skips only outside
Bazel (the GPU bundle's copy of the suite has no build outputs)."""

import os
import re
from pathlib import Path

import pytest

REPORT = Path(os.environ.get("TEST_SRCDIR", "/nonexistent")) / "llm_inference_lab/cuda/_cuda_objs/gpu_opt_objs/gpu_opt_tune.ptxas.txt"
REGS_PER_SM = 65536  # every sm_80 / sm_90 SM
EPI = {0: "lm_head (store)", 1: "residual", 2: "gate_up", 3: "qkv"}  # kernels_matvec.cuh's epilogues


def _entries(text):
    """{mangled entry name: (registers, spill store bytes, spill load bytes)} for every kernel in a ptxas report."""
    out, name, spill = {}, None, (0, 0)
    for line in text.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            name, spill = m.group(1), (0, 0)
            continue
        m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            spill = (int(m.group(1)), int(m.group(2)))
        m = re.search(r"Used (\d+) registers", line)
        if m and name:
            out[name] = (int(m.group(1)), *spill)
            name = None
    return out


def _kernels(text):
    """{(WARPS, UPW, UNROLL, EPI, PRE, STAGE, PERSIST, XB): (registers, spill store bytes, spill load bytes)}
    for every DecodeMatvecKernel instantiation in the report (template arguments read off the mangled name)."""
    out = {}
    for name, v in _entries(text).items():
        t = re.search(r"DecodeMatvecKernelI((?:L[ib]\d+E)+)E", name)
        if t:
            out[tuple(int(x) for x in re.findall(r"L[ib](\d+)E", t.group(1)))] = v
    return out


def _blocks_per_sm(regs, threads):
    """Blocks an SM's register file holds: registers are given out 8 a thread at a time (256 a warp)."""
    return REGS_PER_SM // (-(-regs // 8) * 8 * threads)


@pytest.fixture(scope="module")
def kernels():
    if "TEST_SRCDIR" not in os.environ:
        pytest.skip("reads the build's ptxas report: run under bazel test")
    assert REPORT.exists(), f"no ptxas report at {REPORT} (tools/lab.bzl writes it with every CUDA object)"
    k = _kernels(REPORT.read_text())
    assert len(k) > 50, f"only {len(k)} DecodeMatvecKernel instantiations read from {REPORT}"
    return k


def test_r2_tiles_fit_three_wide_blocks_an_sm(kernels):
    r2 = {key: v for key, v in kernels.items() if key[1] * key[2] == 2 and not key[6]}  # UPW * UNROLL 2, one pass
    assert {key[0] for key in r2} >= {4, 8}, sorted(r2)
    for key, (regs, _, _) in sorted(r2.items()):
        threads = key[0] * 32
        assert _blocks_per_sm(regs, threads) * threads >= 768, (
            f"w{key[0]}.u{key[1]}.r{key[2]} {EPI[key[3]]} (XB {key[7]}): {regs} registers, "
            f"{_blocks_per_sm(regs, threads)} blocks of {threads} threads an SM")


@pytest.mark.parametrize("tile,key", [
    ("qkv w8.u1.r2", (8, 1, 2, 3, 1, 0, 0, 0)),
    ("qkv w8.u1.r2 (x by bulk copy, the default since session 23)", (8, 1, 2, 3, 1, 0, 0, 2)),
    ("o_proj w8.u1.r4 (x by bulk copy)", (8, 1, 4, 1, 1, 0, 0, 1)),
    ("down w8.u1.r4.b (x by bulk copy)", (8, 1, 4, 1, 1, 0, 1, 1)),
])
def test_bench_tiles_do_not_spill(kernels, tile, key):
    regs, stores, loads = kernels[key]
    assert stores == 0 and loads == 0, f"{tile}: {regs} registers, {stores} bytes spilled, {loads} loaded back"


def test_parser_reads_a_report():
    text = """ptxas info    : Compiling entry function '_ZN3lab3gpu18DecodeMatvecKernelILi8ELi1ELi2ELi3ELi1ELb0ELb0ELi0EEEvNS0_12MatvecParamsE' for 'sm_90a'
ptxas info    : Function properties for _ZN3lab3gpu18DecodeMatvecKernelILi8ELi1ELi2ELi3ELi1ELb0ELb0ELi0EEEvNS0_12MatvecParamsE
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 82 registers, used 1 barriers
ptxas info    : Compiling entry function '_ZN3lab3gpu16RingMatvecKernelILi16ELi16ELi256ELi3ELi0ELb0EEEvNS0_12MatvecParamsE' for 'sm_90a'
ptxas info    : Used 90 registers, used 1 barriers
ptxas info    : Compiling entry function '_ZN3lab3gpu18DecodeMatvecKernelILi8ELi2ELi2ELi3ELi1ELb0ELb1ELi0EEEvNS0_12MatvecParamsE' for 'sm_90a'
    24 bytes stack frame, 52 bytes spill stores, 28 bytes spill loads
ptxas info    : Used 128 registers, used 1 barriers
"""
    k = _kernels(text)
    assert k == {(8, 1, 2, 3, 1, 0, 0, 0): (82, 0, 0), (8, 2, 2, 3, 1, 0, 1, 0): (128, 52, 28)}
    # session 22's cliff: 82 registers leave room for two 256-thread blocks, 80 for three
    assert _blocks_per_sm(82, 256) == 2 and _blocks_per_sm(80, 256) == 3


# The decode attention kernels of the short layout, from gpu_opt_knobs.cu's report (the file that instantiates them).
KNOBS_REPORT = REPORT.with_name("gpu_opt_knobs.ptxas.txt")


@pytest.fixture(scope="module")
def attention_kernels():
    if "TEST_SRCDIR" not in os.environ:
        pytest.skip("reads the build's ptxas report: run under bazel test")
    assert KNOBS_REPORT.exists(), f"no ptxas report at {KNOBS_REPORT}"
    return _entries(KNOBS_REPORT.read_text())


# Llama-3.1-8B's shape (head_dim 128, 4 query heads a kv head). Both must hold two blocks an SM without spilling: the
# short layout's one-wave bound (2,112 keys on 132 SMs) counts two, and the CUDA-core kernel stages q in shared
# memory precisely to fit 128 registers without spills (cuda/gpu_opt/README.md, "Attention's registers"); v4 runs
# the spread steps by default since session 27 ("Session 27").
@pytest.mark.parametrize("kernel,mangled,threads", [
    ("attention v4 (tensor cores, 4 warps)", "_ZN3lab3gpu18AttentionMmaKernelILi128ELi4ELi4EEEvNS0_10AttnParamsE", 128),
    ("attention v2, short layout (8 warps, q in shared memory)",
     "_ZN3lab3gpu15AttentionKernelILi128ELi4ELb1ELi8ELi4ELi0ELb1ELi0ELb1EEEvNS0_10AttnParamsE", 256),
])
def test_short_attention_kernels_fit_two_blocks_without_spills(attention_kernels, kernel, mangled, threads):
    assert mangled in attention_kernels, f"{kernel}: not in {KNOBS_REPORT.name}"
    regs, stores, loads = attention_kernels[mangled]
    assert stores == 0 and loads == 0, f"{kernel}: {regs} registers, {stores} bytes spilled, {loads} loaded back"
    assert _blocks_per_sm(regs, threads) >= 2, f"{kernel}: {regs} registers, {threads} threads a block"


def test_entry_parser_reads_a_report():
    text = """ptxas info    : Compiling entry function '_ZN3lab3gpu18AttentionMmaKernelILi128ELi4ELi4EEEvNS0_10AttnParamsE' for 'sm_90a'
ptxas info    : Function properties for _ZN3lab3gpu18AttentionMmaKernelILi128ELi4ELi4EEEvNS0_10AttnParamsE
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 196 registers, used 1 barriers, 8580 bytes smem
ptxas info    : Compiling entry function '_ZN3lab3gpu15AttentionKernelILi128ELi4ELb1ELi8ELi4ELi0ELb1ELi0ELb0EEEvNS0_10AttnParamsE' for 'sm_90a'
    40 bytes stack frame, 128 bytes spill stores, 88 bytes spill loads
ptxas info    : Used 128 registers, used 1 barriers, 16640 bytes smem
"""
    e = _entries(text)
    assert e == {"_ZN3lab3gpu18AttentionMmaKernelILi128ELi4ELi4EEEvNS0_10AttnParamsE": (196, 0, 0),
                 "_ZN3lab3gpu15AttentionKernelILi128ELi4ELb1ELi8ELi4ELi0ELb1ELi0ELb0EEEvNS0_10AttnParamsE": (128, 128, 88)}
    # 196 registers (200 given out) leave two 128-thread blocks an SM; 128 registers two of 256 threads, 129 one
    assert _blocks_per_sm(196, 128) == 2 and _blocks_per_sm(128, 256) == 2 and _blocks_per_sm(129, 256) == 1
