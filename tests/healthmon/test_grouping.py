"""The grouper: what it masks, what it groups together and apart, and the stability the
product relies on (ids that never change, agree across processes and survive a
restart)."""

from __future__ import annotations

import csv
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from healthmon.grouping import Grouper, group_lines
from healthmon.grouping.masking import masked_tokens

SAMPLES = Path(__file__).parent / "fixtures" / "loghub-sample"
PROJECT_ROOT = Path(__file__).resolve().parents[2]


def sample_messages() -> list[str]:
    messages = []
    for path in sorted(SAMPLES.glob("*/*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            messages += [row["Content"] for row in csv.DictReader(handle)]
    return messages


# Templates of made-up services, with values of the kinds masking must see through and
# words a person would read as variable (user names, package names).
TEMPLATES = [
    "Failed password for {word} from {ip} port {port} ssh2",
    "Connection from {ip}:{port} closed after {ms} ms",
    "Worker {n} finished job {uuid} in {seconds}s",
    "GET /api/orders/{n} returned {status}",
    "cache miss ratio={ratio} entries={n} evicted={n}",
    "Deleting block blk_{n} file /data/current/subdir{n}/blk_{n}",
    "Scheduler tick",
    "Disk {hex} usage {ratio}%",
]
WORDS = ["admin", "oracle", "test", "guest", "deploy", "ubuntu", "postgres", "git"]


def render(template: str, rng: random.Random) -> str:
    return template.format(
        word=rng.choice(WORDS),
        ip=".".join(str(rng.randrange(1, 255)) for _ in range(4)),
        port=rng.randrange(1024, 65535),
        ms=rng.randrange(1, 5000),
        n=rng.randrange(0, 10**6),
        uuid=f"{rng.getrandbits(128):032x}",
        seconds=round(rng.random() * 100, 2),
        status=rng.choice([200, 201, 404, 500]),
        ratio=round(rng.random(), 3),
        hex=f"0x{rng.getrandbits(32):08x}",
    )


def generated(count: int, seed: int, templates: list[str] = TEMPLATES) -> list[tuple[int, str]]:
    """(template index, message) pairs."""
    rng = random.Random(seed)
    picks = [rng.randrange(len(templates)) for _ in range(count)]
    return [(index, render(templates[index], rng)) for index in picks]


# -- masking -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "tokens"),
    [
        ("Accepted from 10.0.0.1:5432", ["Accepted", "from", "<*>"]),
        ("Deleting /var/lib/x/blk_12 now", ["Deleting", "<*>", "now"]),
        ("Fetched https://example.com/a?b=1 ok", ["Fetched", "<*>", "ok"]),
        ("id 3f2b1c9e-1d2a-4c3b-9a8f-0e1d2c3b4a59 gone", ["id", "<*>", "gone"]),
        ("uid=0 euid=0 tty=ssh ruser= rhost=host", ["uid=<*>", "euid=<*>", "tty=<*>", "ruser="]),
        ("took 250 ms (0.25 s) total", ["took", "<*>", "total"]),
        ("sent 2034 bytes (1.98 KB) ok", ["sent", "<*>", "ok"]),
        ("index:0 ret:false", ["index:<*>", "ret:<*>"]),
        ("lookup api.github.com:443 failed", ["lookup", "<*>", "failed"]),
        ('acquire tag="View Lock", uid=7', ["acquire", 'tag="<*>",', "uid=<*>"]),
        ("connection from 10.0.0.9 () at Fri Jun 17 07:07:00 2005", ["connection", "from", "<*>"]),
    ],
)
def test_masking_hides_values_of_every_common_kind(message: str, tokens: list[str]) -> None:
    assert masked_tokens(message)[: len(tokens)] == tokens


def test_masking_keeps_words_and_edge_punctuation() -> None:
    assert masked_tokens("Session: 42 initialized by client (uid=7).") == [
        "Session:",
        "<*>",
        "initialized",
        "by",
        "client",
        "(uid=<*>).",
    ]


# -- grouping ----------------------------------------------------------------------------


def test_messages_of_one_template_share_a_fingerprint() -> None:
    lines = generated(400, seed=1)
    fingerprints = group_lines([message for _, message in lines])
    by_template: dict[int, set[str]] = {}
    for (index, _), fingerprint in zip(lines, fingerprints, strict=True):
        by_template.setdefault(index, set()).add(fingerprint)
    assert all(len(ids) == 1 for ids in by_template.values()), by_template
    assert len({next(iter(ids)) for ids in by_template.values()}) == len(by_template)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Link error", "Link ok"),
        ("Starting TrustedInstaller initialization.", "Ending TrustedInstaller initialization."),
        ("normal", "warning"),
        ("Failed password for root from 1.2.3.4", "Accepted password for root from 1.2.3.4"),
        (
            "[instance: 9f3e] VM Started (Lifecycle Event)",
            "[instance: 9f3e] VM Paused (Lifecycle Event)",
        ),
        (
            '10.0.0.1 "GET /v2/servers HTTP/1.1" status: 200 len: 3',
            '10.0.0.1 "POST /v2/servers HTTP/1.1" status: 200 len: 3',
        ),
    ],
)
def test_messages_differing_in_a_meaningful_word_stay_apart(first: str, second: str) -> None:
    one, two = group_lines([first, second])
    assert one != two


