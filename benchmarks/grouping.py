"""`bin/manage bench_grouping`: how well and how fast `healthmon.grouping` groups log
messages, beside drain3 with its default configuration in the same run.

- Grouping Accuracy (GA, logparser's definition) per system of the labelled LogHub
  samples in `--data` (one folder per system holding its
  `*_structured_corrected.csv`, or any `*structured*.csv`), and the mean.
- On a mixed file of `--mixed-lines` messages drawn from all those systems in a seeded
  random interleaving: lines per second (best of `--rounds`, the two parsers taking
  turns so both suffer the same noise from a shared machine), fingerprints per true
  group (a true group is a system's template) and GA over the whole file. Lines per
  second also on every distinct line once (no repeats: the grouper's memories of seen
  words and forms help least there).

Targets: mean GA of at least .93, faster than drain3, at most 1.2 fingerprints per
true group on the mixed file.
"""

from __future__ import annotations

import csv
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.core.management.base import CommandError

from benchmarks.harness import Benchmark
from healthmon.grouping import group_lines

TARGET_GA = 0.93
TARGET_FINGERPRINTS_PER_GROUP = 1.2

GroupLines = Callable[[list[str]], Sequence[Hashable]]


@dataclass(frozen=True)
class LabelledSystem:
    name: str
    messages: list[str]
    templates: list[str]


def load_systems(data: Path) -> list[LabelledSystem]:
    if not data.is_dir():
        raise CommandError(f"No labelled log samples at {data} (see --data).")
    systems = []
    for folder in sorted(path for path in data.iterdir() if path.is_dir()):
        files = sorted(folder.glob("*_structured_corrected.csv")) or sorted(
            folder.glob("*structured*.csv")
        )
        if not files:
            continue
        with files[0].open(encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle))
        systems.append(
            LabelledSystem(
                folder.name,
                [row["Content"] for row in rows],
                [row["EventTemplate"] for row in rows],
            )
        )
    if not systems:
        raise CommandError(f"No system folder with a *structured*.csv file in {data}.")
    return systems


