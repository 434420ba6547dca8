"""A smoke test of `manage.py bench_grouping` on a tiny data folder: it reports GA per
system and the mean, and the mixed-file figures, beside drain3. (The numbers are not
tested for speed: benchmarks are run by hand.)"""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from benchmarks.grouping import grouping_accuracy, load_systems
from healthmon.grouping import group_lines

SAMPLES = Path(__file__).parent / "fixtures" / "loghub-sample"


def run(*arguments: str) -> list[str]:
    out = StringIO()
    call_command("bench_grouping", *arguments, stdout=out)
    return out.getvalue().splitlines()


def row(lines: list[str], label: str) -> list[str]:
    """The cells after a row's label (the label ends at the first run of spaces)."""
    (found,) = [line for line in lines if re.split(r"\s{2,}", line)[0] == label]
    return found[len(label) :].split()


def test_it_prints_ga_per_system_and_the_mean_beside_drain3() -> None:
    lines = run("--data", str(SAMPLES), "--mixed-lines", "300", "--rounds", "1")
    assert lines[0].startswith("bench_grouping: GA on 3 systems in ")
    assert row(lines, "GA") == ["lines", "healthmon", "drain3"]
    accuracies = []
    for system in load_systems(SAMPLES):
        count, ours, theirs = row(lines, system.name)
        assert int(count) == len(system.messages)
        accuracy = grouping_accuracy(group_lines(system.messages), system.templates)
        assert ours == f"{accuracy:.3f}"
        assert 0.0 <= float(theirs) <= 1.0
        accuracies.append(accuracy)
    assert row(lines, "mean")[0] == f"{sum(accuracies) / len(accuracies):.3f}"
    assert "Mixed file: 300 lines of 3 systems" in "\n".join(lines)
    assert len(row(lines, "lines/s, 80 distinct once")) == 2
    for label in ("lines/s", "fingerprints per true group", "GA on the mixed file"):
        assert len(row(lines, label)) == 2
    assert any(line.startswith("Targets: mean GA >= 0.93: ") for line in lines)


def test_it_refuses_a_folder_without_labelled_systems(tmp_path: Path) -> None:
    with pytest.raises(CommandError, match="No system folder"):
        run("--data", str(tmp_path))
    with pytest.raises(CommandError, match="No labelled log samples"):
        run("--data", str(tmp_path / "missing"))


@pytest.mark.parametrize(
    ("predicted", "truth", "accuracy"),
    [
        (["a", "a", "b"], ["x", "x", "y"], 1.0),
        (["a", "a", "a"], ["x", "x", "y"], 0.0),  # one group merging two templates
        (["a", "b", "c"], ["x", "x", "y"], 1 / 3),  # a template split in two
    ],
)
def test_grouping_accuracy_follows_logparsers_definition(
    predicted: list[str], truth: list[str], accuracy: float
) -> None:
    assert grouping_accuracy(predicted, truth) == pytest.approx(accuracy)
