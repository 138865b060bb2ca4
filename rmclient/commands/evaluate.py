"""``rmclient eval PAIRS.jsonl``: accuracy of a reward model on preference pairs, overall and per subset."""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from rmclient.preference import PreferenceStats

from .exits import EXIT_CODES_HELP, EXIT_OK, InputError
from .parsers import add_subcommand
from .reading import Record
from .scoring import renamed
from .stream import add_stream_arguments, stream
from .writing import json_float, write_lines

DESCRIPTION = """\
Evaluate a reward model on preference pairs: how often it gives the chosen
answer a higher reward than the rejected one.

Each line is a pair {"prompt", "chosen", "rejected"} with an optional "subset"
(a category to report separately) and, for POLAR models, the "reference" both
answers are scored against. "chosen" and "rejected" are strings or lists of
{"role", "content"} messages; without "prompt" they are whole conversations
(message lists ending with the assistant turn). A pair is correct only when
reward(chosen) > reward(rejected): ties count as wrong (the RewardBench v1
rule). Reported overall and per subset: pairs, accuracy, ties, the mean
margin, reward(chosen) - reward(rejected), and how well the margins predict
the preferences as probabilities, P(chosen wins) = sigmoid(margin) (Bradley-
Terry): the mean log-likelihood (0 is perfect, -0.693 a coin) and the
expected calibration error (ECE, 10 bins), with the Brier score in --json."""

EPILOG = f"""\
examples:
  rmclient eval pairs.jsonl --model Skywork/Skywork-Reward-Llama-3.1-8B-v0.2
  rmclient eval pairs.jsonl --model internlm/POLAR-7B --trust-remote-code --backend vllm@127.0.0.1:8000 --json
  rmclient eval pairs.jsonl --model /models/rm --plot rewards.png -o pairs.scored.jsonl

output (--json): {{"pairs", "correct", "accuracy", "ties", "mean_margin", "failed",
  "bt_log_likelihood", "calibration_error", "brier", "subsets": {{NAME: {{same keys}}}}, "subset_mean_accuracy"}}

{EXIT_CODES_HELP}"""

NO_SUBSET = "-"


@dataclass
class Tally:
    pairs: int = 0
    correct: int = 0
    ties: int = 0
    failed: int = 0
    margin_sum: float = 0.0
    margins: int = 0
    preference: PreferenceStats = field(default_factory=PreferenceStats)

    def add(self, chosen: float, rejected: float) -> None:
        self.pairs += 1
        if math.isnan(chosen) or math.isnan(rejected):
            self.failed += 1  # counted as wrong
            return
        self.correct += chosen > rejected
        self.ties += chosen == rejected
        self.margin_sum += chosen - rejected
        self.margins += 1
        self.preference.add(chosen - rejected)

    def as_dict(self) -> Dict[str, Any]:
        return {
            "pairs": self.pairs,
            "correct": self.correct,
            "accuracy": self.correct / self.pairs if self.pairs else None,
            "ties": self.ties,
            "mean_margin": self.margin_sum / self.margins if self.margins else None,
            "failed": self.failed,
            **self.preference.as_dict(),
        }


@dataclass
class Results:
    overall: Tally = field(default_factory=Tally)
    subsets: Dict[str, Tally] = field(default_factory=dict)
    has_subsets: bool = False

    def add(self, subset: Optional[str], chosen: float, rejected: float) -> None:
        self.overall.add(chosen, rejected)
        if subset is not None:
            self.has_subsets = True
        self.subsets.setdefault(NO_SUBSET if subset is None else subset, Tally()).add(chosen, rejected)

    def as_dict(self) -> Dict[str, Any]:
        out = self.overall.as_dict()
        subsets = {name: t.as_dict() for name, t in sorted(self.subsets.items())} if self.has_subsets else {}
        out["subsets"] = subsets
        accs = [s["accuracy"] for s in subsets.values()]
        out["subset_mean_accuracy"] = sum(accs) / len(accs) if accs else None
        return out