def grouping_accuracy(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> float:
    """logparser's GA: a line is right when the lines sharing its predicted group are
    exactly the lines sharing its true template."""
    by_prediction: dict[Hashable, set[int]] = defaultdict(set)
    by_truth: dict[Hashable, set[int]] = defaultdict(set)
    for line, (guess, true) in enumerate(zip(predicted, truth, strict=True)):
        by_prediction[guess].add(line)
        by_truth[true].add(line)
    # Each (predicted, true) pair is compared once: the sets can be large.
    pairs: dict[tuple[Hashable, Hashable], int] = defaultdict(int)
    for pair in zip(predicted, truth, strict=True):
        pairs[pair] += 1
    right = sum(
        count for (guess, true), count in pairs.items() if by_prediction[guess] == by_truth[true]
    )
    return right / len(truth) if truth else 1.0


def drain3_group_lines() -> GroupLines | None:
    """drain3's default configuration (a fresh `TemplateMiner()` per call), or None
    when drain3 (a dev dependency) is not installed."""
    try:
        from drain3 import TemplateMiner
    except ImportError:
        return None
    # drain3 logs each new cluster at INFO (that would be timed too), and warns that
    # it has no drain3.ini at every start: its defaults are what is measured.
    logging.getLogger("drain3").setLevel(logging.ERROR)

    def group(lines: list[str]) -> list[int]:
        miner = TemplateMiner()
        return [miner.add_log_message(line)["cluster_id"] for line in lines]

    return group


def mixed_file(
    systems: list[LabelledSystem], size: int, seed: int
) -> tuple[list[str], list[tuple[str, str]]]:
    """`size` messages drawn at random (seeded) from all systems' lines, with their
    true group: (system, template)."""
    pool = [
        (message, (system.name, template))
        for system in systems
        for message, template in zip(system.messages, system.templates, strict=True)
    ]
    rng = random.Random(seed)
    drawn = [pool[rng.randrange(len(pool))] for _ in range(size)]
    return [message for message, _ in drawn], [truth for _, truth in drawn]


@dataclass
class MixedResult:
    best_seconds: float = float("inf")
    best_distinct_seconds: float = float("inf")
    fingerprints: int = 0
    accuracy: float = 0.0


class GroupingBenchmark(Benchmark):
    """`bin/manage bench_grouping` (its arguments are parsed there), writing to `stdout`."""

    def run(self, **options: Any) -> None:
        data = Path(options["data"])
        size, rounds = options["mixed_lines"], options["rounds"]
        if size < 1 or rounds < 1:
            raise CommandError("--mixed-lines and --rounds must be at least 1.")
        systems = load_systems(data)
        parsers: dict[str, GroupLines] = {"healthmon": group_lines}
        reference = drain3_group_lines()
        if reference is not None:
            parsers["drain3"] = reference
        self.stdout.write(
            f"bench_grouping: GA on {len(systems)} systems in {data}; "
            f"{size:,} mixed lines (seed {options['seed']}), best of {rounds} rounds"
        )
        if reference is None:
            self.stdout.write("drain3 is not installed (a dev dependency): no reference.")
        mean_accuracy = self.report_accuracy(systems, parsers)
        self.report_mixed(systems, parsers, size, rounds, options["seed"], mean_accuracy)

    def report_accuracy(
        self, systems: list[LabelledSystem], parsers: dict[str, GroupLines]
    ) -> float:
        """Prints GA per system and the means; returns healthmon's mean."""
        self.stdout.write("")
        self.stdout.write(f"{'GA':<12}{'lines':>7}" + "".join(f"{n:>12}" for n in parsers))
        totals = dict.fromkeys(parsers, 0.0)
        for system in systems:
            row = f"{system.name:<12}{len(system.messages):>7}"
            for name, parse in parsers.items():
                accuracy = grouping_accuracy(parse(system.messages), system.templates)
                totals[name] += accuracy
                row += f"{accuracy:>12.3f}"
            self.stdout.write(row)
        means = {name: total / len(systems) for name, total in totals.items()}
        self.stdout.write(f"{'mean':<19}" + "".join(f"{m:>12.3f}" for m in means.values()))
        return means["healthmon"]

    def report_mixed(
        self,
        systems: list[LabelledSystem],
        parsers: dict[str, GroupLines],
        size: int,
        rounds: int,
        seed: int,
        mean_accuracy: float,
    ) -> None:
        names = list(parsers)
        lines, truth = mixed_file(systems, size, seed)
        true_groups = len(set(truth))
        # Each distinct line once, in a seeded order: no message repeats, so memories of
        # what was seen help least. A real log sits between this and the mixed file.
        distinct = sorted({message for system in systems for message in system.messages})
        random.Random(seed).shuffle(distinct)
        results = {name: MixedResult() for name in names}
        for _ in range(rounds):
            for name in names:
                result = results[name]
                started = time.perf_counter()
                parsers[name](distinct)
                elapsed = time.perf_counter() - started
                result.best_distinct_seconds = min(result.best_distinct_seconds, elapsed)
                started = time.perf_counter()
                predicted = parsers[name](lines)
                elapsed = time.perf_counter() - started
                result.best_seconds = min(result.best_seconds, elapsed)
                result.fingerprints = len(set(predicted))
                result.accuracy = grouping_accuracy(predicted, truth)
        self.stdout.write("")
        self.stdout.write(
            f"Mixed file: {size:,} lines of {len(systems)} systems, {true_groups} true groups"
        )
        self.stdout.write(f"{'':<28}" + "".join(f"{name:>12}" for name in names))
        rows = [
            ("lines/s", lambda r: f"{size / r.best_seconds:>12,.0f}"),
            (
                f"lines/s, {len(distinct):,} distinct once",
                lambda r: f"{len(distinct) / r.best_distinct_seconds:>12,.0f}",
            ),
            ("fingerprints", lambda r: f"{r.fingerprints:>12,}"),
            ("fingerprints per true group", lambda r: f"{r.fingerprints / true_groups:>12.2f}"),
            ("GA on the mixed file", lambda r: f"{r.accuracy:>12.3f}"),
        ]
        for label, cell in rows:
            self.stdout.write(f"{label:<28}" + "".join(cell(results[n]) for n in names))
        ours = results["healthmon"]
        per_group = ours.fingerprints / true_groups
        verdicts = [
            f"mean GA >= {TARGET_GA}: {_yes(mean_accuracy >= TARGET_GA)}",
            f"fingerprints per true group <= {TARGET_FINGERPRINTS_PER_GROUP}: "
            f"{_yes(per_group <= TARGET_FINGERPRINTS_PER_GROUP)}",
        ]
        if "drain3" in results:
            ratio = results["drain3"].best_seconds / ours.best_seconds
            verdicts.append(f"faster than drain3: {_yes(ratio > 1)} (x{ratio:.2f})")
        self.stdout.write("")
        self.stdout.write("Targets: " + "; ".join(verdicts))


def _yes(met: bool) -> str:
    return "yes" if met else "NO"
