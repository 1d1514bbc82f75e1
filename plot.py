"""plot.py: a train.py run's log read back, and the loss curves of several runs drawn as one hand-written SVG.

- `log_records`: the records of a run's metrics.jsonl (one JSON object a logged step); a last line cut off by a kill
  mid-write is left out, any other bad line is an error naming the file and line. train.py's --resume reads it too.
- `plot_svg`: training loss as one polyline a run, validation loss as dots, round `ticks`, a grid, a legend that names
  each run by its folder (`run_names`: with parent folders where two runs' folders share a name).
- `plot`: `python eval.py --plot RUN_DIR [RUN_DIR ...] --out loss.svg`, which calls it.
Left out: log axes, smoothing, other logged values (lr, tokens/s): a few dozen lines of SVG, no plotting library.
"""
import errno
import json
import math
import os
from xml.sax.saxutils import escape

from checkpoint import atomic_write
from data import UserError

FONT = 12                                                      # px; a sans-serif glyph is ~0.55 em wide, 0.75 at most
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
TORN = "(empty, or only a line cut off mid-write)"


def log_records(path, flag, fix=""):
    """[(line, record)] of a train.py run's metrics.jsonl. Its last line, cut off by a kill mid-write, is left out;
    any other line that is not a record (a dict with its step) is an error naming `flag`, the file and the line."""
    with open(path) as f:
        lines, records = f.read().split("\n"), []
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line) if line else None
        except ValueError:
            row = line
        if isinstance(row, dict) and isinstance(row.get("step"), (int, float)):
            records.append((line, row))
        elif row is not None and n < len(lines):
            raise UserError(f"{flag}: {path}, line {n} is not a record ({line[:80]!r}){fix}")
    return records


def read_metrics(run_dir, key):
    """[(step, value)] sorted by step; a step logged twice (a resumed run) keeps its last value."""
    path = os.path.join(run_dir, "metrics.jsonl")
    if os.path.isfile(run_dir):                                # (was "[Errno 20] Not a directory", "[Errno 2] ...")
        raise UserError(f"--plot {run_dir} is a file: --plot takes train.py runs' --out folders (here: "
                        f"{os.path.dirname(run_dir) or '.'})")
    if not os.path.isfile(path):
        raise UserError(f"--plot {run_dir}: no metrics.jsonl there; --plot takes train.py runs' --out folders")
    good = lambda v: isinstance(v, (int, float)) and math.isfinite(v)  # noqa: E731
    return sorted({r["step"]: r[key] for _, r in log_records(path, f"--plot {run_dir}") if good(r.get(key))}.items())


def ticks(lo, hi, n=5):
    """About n round values (1, 2 or 5 x 10^k apart) spanning [lo, hi]."""
    raw = (hi - lo) / n if hi > lo else abs(lo) or 1.0
    step = min(m * 10.0 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)
               if m * 10.0 ** math.floor(math.log10(raw)) >= raw)
    first = math.floor(lo / step)                              # two ticks at least: one logged step, a flat loss
    return [round(i * step, 12) for i in range(first, max(math.ceil(hi / step), first + 1) + 1)]


def run_names(run_dirs):
    """Each run's name in the legend: its folder's name, with as many parent folders as it takes to tell it from the
    other runs (x/out and y/out, not out twice)."""
    parts = [os.path.abspath(d).split(os.sep) for d in run_dirs]
    names = []
    for p in parts:
        k = 1
        while k < len(p) - 1 and any(q != p and q[-k:] == p[-k:] for q in parts):
            k += 1
        names.append(os.path.join(*p[-k:]))
    return names


