"""tools/gpu_ab.sh, dry (its real runs need a GPU host): each tarball unpacked once, the variants in the
order given and that list again with _2 labels, each with its bundle and knobs; --trace's step traces, one a
variant with its own knobs; and bad arguments refused."""

import subprocess
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "tools" / "gpu_ab.sh"


def _run(args, tmp_path):
    return subprocess.run(["bash", str(SCRIPT), "--dry_run", *args], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "OUT": str(tmp_path / "out")})


def test_variants_alternate_and_keep_their_knobs(tmp_path):
    a, b = tmp_path / "a.tar.xz", tmp_path / "b.tar.xz"
    for t in (a, b):
        with tarfile.open(t, "w:xz"):
            pass
    p = _run(["--suite", f"new={a}", f"base={b}:LAB_GPU_X_BULK=down,LAB_GPU_TILES=qkv=w8.u1.r2,down=w4.u1.r4"], tmp_path)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("-xJf") == 2  # one unpack per tarball
    cmd = next(line for line in p.stdout.splitlines() if "decode_variants.py" in line)
    variants = cmd.split("--variant ")[1:]
    assert [v.split("=", 1)[0] for v in variants] == ["new", "base", "new_2", "base_2"], cmd
    assert variants[1].strip() == "base=/tmp/gpu_ab/b2/gpu_bundle:LAB_GPU_X_BULK=down,LAB_GPU_TILES=qkv=w8.u1.r2,down=w4.u1.r4"
    assert variants[2].strip() == "new_2=/tmp/gpu_ab/b1/gpu_bundle"
    # a warm host keeps /tmp: the last call's results are removed before anything runs
    assert p.stdout.splitlines()[0] == "+ rm -rf /tmp/gpu_ab/res", p.stdout
    assert "run.sh model" in p.stdout and f"{tmp_path}/out/ab.tgz" in p.stdout


def test_trace_runs_each_variant_once_with_its_knobs(tmp_path):
    a, b = tmp_path / "a.tar.xz", tmp_path / "b.tar.xz"
    for t in (a, b):
        with tarfile.open(t, "w:xz"):
            pass
    knobs = "LAB_GPU_NORM_FOLD=0,LAB_GPU_TILES=qkv=w8.u1.r2,lm_head=ring.c8.s8.k512,LAB_GPU_X_BULK=down"
    p = _run(["--trace", "3000", f"new={a}", f"nofold={b}:{knobs}"], tmp_path)
    assert p.returncode == 0, p.stderr
    traces = [line for line in p.stdout.splitlines() if "step_trace.py" in line]
    assert len(traces) == 2, p.stdout  # the first round only
    assert traces[0].startswith("+ env PYTHONPATH=/tmp/gpu_ab/b1/gpu_bundle ") and "/trace_new" in traces[0]
    # every knob its own assignment, the tiles' value with its commas whole; an engine long enough for the context
    assert ("+ env LAB_GPU_NORM_FOLD=0 LAB_GPU_TILES=qkv=w8.u1.r2,lm_head=ring.c8.s8.k512 LAB_GPU_X_BULK=down "
            "PYTHONPATH=/tmp/gpu_ab/b2/gpu_bundle ") in traces[1], traces[1]
    assert "--context 3000 --max_context 3600" in traces[1] and "/trace_nofold" in traces[1]
    assert p.stdout.index("step_trace.py") < p.stdout.index("ab.tgz")  # the traces travel in the archive


def test_bad_arguments_refused(tmp_path):
    for args, msg in ((["x=missing.tar.xz"], "no tarball"), ([], "no variants"), (["--nope"], "unknown flag"),
                      (["plain"], "is not LABEL=TARBALL")):
        p = _run(args, tmp_path)
        assert p.returncode == 2 and msg in p.stderr, (args, p.stderr)
