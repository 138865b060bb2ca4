"""``rmclient parity DATA --a BACKEND --b BACKEND``: do two backends give the same rewards?"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any, Dict, List, Optional, Sequence

from .backend import ENGINES, Backend, add_model_arguments, make_client, parse_backend
from .exits import EXIT_CODES_HELP, EXIT_FAILURE, EXIT_OK, InputError, guarded
from .parsers import formatter
from .progress import Progress, add_progress_arguments
from .reading import Record, check_input, iter_chunks, iter_records
from .scoring import PartialScore, line_ranges, score_samples
from .stream import CHUNK_LINES

DESCRIPTION = f"""\
Score the same samples on two backends and compare: the largest and the mean
absolute difference of the rewards, and how well the two rankings agree
(Kendall's tau-b, 1.0 = the same order). Use it to check that a deployment
(vLLM, sglang, lmdeploy, `rmclient serve`) gives the rewards of the checkpoint
run in-process, or that two deployments agree.

DATA holds samples in the format of `rmclient score` (one JSON object per
line). Both backends encode with the same --model and recipe options. The
check passes when max |a - b| <= --tolerance (and tau >= --min-tau when given);
otherwise the command says by how much and where, and exits 1.

A BACKEND is `transformers` (in-process) or ENGINE@ADDRESS[,ADDRESS...] with
ENGINE one of {', '.join(ENGINES)}, e.g. vllm@127.0.0.1:8000 or
sglang@http://10.0.0.1:30000,http://10.0.0.2:30000."""

EPILOG = f"""\
examples:
  rmclient parity samples.jsonl --model internlm/POLAR-7B --trust-remote-code \\
      --a transformers --b vllm@127.0.0.1:8000 --tolerance 0.05
  rmclient parity samples.jsonl --model /models/rm --a sglang@127.0.0.1:30000 --b vllm@127.0.0.1:8000 --json

{EXIT_CODES_HELP}"""


def register(sub: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = sub.add_parser(
        "parity", help="compare the rewards of two backends on the same samples",
        description=DESCRIPTION, epilog=EPILOG, formatter_class=formatter,
    )
    p.add_argument("input", metavar="DATA", help="samples, one JSON object per line ('-' for stdin)")
    p.add_argument("-a", "--a", dest="a", type=parse_backend, required=True, metavar="BACKEND",
                   help="the first backend (the reference), e.g. transformers")
    p.add_argument("-b", "--b", dest="b", type=parse_backend, required=True, metavar="BACKEND",
                   help="the second backend, e.g. vllm@127.0.0.1:8000")
    p.add_argument("--tolerance", type=float, default=1e-3, metavar="X",
                   help="largest allowed |reward_a - reward_b| (default: %(default)g)")
    p.add_argument("--min-tau", type=float, default=None, metavar="T",
                   help="also fail when Kendall's tau is below T")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="use only the first N samples")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object")
    add_progress_arguments(p)
    add_model_arguments(p)
    p.set_defaults(func=guarded(run))
    return p


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of two equally long sequences (ties corrected); NaN when undefined.

    Positions where ``x`` or ``y`` is NaN are left out (:func:`nan_pairs` counts them). O(n log n):
    ``scipy.stats.kendalltau`` when scipy is installed, else Knight's algorithm on numpy (100,000
    samples in well under a second); the O(n^2) reference :func:`_kendall_tau_python` without numpy.
    """
    n = len(x)
    if n != len(y):
        raise ValueError("x and y differ in length")
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy comes with transformers
        keep = [i for i in range(n) if not (math.isnan(x[i]) or math.isnan(y[i]))]
        return _kendall_tau_python([x[i] for i in keep], [y[i] for i in keep])
    xs = np.asarray(x, dtype=np.float64)
    ys = np.asarray(y, dtype=np.float64)
    keep = ~(np.isnan(xs) | np.isnan(ys))
    xs, ys = xs[keep], ys[keep]
    if len(xs) < 2:
        return float("nan")
    try:
        from scipy.stats import kendalltau as scipy_kendalltau
    except ImportError:
        return _kendall_tau_numpy(xs, ys)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a constant input: NaN, with a warning
        return float(scipy_kendalltau(xs, ys)[0])


def nan_pairs(x: Sequence[float], y: Sequence[float]) -> int:
    """How many positions :func:`kendall_tau` leaves out: ``x`` or ``y`` is NaN there."""
    return sum(1 for a, b in zip(x, y) if math.isnan(a) or math.isnan(b))


def _kendall_tau_numpy(xs: Any, ys: Any) -> float:
    """Knight's O(n log n) tau-b: sort by (x, y), then count the inversions of y by a merge sort."""
    import numpy as np

    n = len(xs)
    order = np.lexsort((ys, xs))
    xs, ys = xs[order], ys[order]
    new_x = np.r_[True, xs[1:] != xs[:-1]]
    new_xy = new_x | np.r_[True, ys[1:] != ys[:-1]]
    tied_x = _tied_pairs(new_x)
    tied_xy = _tied_pairs(new_xy)  # tied in both
    ranks = np.unique(ys, return_inverse=True)[1].astype(np.int64).ravel()
    tied_y = _tied_pairs(np.r_[True, np.diff(np.sort(ranks)) != 0])
    swaps = _inversions(ranks)
    pairs = n * (n - 1) // 2
    s = pairs - tied_x - tied_y + tied_xy - 2 * swaps  # concordant - discordant
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    return s / denominator if denominator else float("nan")