def register(sub: "argparse._SubParsersAction") -> argparse.ArgumentParser:
    p = add_subcommand(sub, "eval", description=DESCRIPTION, epilog=EPILOG,
                       summary="accuracy on preference pairs (chosen vs rejected), overall and per subset")
    p.add_argument("input", metavar="PAIRS.jsonl", help="preference pairs, one JSON object per line ('-' for stdin)")
    p.add_argument("--json", action="store_true", help="print the results as one JSON object instead of a table")
    p.add_argument("--plot", default=None, metavar="FILE.png",
                   help="save a PNG: the margin distribution around zero and the accuracy per subset "
                        "(needs matplotlib: the 'plot' extra)")
    p.add_argument("-o", "--output", default=None, metavar="OUT.jsonl",
                   help="also write every pair with its chosen_reward and rejected_reward")
    return add_stream_arguments(
        p, run, on_error="count a pair with a sample that could not be scored as wrong, report how many",
        chunk="pairs scored (and written with -o)")


def pair_samples(record: Record) -> List[Dict[str, Any]]:
    """The chosen and the rejected sample of a pair."""
    d = record.data
    for key in ("chosen", "rejected"):
        if d.get(key) is None:
            raise InputError(f"line {record.line}, field {key!r}: missing")
    if d.get("prompt") is not None:
        base = {k: d[k] for k in ("prompt", "reference", "wrapper") if k in d}
        return [{**base, "output": d["chosen"]}, {**base, "output": d["rejected"]}]
    for key in ("chosen", "rejected"):
        if not isinstance(d[key], list):
            raise InputError(
                f"line {record.line}, field 'prompt': missing (without a prompt, {key!r} must be a whole "
                f"conversation, a list of messages, not a {type(d[key]).__name__})"
            )
    if d.get("reference") is not None:
        raise InputError(f"line {record.line}, field 'prompt': missing (a POLAR pair with a reference needs it)")
    return [{"messages": d["chosen"]}, {"messages": d["rejected"]}]


def _field(record: Record, j: int, field_name: str) -> str:
    """The input field behind ``field_name`` of the chosen (``j`` = 0) or the rejected sample of a pair."""
    return renamed(field_name, ("chosen", "rejected")[j], ("output", "messages"))


def check_plot_support() -> None:
    from rmclient.extras import require

    require("matplotlib", "plot", "--plot")


def run(args: argparse.Namespace) -> int:
    if args.plot:
        check_plot_support()
    if args.output == "-":
        raise InputError("-o/--output takes a file here (the results go to stdout)")
    results = Results()
    chosen_all: List[float] = []
    rejected_all: List[float] = []

    def write(out: Any, records: List[Record], rewards: List[float], scored: List[Any]) -> None:
        rows = []
        for k, record in enumerate(records):
            c, r = rewards[2 * k], rewards[2 * k + 1]
            subset = record.data.get("subset")
            results.add(None if subset is None else str(subset), c, r)
            if args.plot:
                chosen_all.append(c)
                rejected_all.append(r)
            rows.append({**record.data, "chosen_reward": json_float(c), "rejected_reward": json_float(r)})
        write_lines(out, rows)

    stream(args, desc="eval", unit="pairs", samples_of=pair_samples, write=write, field_of=_field,
           nan_effect="count such pairs as wrong")
    if results.overall.pairs == 0:
        raise InputError(f"{args.input}: no preference pairs")
    summary = results.as_dict()
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(format_table(results))
    if results.overall.failed:
        print(f"warning: {results.overall.failed} pairs had a sample that could not be scored; counted as wrong",
              file=sys.stderr)
    if args.plot:
        plot(chosen_all, rejected_all, args.plot, results, model=args.model, data=args.input)
        print(f"plot saved to {args.plot}", file=sys.stderr)
    return EXIT_OK


