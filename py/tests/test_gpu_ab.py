"""tools/gpu_ab.sh, dry (its real runs need a GPU host): each tarball unpacked once, the variants in the
order given and that list again with _2 labels, each with its bundle and knobs, and bad arguments refused."""

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


def test_bad_arguments_refused(tmp_path):
    for args, msg in ((["x=missing.tar.xz"], "no tarball"), ([], "no variants"), (["--nope"], "unknown flag"),
                      (["plain"], "is not LABEL=TARBALL")):
        p = _run(args, tmp_path)
        assert p.returncode == 2 and msg in p.stderr, (args, p.stderr)
