#!/usr/bin/env bash
# Proves `--config=remote-cache` against a real HTTP cache: nginx with WebDAV PUT on 127.0.0.1.
#   1. cold: a build from a fresh output base, uploading every action's result to the cache;
#   2. warm: the same build from another fresh output base, in a copy of the workspace at another
#      path (as another clone or machine would be): at least LAB_CACHE_TEST_MIN_HIT % (default 90)
#      of its executed actions must be remote cache hits;
#   3. offline: the same build from a third fresh output base with the cache unreachable (a closed
#      port): it must still succeed (Bazel only warns and builds locally).
# The builds run in snapshots of the work tree (git's tracked and unignored files), so edits made
# meanwhile cannot skew the comparison; the project's .venv stays the interpreter (LAB_PYTHON).
# Usage: tools/remote_cache_test.sh [TARGET_PATTERN...]   (default //...; "-//x/..." excludes)
# Env: LAB_CACHE_TEST_TARGETS (same as arguments), LAB_CACHE_TEST_TIMEOUT (s per build, default
# 900), LAB_CACHE_TEST_MIN_HIT (default 90).
# Idempotent: everything lives in a fresh temp dir; nginx and the extra Bazel servers are stopped
# and the dir removed on any exit. Installs nginx with apt-get if it is missing (root or sudo).
set -euo pipefail
cd "$(dirname "$0")/.."
ws=$(pwd)

per_build_timeout="${LAB_CACHE_TEST_TIMEOUT:-900}"
min_hit="${LAB_CACHE_TEST_MIN_HIT:-90}"
say() { echo "[remote-cache-test] $*"; }
die() { say "FAIL: $*" >&2; exit 1; }

if [ "$#" -gt 0 ]; then
  targets=("$@")
elif [ -n "${LAB_CACHE_TEST_TARGETS:-}" ]; then
  read -r -a targets <<< "$LAB_CACHE_TEST_TARGETS"
else
  targets=("//...")
fi
export LAB_PYTHON="${LAB_PYTHON:-$ws/.venv/bin/python3}"
[ -x "$LAB_PYTHON" ] || die "no interpreter at $LAB_PYTHON: run tools/setup.sh first"
command -v python3 >/dev/null || die "python3 is needed"

# --- nginx with WebDAV -----------------------------------------------------------------------
find_nginx() { command -v nginx 2>/dev/null || { [ -x /usr/sbin/nginx ] && echo /usr/sbin/nginx; } || true; }
NGINX="$(find_nginx)"
if [ -z "$NGINX" ]; then
  SUDO=""
  [ "$(id -u)" = 0 ] || SUDO="sudo"
  say "installing nginx (apt-get)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nginx >/dev/null
  NGINX="$(find_nginx)"
  [ -n "$NGINX" ] || die "nginx did not install"
fi
"$NGINX" -V 2>&1 | grep -q -- --with-http_dav_module || die "$NGINX was built without the WebDAV module"