def format_table(results: Results) -> str:
    rows = []
    if results.has_subsets:
        rows += [(name, t) for name, t in sorted(results.subsets.items())]
    rows.append(("overall", results.overall))
    width = max(10, max(len(name) for name, _ in rows))
    head = (f"{'subset':<{width}}  {'pairs':>7}  {'accuracy':>8}  {'ties':>6}  {'mean margin':>12}  "
            f"{'BT log-lik':>10}  {'ECE':>6}")
    lines = [head, "-" * len(head)]
    for i, (name, t) in enumerate(rows):
        d = t.as_dict()
        acc = "n/a" if d["accuracy"] is None else f"{d['accuracy']:.4f}"
        margin = "n/a" if d["mean_margin"] is None else f"{d['mean_margin']:.4f}"
        ll = "n/a" if d["bt_log_likelihood"] is None else f"{d['bt_log_likelihood']:.4f}"
        ece = "n/a" if d["calibration_error"] is None else f"{d['calibration_error']:.4f}"
        if name == "overall" and len(rows) > 1:
            lines.append("-" * len(head))
        lines.append(f"{name:<{width}}  {d['pairs']:>7}  {acc:>8}  {d['ties']:>6}  {margin:>12}  {ll:>10}  {ece:>6}")
    return "\n".join(lines)


#: Okabe-Ito colours (readable with every kind of colour blindness).
_BLUE, _VERMILLION, _GREY = "#0072B2", "#D55E00", "#999999"


def plot(chosen: List[float], rejected: List[float], path: str, results: "Results", *, model: str, data: str) -> None:
    """What a reward-model evaluation is read from: the margin (chosen - rejected) of every pair around
    zero, and the accuracy of every subset with its count; the model and the data in the title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    margins = [c - r for c, r in zip(chosen, rejected) if not (math.isnan(c) or math.isnan(r))]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    if margins:
        lo, hi = min(margins + [0.0]), max(margins + [0.0])
        width = (hi - lo) / 40 or 0.05
        first = math.floor(lo / width)  # zero is a bin edge: no bin holds both colours
        bins = [width * k for k in range(first, math.ceil(hi / width) + 2)]
        left.hist([m for m in margins if m > 0], bins=bins, color=_BLUE, label="chosen wins (margin > 0)")
        left.hist([m for m in margins if m <= 0], bins=bins, color=_VERMILLION, label="rejected wins or tie")
    left.axvline(0.0, color="black", linestyle="--", linewidth=1)
    left.set_xlabel("margin = reward(chosen) - reward(rejected)")
    left.set_ylabel("pairs")
    wins = sum(m > 0 for m in margins)
    left.set_title(f"{wins} of {len(margins)} pairs right of zero")
    left.legend(loc="upper left", fontsize=8, frameon=False)

    rows = [(name, t) for name, t in sorted(results.subsets.items())] if results.has_subsets else []
    rows.append(("overall", results.overall))
    names = [name for name, _ in rows]
    accuracies = [t.as_dict()["accuracy"] or 0.0 for _, t in rows]
    colours = [_BLUE] * (len(rows) - 1) + [_GREY if len(rows) > 1 else _BLUE]
    bars = right.barh(names, accuracies, color=colours)
    for bar, (_, t) in zip(bars, rows):
        d = t.as_dict()
        right.text(min(bar.get_width() + 0.01, 0.86), bar.get_y() + bar.get_height() / 2,
                   f"{d['accuracy'] or 0:.2f}  (n={d['pairs']})", va="center", fontsize=8)
    right.axvline(0.5, color="black", linestyle=":", linewidth=1)
    right.set_xlim(0, 1)
    right.invert_yaxis()
    right.set_xlabel("accuracy (ties count as wrong)")
    right.set_title("accuracy per subset" if len(rows) > 1 else "accuracy")
    fig.suptitle(f"{model} on {data}: accuracy {results.as_dict()['accuracy'] or 0:.4f} "
                 f"({results.overall.pairs} pairs)", fontsize=11)
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        raise InputError(f"cannot write the plot to {path}: {exc.strerror or exc}") from exc
    finally:
        plt.close(fig)
