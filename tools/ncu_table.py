"""Summarizes an Nsight Compute CSV (`--csv --page raw --print-units base`) of one decode step.

  python3 tools/ncu_table.py ncu_decode.csv

Needs the metrics gpu__time_duration.sum and dram__throughput.avg.pct_of_peak_sustained_elapsed;
dram__bytes_read.sum / dram__bytes_write.sum add GB/s. When the kernel count is 2 + 5*L (embed,
L x [qkv, attention, o_proj, gate_up, down], lm_head: gpu_opt's decode step) kernels are grouped by
role; otherwise by kernel name. Prints a markdown table: calls, total time, share, time-weighted mean
DRAM throughput (% of peak) and achieved GB/s.
"""

import csv
import re
import sys
from collections import OrderedDict

ROLES = ["qkv", "attention", "o_proj", "gate_up", "down"]


def read_rows(path):
    with open(path, newline="") as f:
        lines = [ln for ln in f if ln.startswith('"')]  # skip ncu's "==PROF==" chatter
    rows = list(csv.DictReader(lines))
    # The row after the header holds units when --print-units is not base: drop rows without an ID.
    return [r for r in rows if (r.get("ID") or "").strip().isdigit()]


def num(s):
    s = (s or "").replace(",", "").strip()
    try:
        return float(s)
    except ValueError:
        return 0.0


def short_name(name):
    base = re.sub(r"^void\s+", "", name)
    base = re.sub(r"\(.*\)$", "", base)
    return base.split("::")[-1]


def main(path):
    rows = read_rows(path)
    if not rows:
        sys.exit(f"{path}: no kernel rows (did the profiled range contain kernels?)")
    n = len(rows)
    by_role = (n - 2) % 5 == 0 and n >= 7
    groups = OrderedDict()
    for i, r in enumerate(rows):
        if by_role:
            key = "embed" if i == 0 else "lm_head" if i == n - 1 else ROLES[(i - 1) % 5]
        else:
            key = short_name(r.get("Kernel Name", "?"))
        g = groups.setdefault(key, dict(calls=0, ns=0.0, pct_ns=0.0, bytes=0.0, names=set()))
        ns = num(r.get("gpu__time_duration.sum"))
        g["calls"] += 1
        g["ns"] += ns
        g["pct_ns"] += ns * num(r.get("dram__throughput.avg.pct_of_peak_sustained_elapsed"))
        g["bytes"] += num(r.get("dram__bytes_read.sum")) + num(r.get("dram__bytes_write.sum"))
        g["names"].add(short_name(r.get("Kernel Name", "?")))
    total_ns = sum(g["ns"] for g in groups.values())
    total_bytes = sum(g["bytes"] for g in groups.values())
    print(f"{n} kernels, {total_ns / 1e3:.1f} us of kernel time (serialized by ncu), "
          f"{total_bytes / 1e9:.3f} GB moved, {total_bytes / max(total_ns, 1):.0f} GB/s overall\n")
    print("| kernels | calls | total us | share | DRAM % of peak (time-weighted) | GB/s | kernel |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for key, g in sorted(groups.items(), key=lambda kv: -kv[1]["ns"]):
        pct = g["pct_ns"] / g["ns"] if g["ns"] else 0.0
        gbps = g["bytes"] / g["ns"] if g["ns"] else 0.0
        print(f"| {key} | {g['calls']} | {g['ns'] / 1e3:.1f} | {100 * g['ns'] / total_ns:.1f}% | {pct:.1f}% | "
              f"{gbps:.0f} | {', '.join(sorted(g['names']))} |")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