def plot_svg(run_dirs, W=720, H=420, L=60, R=170, T=20, B=45):
    """One polyline of training loss per run (validation loss as dots), round ticks, grid, a legend on the right:
    W x H pixels, plot margins L, R, T, B (W and R widened for a long run name: each drawn whole). A run with nothing
    logged yet is a note, and in the legend only."""
    seen = [os.path.realpath(d) for d in run_dirs]             # (a link to a run is that run: drawn twice)
    if (twice := next((i for i, a in enumerate(seen) if seen.count(a) > 1), None)) is not None:
        other = run_dirs[seen.index(seen[twice], twice + 1)]
        raise UserError(f"--plot {run_dirs[twice]} is given twice: each run draws one curve" if os.path.abspath(
            run_dirs[twice]) == os.path.abspath(other) else f"--plot {run_dirs[twice]} and {other} are the same run "
                        f"({seen[twice]}, through a link): each run draws one curve; give it once")
    runs, empty = {}, []
    for d, name in zip(run_dirs, run_names(run_dirs)):
        runs[name] = curves = read_metrics(d, "loss"), read_metrics(d, "val_loss")
        if not curves[0] + curves[1]:
            empty.append(f"--plot {d}: no loss logged in {os.path.join(d, 'metrics.jsonl')} yet {TORN}")
    if len(empty) == len(run_dirs):
        raise UserError(empty[0] + ": nothing to draw" if len(empty) == 1 else
                        f"--plot {' '.join(map(str, run_dirs))}: no loss logged in their metrics.jsonl yet {TORN}")
    for e in empty:
        print(f"note: {e}: in the legend only")
    need = 54 + round(0.75 * FONT * max(map(len, runs)))      # the legend: its line, a gap, the longest name whole
    W, R = W + max(need - R, 0), max(R, need)                  # (the plot keeps its width)
    points = [p for train, val in runs.values() for p in train + val]
    xt, yt = ticks(0, max(s for s, _ in points)), ticks(min(v for _, v in points), max(v for _, v in points))
    sx = lambda s: L + (s - xt[0]) / (xt[-1] - xt[0]) * (W - L - R)  # noqa: E731  step -> pixels
    sy = lambda v: H - B - (v - yt[0]) / (yt[-1] - yt[0]) * (H - T - B)  # noqa: E731  loss -> pixels, downwards
    text = lambda x, y, s, at="middle": f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{at}">{s}</text>'  # noqa: E731
    line = lambda x1, y1, x2, y2, c="#ddd", w=1: (f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                                                  f'stroke="{c}" stroke-width="{w}"/>')  # noqa: E731
    svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" '
           f'font-size="{FONT}">', f'<rect width="{W}" height="{H}" fill="white"/>']
    svg += [line(sx(x), T, sx(x), H - B) + text(sx(x), H - B + 16, f"{x:g}") for x in xt]
    svg += [line(L, sy(y), W - R, sy(y)) + text(L - 6, sy(y) + 4, f"{y:g}", "end") for y in yt]
    svg += [line(L, T, L, H - B, "black"), line(L, H - B, W - R, H - B, "black"), text((L + W - R) / 2, H - 8, "step"),
            text(L - 40, T - 6, "loss", "start")]
    for i, (name, (train, val)) in enumerate(runs.items()):
        c, y = COLORS[i % len(COLORS)], T + 14 + 20 * i
        if train:
            svg.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="'
                       + " ".join(f"{sx(s):.1f},{sy(v):.1f}" for s, v in train) + '"/>')
        svg += [f'<circle cx="{sx(s):.1f}" cy="{sy(v):.1f}" r="3" fill="{c}"/>' for s, v in val]
        svg.append(line(W - R + 12, y - 4, W - R + 36, y - 4, c, 2) + text(W - R + 42, y, escape(name), "start"))
    if any(val for _, val in runs.values()):
        svg.append(text(W - R + 12, T + 14 + 20 * len(runs), "dots: validation loss", "start"))
    return "\n".join(svg + ["</svg>\n"])


def plot(run_dirs, out):
    """eval.py --plot: the runs' loss curves (plot_svg) written to the SVG file `out`, once they are drawn."""
    if os.path.isdir(out):
        raise UserError(f"--out {out} is a folder: --plot writes one SVG file (e.g. --out "
                        f"{os.path.join(out, 'loss.svg')})")
    if not os.path.isdir(os.path.dirname(out) or "."):
        raise UserError(f"--out {out}: no folder {os.path.dirname(out)} to write it in")
    svg = plot_svg(run_dirs)
    try:
        with atomic_write(out, "w") as f:  # (written in place, a full disk left the earlier plot cut to the new one's
            f.write(svg)                   # first bytes)
    except OSError as e:
        raise UserError(f"--out {out}: the SVG ({len(svg.encode()):,} bytes) could not be written: {e.strerror or e} "
                        f"({errno.errorcode.get(e.errno, e.errno)}); "
                        + ("the file there is as it was" if os.path.exists(out) else "nothing written")) from e
    print(f"wrote {out} ({len(run_dirs)} run{'s' * (len(run_dirs) > 1)})")
