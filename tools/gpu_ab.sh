#!/usr/bin/env bash
# An alternating-process A/B of gpu_opt bundles and knobs on the GPU host, in one device call: the way this
# lab measures a change (cuda/gpu_opt/README.md, "The third pass": only variants alternating on one card
# in one call compare). Run from the repository root of the GPU host's copy; bundles are tarballs made by
# tools/gpu_bundle.sh (dist/gpu_bundle.tar.xz, or an older commit's built elsewhere).
#
#   tools/gpu_ab.sh [--suite] [--rounds N] [--contexts 512,2048] [--repeats 3] [--trace CONTEXT] [--dry_run] \
#       LABEL=TARBALL[:ENV=VAL,...] ...
#
# Each tarball is unpacked once; the first one's run.sh makes the Llama-3.1-8B-shaped model (if missing)
# and, with --suite, runs its GPU suite (-m gpu -k "not smollm2") first. The variants run in the order
# given, that list N times (labels of later rounds get _2, _3, ...), through cuda/gpu_opt/decode_variants.py.
# Everything lands in one archive, $OUT/ab.tgz (a device call brings back only a few files): the
# variants' table, json, plot and logs, and the suite's log. --trace CONTEXT: then a step trace of each variant
# (cuda/gpu_opt/step_trace.py, once, with its bundle and knobs) at that context, its tables printed and kept.
# Give it the last benched bundle as one of the variants, not only the knob's base: session 19's knob
# A/Bs compared variants of one bundle whose ring had become 8% slower, and blamed the card
# (cuda/gpu_opt/README.md, "Session 19").
set -euo pipefail
ROUNDS=2 CONTEXTS=512,2048 REPEATS=3 SUITE=0 DRY=0 TRACE=""
specs=()
while [ $# -gt 0 ]; do
  case "$1" in
    --suite) SUITE=1; shift ;;
    --rounds) ROUNDS="$2"; shift 2 ;;
    --contexts) CONTEXTS="$2"; shift 2 ;;
    --repeats) REPEATS="$2"; shift 2 ;;
    --trace) TRACE="$2"; shift 2 ;;
    --dry_run) DRY=1; shift ;;
    -*) echo "gpu_ab.sh: unknown flag $1" >&2; exit 2 ;;
    *=*) specs+=("$1"); shift ;;
    *) echo "gpu_ab.sh: '$1' is not LABEL=TARBALL[:ENV=VAL,...]" >&2; exit 2 ;;
  esac
done
[ "${#specs[@]}" -ge 1 ] || { echo "gpu_ab.sh: no variants (LABEL=TARBALL[:ENV=VAL,...])" >&2; exit 2; }
OUT_DIR="${OUT:-/tmp/lab_out}"
WORK=/tmp/gpu_ab
RES="$WORK/res"
MODEL="${LAB_MODEL8B:-/tmp/lab_models/synthetic-llama-3.1-8b_fp16}"
run() { if [ "$DRY" = 1 ]; then echo "+ $*"; else "$@"; fi; }
# A warm host keeps /tmp between calls: the last call's logs must not travel in this call's archive.
run rm -rf "$RES"
mkdir -p "$WORK" "$RES" "$OUT_DIR"

declare -A dir_of  # tarball -> unpacked bundle folder
n=0
variants=()
for r in $(seq 1 "$ROUNDS"); do
  for spec in "${specs[@]}"; do
    label="${spec%%=*}" rest="${spec#*=}"
    tarball="${rest%%:*}" env=""
    [ "$rest" != "$tarball" ] && env=":${rest#*:}"
    [ -f "$tarball" ] || { echo "gpu_ab.sh: no tarball $tarball" >&2; exit 2; }
    if [ -z "${dir_of[$tarball]:-}" ]; then
      n=$((n + 1))
      dir_of[$tarball]="$WORK/b$n"
      run mkdir -p "$WORK/b$n"
      run tar -C "$WORK/b$n" -xJf "$tarball"
      [ "$DRY" = 1 ] || echo "bundle b$n: $tarball, $(grep commit "$WORK/b$n/gpu_bundle/BUILD_INFO")"
    fi
    [ "$r" -gt 1 ] && label="${label}_$r"
    variants+=(--variant "$label=${dir_of[$tarball]}/gpu_bundle$env")
  done
done
first="$WORK/b1/gpu_bundle"
echo "== model"
run env LAB_MODEL8B="$MODEL" OUT="$RES" "$first/run.sh" model
if [ "$SUITE" = 1 ]; then
  echo "== GPU suite of the first bundle"
  (cd "$first" && run env OUT="$RES" ./run.sh test -m gpu -k "not smollm2" > /dev/null 2>&1) || true
  [ -f "$RES/pytest.log" ] && tail -3 "$RES/pytest.log"
fi
echo "== variants"
run env PYTHONPATH="$first" python3 cuda/gpu_opt/decode_variants.py --model_dir "$MODEL" --out "$RES/v" \
  --repeats "$REPEATS" --contexts "$CONTEXTS" "${variants[@]}"
if [ -n "$TRACE" ]; then
  # A variant's knobs one a line: a comma starts a new one only before NAME= (LAB_GPU_TILES' value has commas).
  split_env() {
    local out=() piece parts
    IFS=',' read -ra parts <<< "$1"
    for piece in "${parts[@]}"; do
      if [[ "$piece" =~ ^[A-Z_][A-Z0-9_]*= ]] || [ "${#out[@]}" -eq 0 ]; then out+=("$piece"); else out[-1]+=",$piece"; fi
    done
    printf '%s\n' "${out[@]}"
  }
  for spec in "${specs[@]}"; do
    label="${spec%%=*}" rest="${spec#*=}"
    tarball="${rest%%:*}" envs=()
    [ "$rest" != "$tarball" ] && mapfile -t envs < <(split_env "${rest#*:}")
    echo "== step trace of $label at context $TRACE"
    cmd=(env "${envs[@]}" PYTHONPATH="${dir_of[$tarball]}/gpu_bundle" timeout 150 python3 cuda/gpu_opt/step_trace.py
         --model_dir "$MODEL" --context "$TRACE" --max_context $((TRACE + 600 > 2500 ? TRACE + 600 : 2500))
         --out "$RES/trace_$label")
    if [ "$DRY" = 1 ]; then echo "+ ${cmd[*]}"; continue; fi
    "${cmd[@]}" > "$RES/trace_$label.log" 2>&1 || echo "step trace of $label failed: $RES/trace_$label.log"
    if [ -f "$RES/trace_$label/step_trace.md" ]; then
      grep -E "^\| (kind|qkv|attention|o_proj|gate_up|down|lm_head) \|" "$RES/trace_$label/step_trace.md" | cut -d'|' -f1-5,9-14
      grep -m1 "^Step (first" "$RES/trace_$label/step_trace.md" | cut -c1-140
    fi
  done
fi
run tar -C "$RES" --exclude='probe_*' -czf "$OUT_DIR/ab.tgz" .
echo "== $OUT_DIR/ab.tgz"
