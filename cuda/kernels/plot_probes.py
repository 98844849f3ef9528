"""Plots of the kernel lab's machine probes from their logs (the probes run on the GPU host; this runs anywhere):

- sm_rates: each SM's time for its slice over the launch's median, by SM id, one panel per log (one card
  each): the fast SMs stand out (cuda/kernels/README.md, "SM rates").
- handoff_latency: the time from the PDL wait to the vector in shared memory, against the vector's size,
  with and without PDL (README, "The handoff").

  python3 cuda/kernels/plot_probes.py --sm_rates A.log,B.log --handoff H.log --out DIR

Writes DIR/sm_rates.png and DIR/handoff.png (whichever logs are given). A log without the table it
needs is an error naming the file.
"""

import re
from pathlib import Path

from absl import app, flags

flags.DEFINE_list("sm_rates", [], "sm_rates logs (the first run of each log is plotted)")
flags.DEFINE_string("handoff", None, "a handoff_latency log (one or more runs, one per vector size)")
flags.DEFINE_string("out", None, "output directory")
FLAGS = flags.FLAGS


def parse_sm_rates(text: str, name: str = "log"):
    """(card, MB, [relative time of SM 0, 1, ...]) from the first run in an sm_rates log."""
    head = re.search(r"sm_rates: (.+?), (\d+) SMs, (\d+) MB", text)
    block = re.search(r"relative time by SM id:\n((?:\s+[\d. ]+\n)+)", text)
    if not head or not block:
        raise ValueError(f"{name}: no sm_rates table (its 'relative time by SM id' block)")
    values = [float(v) for v in block.group(1).split()]
    if len(values) != int(head.group(2)):
        raise ValueError(f"{name}: {len(values)} SM times for {head.group(2)} SMs")
    return head.group(1), int(head.group(3)), values


def parse_handoff(text: str, name: str = "log"):
    """{(pdl, untouched): [(KB, phase us), ...]} for the rows whose writers streamed, over every run."""
    out = {}
    for run in re.split(r"(?=handoff_latency: )", text):
        k = re.search(r"x of (\d+) floats", run)
        if not k:
            continue
        kb = int(k.group(1)) * 4 / 1024
        for m in re.finditer(r"^stream\s+(their x|untouched)\s+(yes|no)\s+([\d.]+)", run, re.M):
            out.setdefault((m.group(2) == "yes", m.group(1) == "untouched"), []).append((kb, float(m.group(3))))
    if not out:
        raise ValueError(f"{name}: no handoff_latency rows with streaming writers")
    return {key: sorted(v) for key, v in out.items()}


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_sm_rates(runs, path: Path):
    plt = _plt()
    fig, axes = plt.subplots(len(runs), 1, figsize=(11, 2.6 * len(runs)), squeeze=False)
    for ax, (label, (card, mb, values)) in zip(axes[:, 0], runs):
        colors = ["tab:orange" if v < 0.9 else "tab:blue" for v in values]
        ax.bar(range(len(values)), values, color=colors, width=0.8)
        ax.axhline(1.0, color="gray", lw=0.8)
        ax.set_ylim(0.6, 1.1)
        fast = sum(v < 0.9 for v in values)
        ax.set_title(f"{card}, {mb} MB: {fast} of {len(values)} SMs under 0.9 ({label})", fontsize=9)
        ax.set_ylabel("time / median")
    axes[-1, 0].set_xlabel("SM id (%smid)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_handoff(series, path: Path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    names = {(True, False): "PDL, the writer's x", (True, True): "PDL, a vector no kernel wrote",
             (False, False): "no PDL, the writer's x", (False, True): "no PDL, a vector no kernel wrote"}
    for key, pts in sorted(series.items(), reverse=True):
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ls="-" if key[0] else "--", label=names[key])
    ax.set_xlabel("vector read by every SM (KB)")
    ax.set_ylabel("PDL wait to vector in shared memory (us)")
    ax.set_title("The handoff: a broadcast read priced by the byte", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv):
    del argv
    if not FLAGS.out or not (FLAGS.sm_rates or FLAGS.handoff):
        raise app.UsageError("give --out and at least one of --sm_rates, --handoff")
    out = Path(FLAGS.out)
    out.mkdir(parents=True, exist_ok=True)
    if FLAGS.sm_rates:
        runs = [(Path(p).name, parse_sm_rates(Path(p).read_text(), p)) for p in FLAGS.sm_rates]
        plot_sm_rates(runs, out / "sm_rates.png")
        print(out / "sm_rates.png")
    if FLAGS.handoff:
        plot_handoff(parse_handoff(Path(FLAGS.handoff).read_text(), FLAGS.handoff), out / "handoff.png")
        print(out / "handoff.png")


if __name__ == "__main__":
    app.run(main)