def _tied_pairs(starts: Any) -> int:
    """Pairs within runs of equal values, the runs starting where ``starts`` is true."""
    import numpy as np

    lengths = np.diff(np.r_[np.flatnonzero(starts), len(starts)]).astype(np.int64)
    return int((lengths * (lengths - 1) // 2).sum())


def _inversions(values: Any) -> int:
    """Pairs i < j with values[i] > values[j] (ints 0..n-1): a bottom-up merge sort, one numpy pass per level."""
    import numpy as np

    n = len(values)
    span = np.int64(n + 1)
    positions = np.arange(n, dtype=np.int64)
    count = 0
    width = 1
    while width < n:
        block = positions // (2 * width)
        keys = block * span + values  # sorted within each half-block already
        right = (positions // width) % 2 == 1
        left_keys, right_keys = keys[~right], keys[right]
        # for each right element: the left elements of its block that are greater
        block_end = np.searchsorted(left_keys, (block[right] + 1) * span, side="left")
        count += int((block_end - np.searchsorted(left_keys, right_keys, side="right")).sum())
        values = np.sort(keys) - block * span  # merge: each block occupies the same positions
        width *= 2
    return count


def _kendall_tau_python(x: Sequence[float], y: Sequence[float]) -> float:
    n = len(x)
    s = tied_x = tied_y = 0
    for i in range(n - 1):
        for j in range(i + 1, n):
            dx = (x[j] > x[i]) - (x[j] < x[i])
            dy = (y[j] > y[i]) - (y[j] < y[i])
            s += dx * dy
            tied_x += dx == 0
            tied_y += dy == 0
    return _tau_b(n, s, tied_x, tied_y)


def _tau_b(n: int, s: int, tied_x: int, tied_y: int) -> float:
    pairs = n * (n - 1) // 2
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    return s / denominator if denominator else float("nan")


def compare(a: Sequence[float], b: Sequence[float], lines: Sequence[int]) -> Dict[str, Any]:
    """The differences and the rank agreement of ``a`` and ``b``; samples with a NaN reward are left out."""
    keep = [i for i in range(len(a)) if not (math.isnan(a[i]) or math.isnan(b[i]))]
    diffs = [abs(a[i] - b[i]) for i in keep]
    worst = keep[max(range(len(diffs)), key=diffs.__getitem__)] if keep else None
    tau = kendall_tau(a, b)
    return {
        "samples": len(a),
        "nan_excluded": len(a) - len(keep),
        "nan_one_sided_lines": [lines[i] for i in range(len(a)) if math.isnan(a[i]) != math.isnan(b[i])],
        "max_abs_diff": max(diffs) if diffs else None,
        "mean_abs_diff": sum(diffs) / len(diffs) if diffs else None,
        "kendall_tau": None if math.isnan(tau) else tau,
        "worst_line": None if worst is None else lines[worst],
        "worst_a": None if worst is None else a[worst],
        "worst_b": None if worst is None else b[worst],
    }


def _score_all(args: argparse.Namespace, client: Any, backend: Backend, records: List[Record], label: str
               ) -> "tuple[List[float], List[int]]":
    """The rewards of ``records`` on ``client``, and the lines whose sample was cut to fit."""
    progress = Progress(len(records), desc=f"parity {label}={backend}", unit="samples", enabled=args.progress)
    rewards: List[float] = []
    cut: List[int] = []
    try:
        for lo in range(0, len(records), CHUNK_LINES):
            chunk = records[lo : lo + CHUNK_LINES]
            try:
                scored = score_samples(client, [r.data for r in chunk], lambda i, f: (chunk[i].line, f))
            except PartialScore as partial:
                raise type(partial.error)(f"backend {label} ({backend}): {partial.error}") from None
            rewards += [s.reward for s in scored]
            cut += [r.line for r, s in zip(chunk, scored) if s.truncated]
            progress.update(len(chunk))
    finally:
        progress.close()
    return rewards, cut


def _same_length(clients: Sequence[Any]) -> int:
    """Both clients encode to the same longest length (the smaller of theirs), so that a difference is the
    backends', not their truncation: in-process at 16384 and a server at 512 would score different ids."""
    for client in clients:
        if client.server_type != "transformers":
            client.connect()
    longest = min(c.effective_max_length() for c in clients)
    for client in clients:
        client.max_length = longest
    return longest


def run(args: argparse.Namespace) -> int:
    if not (args.tolerance >= 0):
        raise InputError(f"--tolerance must be >= 0, got {args.tolerance}")
    if args.limit is not None and args.limit < 1:
        raise InputError(f"--limit must be at least 1, got {args.limit}")
    for label, backend in (("a", args.a), ("b", args.b)):
        if backend.engine != "transformers" and not backend.addresses:
            raise InputError(f"--{label} {backend.engine}: give the server as {backend.engine}@HOST:PORT")
    check_input(args.input)
    records: List[Record] = []
    for chunk, bad_line in iter_chunks(iter_records(args.input), CHUNK_LINES):
        records += chunk
        if bad_line is not None:
            raise bad_line
        if args.limit is not None and len(records) >= args.limit:
            records = records[: args.limit]
            break
    if not records:
        raise InputError(f"{args.input}: no samples")
    if "openai" in (args.a.engine, args.b.engine):
        raise InputError("parity compares reward-model backends on the same token ids; an LLM judge (openai) reads "
                         "text: score both with `rmclient score` instead")
    clients = [make_client(args, args.a)]
    try:
        clients.append(make_client(args, args.b))
        longest = _same_length(clients)
        a, cut_a = _score_all(args, clients[0], args.a, records, "a")
        b, cut_b = _score_all(args, clients[1], args.b, records, "b")
    finally:
        for client in clients:
            client.close()
    cut = sorted(set(cut_a) | set(cut_b))
    if cut:
        print(f"note: both backends encode at most {longest} tokens (the smaller limit of the two); "
              f"{len(cut)} samples were cut to fit: lines {line_ranges(cut)}", file=sys.stderr)
    result = compare(a, b, [r.line for r in records])
    result.update(a=str(args.a), b=str(args.b), tolerance=args.tolerance, min_tau=args.min_tau,
                  max_length=longest, cut_lines=cut)
    problems: List[str] = []
    one_sided = result["nan_one_sided_lines"]
    if one_sided:
        problems.append(f"{len(one_sided)} samples have a NaN reward on one backend only (lines "
                        f"{', '.join(map(str, one_sided[:20]))}{', ...' if len(one_sided) > 20 else ''})")
    if result["nan_excluded"]:
        print(f"warning: {result['nan_excluded']} samples with a NaN reward are left out of the comparison",
              file=sys.stderr)
    if result["max_abs_diff"] is not None and result["max_abs_diff"] > args.tolerance:
        problems.append(
            f"max |a - b| = {result['max_abs_diff']:.6g} exceeds the tolerance {args.tolerance:g} "
            f"(worst at line {result['worst_line']}: a = {result['worst_a']:.6g}, b = {result['worst_b']:.6g}; "
            f"mean |a - b| = {result['mean_abs_diff']:.6g})"
        )
    tau = result["kendall_tau"]
    if args.min_tau is not None and (tau is None or tau < args.min_tau):
        problems.append(f"Kendall tau = {_fmt(tau)} is below --min-tau {args.min_tau:g}")
    result["passed"] = not problems
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_report(result))
    if problems:
        print(f"rmclient parity: FAILED: {args.a} vs {args.b}: " + "; ".join(problems), file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_OK


def _fmt(x: Optional[float]) -> str:
    return "n/a (a constant ranking)" if x is None else f"{x:.6f}"


def format_report(r: Dict[str, Any]) -> str:
    excluded = f"  ({r['nan_excluded']} with a NaN reward left out)" if r["nan_excluded"] else ""
    if r["max_abs_diff"] is None:
        diffs = ["max |a - b|:      n/a", "mean |a - b|:     n/a"]
    else:
        diffs = [f"max |a - b|:      {r['max_abs_diff']:.6g}  (line {r['worst_line']}: a = {r['worst_a']:.6g}, "
                 f"b = {r['worst_b']:.6g})",
                 f"mean |a - b|:     {r['mean_abs_diff']:.6g}"]
    return "\n".join([
        f"a: {r['a']}",
        f"b: {r['b']}",
        f"samples:          {r['samples']}{excluded}",
        *diffs,
        f"Kendall tau:      {_fmt(r['kendall_tau'])}",
        f"tolerance:        {r['tolerance']:g}" + (f"   min tau: {r['min_tau']:g}" if r["min_tau"] is not None else ""),
        f"result:           {'PASS' if r['passed'] else 'FAIL'}",
    ])