def test_a_template_generalises_under_the_id_it_was_created_with() -> None:
    grouper = Grouper()
    first = grouper.fingerprint("Failed password for admin from 10.1.2.3 port 22 ssh2")
    assert first.template == "Failed password for admin from <*> port <*>"
    second = grouper.fingerprint("Failed password for oracle from 10.9.8.7 port 23 ssh2")
    assert second.id == first.id
    assert second.template == "Failed password for <*> from <*> port <*>"
    assert grouper.fingerprint("Failed password for admin from 10.1.2.4 port 2 ssh2") == second


def test_group_lines_gives_one_fingerprint_per_line_from_a_fresh_grouper() -> None:
    messages = sample_messages()
    fingerprints = group_lines(messages)
    assert len(fingerprints) == len(messages)
    assert fingerprints == group_lines(messages)
    assert all(isinstance(fingerprint, str) and fingerprint for fingerprint in fingerprints)


# -- stability ---------------------------------------------------------------------------


def test_a_groups_fingerprint_does_not_change_as_10000_lines_of_other_groups_arrive() -> None:
    grouper = Grouper()
    watched = [message for _, message in generated(50, seed=2, templates=TEMPLATES[:3])]
    before = [grouper.fingerprint(message).id for message in watched]
    others = [
        "Volume {hex} remounted read-only after {n} errors",
        "Request {uuid} took {ms} ms on {ip}",
        "User {word} logged in from {ip}",
        "Queue depth {n} above {n}",
        "GET /health returned {status} in {ms}ms",
    ]
    for _, message in generated(10_000, seed=3, templates=others):
        grouper.fingerprint(message)
    assert [grouper.fingerprint(message).id for message in watched] == before
    assert len(set(before)) == 3


def test_different_interleavings_give_the_same_fingerprints() -> None:
    lines = generated(600, seed=4)
    by_template: dict[int, list[str]] = {}
    for index, message in lines:
        by_template.setdefault(index, []).append(message)
    # Another interleaving of the same lines: each group's lines keep their order.
    rng = random.Random(5)
    queues = {index: list(messages) for index, messages in by_template.items()}
    shuffled: list[str] = []
    while queues:
        index = rng.choice(sorted(queues))
        shuffled.append(queues[index].pop(0))
        if not queues[index]:
            del queues[index]
    one, two = Grouper(), Grouper()
    first_order = {message: one.fingerprint(message).id for _, message in lines}
    second_order = {message: two.fingerprint(message).id for message in shuffled}
    for messages in by_template.values():
        assert second_order[messages[0]] == first_order[messages[0]]
    assert second_order == first_order


def test_rebuilding_from_the_saved_templates_reproduces_the_fingerprints() -> None:
    messages = sample_messages() + [message for _, message in generated(500, seed=6)]
    grouper = Grouper()
    given = [grouper.fingerprint(message).id for message in messages]
    saved = json.loads(json.dumps(grouper.templates()))  # what the storage keeps
    rebuilt = Grouper.from_templates((id, template) for id, template in saved)
    assert [rebuilt.fingerprint(message).id for message in messages] == given
    assert sorted(rebuilt.templates()) == sorted(grouper.templates())


def test_a_grouper_that_learns_anothers_templates_agrees_with_it() -> None:
    messages = [message for _, message in generated(300, seed=7)]
    teacher, learner = Grouper(), Grouper()
    given = [teacher.fingerprint(message).id for message in messages]
    # The learner saw a group first, on its own: the same pattern, the same id.
    learner.fingerprint(messages[0])
    for id, template in teacher.templates():
        learner.learn(id, template)
    assert [learner.fingerprint(message).id for message in messages] == given
    assert len(learner) == len(teacher)


def test_two_processes_give_the_same_fingerprints() -> None:
    messages = sample_messages() + [message for _, message in generated(200, seed=8)]
    script = (
        "import json, sys\n"
        "from healthmon.grouping import group_lines\n"
        "print(json.dumps(group_lines(json.load(sys.stdin))))\n"
    )
    results = []
    for seed in ("1", "2"):  # a different hash seed in each, as two real processes have
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=json.dumps(messages),
            capture_output=True,
            text=True,
            check=True,
            cwd=PROJECT_ROOT,
            env={"PYTHONHASHSEED": seed, "PATH": "/usr/bin:/bin"},
        )
        results.append(json.loads(done.stdout))
    assert results[0] == results[1] == group_lines(messages)


def test_the_remembered_forms_can_be_forgotten_without_changing_an_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    messages = [message for _, message in generated(2_000, seed=9)]
    expected = group_lines(messages)
    monkeypatch.setattr("healthmon.grouping.grouper.SEEN_LIMIT", 7)
    monkeypatch.setattr("healthmon.grouping.masking.WORDS_LIMIT", 11)
    assert group_lines(messages) == expected
