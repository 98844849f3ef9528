#!/usr/bin/env bash
# One idempotent set-up for a fresh Debian/Ubuntu machine, shared by the README, .ci/run and
# docker/Dockerfile: system packages (Bazel 4.2.3 from Debian and the rules it needs offline,
# nlohmann-json for the C++ loader) and the project virtualenv .venv with pinned requirements.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

APT_PACKAGES=(bazel-bootstrap bazel-platforms bazel-rules-java bazel-rules-proto bazel-skylib
              nlohmann-json3-dev g++ python3-venv python3-dev)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's /usr/bin/bazel wrapper runs /usr/bin/bazel-<.bazelversion>; Debian installs 4.2.3 as bazel-4.
want_bazel="$(cat .bazelversion)"
if [ -x /usr/bin/bazel-4 ] && [ ! -e "/usr/bin/bazel-$want_bazel" ] && \
   /usr/bin/bazel-4 --version 2>/dev/null | grep -q "$want_bazel\|no_version"; then
  $SUDO ln -s /usr/bin/bazel-4 "/usr/bin/bazel-$want_bazel"
fi

PY="${LAB_PYTHON_BOOTSTRAP:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
stamp=".venv/.lab-requirements.sha256"
want="$(cat requirements.txt requirements-data.txt | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "[setup] pip install -r requirements.txt (first time: a few minutes)"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -r requirements.txt
  .venv/bin/python -m pip install -q --no-deps -r requirements-data.txt
  echo "$want" > "$stamp"
fi
echo "[setup] ok: $(bazel --version 2>/dev/null || echo bazel 4.2.3 from Debian), $(.venv/bin/python --version)"