tmp="$(mktemp -d "${TMPDIR:-/tmp}/lab-remote-cache.XXXXXX")"
output_bases=()
nginx_pid=""
cleanup() {
  local rc=$?
  for ob in "${output_bases[@]}"; do
    timeout 60 bazel --output_base="$ob" shutdown >/dev/null 2>&1 || true
  done
  if [ -n "$nginx_pid" ] && kill -0 "$nginx_pid" 2>/dev/null; then
    kill "$nginx_pid" 2>/dev/null || true
    wait "$nginx_pid" 2>/dev/null || true
  fi
  chmod -R u+w "$tmp" 2>/dev/null || true
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port="$(free_port)"
closed_port="$(free_port)"  # bound and released at once: nothing listens there
mkdir -p "$tmp/store" "$tmp/nginx"
{
  # Workers of a root master switch to an unprivileged user that cannot write the temp dir.
  [ "$(id -u)" = 0 ] && echo "user root;"
  cat <<EOF
worker_processes 2;
daemon off;
pid $tmp/nginx/nginx.pid;
error_log $tmp/nginx/error.log warn;
events { worker_connections 512; }
http {
  access_log $tmp/nginx/access.log;
  default_type application/octet-stream;
  client_body_temp_path $tmp/nginx/body;
  proxy_temp_path $tmp/nginx/proxy;
  fastcgi_temp_path $tmp/nginx/fastcgi;
  uwsgi_temp_path $tmp/nginx/uwsgi;
  scgi_temp_path $tmp/nginx/scgi;
  server {
    listen 127.0.0.1:$port;
    location / {
      root $tmp/store;
      client_max_body_size 0;
      dav_methods PUT;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
    }
  }
}
EOF
} > "$tmp/nginx/nginx.conf"
"$NGINX" -e "$tmp/nginx/error.log" -p "$tmp/nginx" -c "$tmp/nginx/nginx.conf" &
nginx_pid=$!
cache="http://127.0.0.1:$port"
python3 - "$cache" <<'EOF' || die "nginx did not serve PUT/GET on $cache (see its error.log)"
import sys, time, urllib.request
url = sys.argv[1] + "/selftest/probe"
for _ in range(50):
    try:
        urllib.request.urlopen(urllib.request.Request(url, data=b"ok", method="PUT"), timeout=2)
        assert urllib.request.urlopen(url, timeout=2).read() == b"ok"
        sys.exit(0)
    except (OSError, AssertionError):
        time.sleep(0.2)
sys.exit(1)
EOF
say "nginx $("$NGINX" -v 2>&1 | sed 's/.*nginx\///') (WebDAV) serving $cache, pid $nginx_pid"

# --- two snapshots of the work tree, at different paths --------------------------------------
mkdir -p "$tmp/a/llm-inference-lab"
if git -C "$ws" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$ws" ls-files -z --cached --others --exclude-standard \
    | tar -C "$ws" --null -T - --ignore-failed-read -cf - 2>/dev/null | tar -C "$tmp/a/llm-inference-lab" -xf -
else
  tar -C "$ws" --exclude='./bazel-*' --exclude=./.venv --exclude=./.git --exclude=./data \
    --exclude=./dist -cf - . | tar -C "$tmp/a/llm-inference-lab" -xf -
fi
mkdir -p "$tmp/b"
cp -a "$tmp/a/llm-inference-lab" "$tmp/b/lab-elsewhere"
say "targets: ${targets[*]} (snapshots of $ws: $(du -sh "$tmp/a" | cut -f1))"

# --- the three builds ------------------------------------------------------------------------
# build NAME WORKTREE CACHE_URL: one build from a fresh output base; sets $last_log and $last_secs.
# No bazel-* links (--symlink_prefix=/): a later build's `//...` would walk into this output base.
build() {
  local name="$1" tree="$2" url="$3"
  local ob="$tmp/ob-$name"
  mkdir -p "$ob"
  output_bases+=("$ob")
  last_log="$tmp/$name.log"
  local t0 t1 rc=0
  t0=$(date +%s.%N)
  (cd "$tree" && timeout --kill-after=30 "$per_build_timeout" \
    bazel --nohome_rc --output_base="$ob" build --config=ci --config=remote-cache \
      --remote_cache="$url" --symlink_prefix=/ -- "${targets[@]}") > "$last_log" 2>&1 || rc=$?
  t1=$(date +%s.%N)
  last_secs=$(python3 -c "print(f'{$t1 - $t0:.1f}')")
  # The summary lines, and each remote-cache warning with the reason on its next line.
  awk '/^(INFO: ([0-9]+ process|Elapsed|Build)|ERROR|FAILED)/ { print; next }
       /^WARNING: .*Remote Cache/ { print; if ((getline nxt) > 0) print "      " nxt }' "$last_log" \
    | uniq | sed "s/^/    [$name] /"
  [ "$rc" = 0 ] || { tail -n 40 "$last_log" >&2; die "$name build failed (exit $rc) after ${last_secs} s"; }
}

# One server at a time on a 2-core CI machine: each build's server stops once it is done with.
stop_server() { timeout 60 bazel --output_base="$tmp/ob-$1" shutdown >/dev/null 2>&1 || true; }

# "INFO: 41 processes: 17 remote cache hit, 24 internal." -> "total hits internal"
process_counts() {
  python3 - "$1" <<'EOF'
import re, sys
lines = [l for l in open(sys.argv[1], errors="replace") if re.match(r"INFO: \d+ process(es)?[:.]", l)]
if not lines:
    print("0 0 0")
    sys.exit()
last = lines[-1]
def count(kind):
    m = re.search(r"(\d+) " + kind, last)
    return int(m.group(1)) if m else 0
print(int(re.match(r"INFO: (\d+)", last).group(1)), count("remote cache hit"), count("internal"))
EOF
}

say "1/3 cold build, uploading to the cache"
build cold "$tmp/a/llm-inference-lab" "$cache"
cold_secs=$last_secs
read -r cold_total _ cold_internal <<< "$(process_counts "$last_log")"
cold_executed=$((cold_total - cold_internal))
[ "$cold_executed" -gt 0 ] || die "the cold build executed no actions: nothing to cache"
query=""  # the target patterns as a query expression: "-//x/..." subtracts
for t in "${targets[@]}"; do
  case "$t" in -*) query="$query - ${t#-}" ;; *) query="${query:+$query + }$t" ;; esac
done
compiles=$(cd "$tmp/a/llm-inference-lab" && timeout 300 bazel --nohome_rc --output_base="$tmp/ob-cold" \
  aquery --config=ci "mnemonic('CppCompile|Nvcc', deps($query))" --output=text 2>/dev/null \
  | grep -c '^action ' || true)
stop_server cold
[ "${compiles:-0}" -gt 0 ] || die "no C++/CUDA compile actions among the targets"
say "cold: ${cold_secs} s, ${cold_executed} actions executed (${compiles} C++/CUDA compiles among them), cache holds $(du -sh "$tmp/store" | cut -f1)"

say "2/3 the same build in the other snapshot, from a fresh output base: served by the cache"
build warm "$tmp/b/lab-elsewhere" "$cache"
warm_secs=$last_secs
read -r warm_total warm_hits warm_internal <<< "$(process_counts "$last_log")"
warm_executed=$((warm_total - warm_internal))
stop_server warm
[ "$warm_executed" -gt 0 ] || die "the second build ran no cacheable actions (expected ${cold_executed})"
hit_pct=$((100 * warm_hits / warm_executed))
say "warm: ${warm_secs} s, ${warm_hits} of ${warm_executed} actions from the remote cache (${hit_pct}%)"
[ "$hit_pct" -ge "$min_hit" ] || die "remote cache hit ratio ${hit_pct}% < ${min_hit}%"

say "3/3 the same build with the cache unreachable (http://127.0.0.1:$closed_port, nothing listens)"
build offline "$tmp/a/llm-inference-lab" "http://127.0.0.1:$closed_port"
offline_secs=$last_secs
stop_server offline
grep -q "Remote Cache" "$last_log" || say "(note: Bazel printed no remote-cache warning)"

say "OK: cold ${cold_secs} s, from cache ${warm_secs} s (${warm_hits}/${warm_executed} = ${hit_pct}% remote cache hits), cache down ${offline_secs} s (built locally)"
