"""The grouper: learns templates from masked messages, one message at a time, and gives
each group a fingerprint that never changes.

How a message finds its group (Drain's idea, on masked tokens):

1. Mask it (`masking.masked_tokens`). A masked form seen before goes straight to its
   group: most lines of a real log repeat a masked form.
2. Candidates are the groups with the same number of tokens and the same first two
   tokens (as Drain's default depth: the first words of a message are nearly always
   constant, "Failed password for ...", or a masked value, "<*> open through proxy").
3. A group whose template covers the message (every constant of the template is in the
   message at its place) takes it; else the most similar group takes it when at least
   `SIMILARITY` of the positions hold the same token, and the template's differing
   positions become the wildcard; else the message starts a new group.

Stability, by construction:

- A group's id is given when the group is created: a hash of the masked form of the
  message that created it. It stays while the template generalises, so it never
  changes as the group grows or as other groups appear.
- Two processes that meet the same new pattern independently create the same id (the
  storage keeps one row per id, under a unique constraint).
- The learned state is the list of (id, template) pairs: `Grouper.from_templates`
  rebuilds a grouper that gives the same fingerprints, so a restart, or another
  process that loads the stored templates, agrees with the process that learned them.
  The choice between candidates never depends on the order the groups were learned in
  (ties go to the smaller id).
"""

from __future__ import annotations

from collections.abc import Iterable

from healthmon.grouping.fingerprints import Fingerprint, fingerprint_id
from healthmon.grouping.masking import WILDCARD, Masker
from healthmon.grouping.tracebacks import traceback_fingerprint

# Share of positions that must hold the same token for a message to join a group.
# Masked values count as the same token, so what it weighs is the constant words: one
# differing word in seven or more joins ("Failed password for admin from <*> port <*>"
# and "... oracle ..."), one in six does not ("[instance: <*>] VM Started" and "...
# VM Paused"). Chosen on the labelled LogHub samples: .8 to .95 all pass the target;
# .85 is best on average without splitting templates of short messages more.
SIMILARITY = 0.85
# Masked forms remembered for the fast path. Past it the memory is dropped and
# rebuilt: forgetting costs time, and the group that took a form still covers it, so
# `_find` finds it again (a test drops the memory all the time and compares).
SEEN_LIMIT = 200_000


class _Group:
    __slots__ = ("constants", "fingerprint", "id", "tokens")

    def __init__(self, id: str, tokens: list[str]) -> None:
        self.id = id
        self.tokens = tokens
        self.constants = sum(token != WILDCARD for token in tokens)
        self.fingerprint = Fingerprint(id, " ".join(tokens))

    def generalise(self, tokens: list[str]) -> None:
        merged = [
            theirs if theirs == mine else WILDCARD
            for mine, theirs in zip(tokens, self.tokens, strict=True)
        ]
        if merged != self.tokens:
            self.tokens = merged
            self.constants = sum(token != WILDCARD for token in merged)
            self.fingerprint = Fingerprint(self.id, " ".join(merged))


def _bucket(tokens: list[str]) -> tuple[int, str]:
    """Where a message's candidate groups are: its length and its first two tokens."""
    return (len(tokens), " ".join(tokens[:2]))


class Grouper:
    """Groups messages one at a time (`fingerprint`), as ingest calls it on each record.

    Not thread-safe: one per thread or process, rebuilt from the stored templates."""

    def __init__(self, similarity: float = SIMILARITY) -> None:
        self.similarity = similarity
        self._buckets: dict[tuple[int, str], list[_Group]] = {}
        self._by_id: dict[str, _Group] = {}
        self._seen: dict[str, _Group] = {}
        self._masker = Masker()

    def __len__(self) -> int:
        return len(self._by_id)

    def fingerprint(self, message: str) -> Fingerprint:
        if "\n" in message:
            # A traceback groups by what raised it; its fingerprint is learned nowhere.
            traced = traceback_fingerprint(message)
            if traced is not None:
                return traced
        tokens = self._masker.tokens(message)
        form = " ".join(tokens)
        group = self._seen.get(form)
        if group is None:
            group = self._find(tokens)
            if group is None:
                group = _Group(fingerprint_id(form), tokens)
                self._add(group)
            else:
                group.generalise(tokens)
            if len(self._seen) >= SEEN_LIMIT:
                self._seen.clear()
            self._seen[form] = group
        return group.fingerprint

    def _find(self, tokens: list[str]) -> _Group | None:
        """The group a message of these tokens belongs to, if any: the most specific
        group covering it, else the most similar one above the threshold."""
        length = len(tokens)
        best: _Group | None = None
        best_rank: tuple[bool, float, int] = (False, -1.0, -1)
        for group in self._buckets.get(_bucket(tokens), ()):
            same = 0
            covered = True
            for mine, theirs in zip(tokens, group.tokens, strict=True):
                if mine == theirs:
                    same += 1
                elif theirs != WILDCARD:
                    covered = False
            similarity = same / length if length else 1.0
            if not covered and similarity < self.similarity:
                continue
            # Covering beats similar; then more alike, more specific, and the smaller id,
            # so the choice does not depend on the order the groups were learned in.
            rank = (covered, similarity, group.constants)
            if rank > best_rank or (rank == best_rank and best is not None and group.id < best.id):
                best, best_rank = group, rank
        return best

    def _add(self, group: _Group) -> None:
        self._by_id[group.id] = group
        self._buckets.setdefault(_bucket(group.tokens), []).append(group)

    def learn(self, id: str, template: str) -> None:
        """Take in a group another process learned (or this one, before a restart).
        A group already known under the id keeps what both templates share."""
        tokens = template.split(" ") if template else []
        known = self._by_id.get(id)
        if known is None:
            self._add(_Group(id, tokens))
        elif len(known.tokens) == len(tokens):
            known.generalise(tokens)

    def retire(self, id: str) -> Fingerprint | None:
        """Give up a group this process created, when another group (learned since,
        from what another process stored) takes its template: the messages that went to
        it go to that group from now on, which is returned. None when no other group
        takes it (the group stays) or the id is not a learned group (a traceback's)."""
        group = self._by_id.get(id)
        if group is None:
            return None
        bucket = self._buckets[_bucket(group.tokens)]
        bucket.remove(group)
        other = self._find(group.tokens)
        if other is None:
            bucket.append(group)
            return None
        del self._by_id[id]
        other.generalise(group.tokens)
        self._seen = {form: other if g is group else g for form, g in self._seen.items()}
        return other.fingerprint

    def templates(self) -> list[tuple[str, str]]:
        """The learned state, as the storage keeps it: (fingerprint id, template)."""
        return [(group.id, group.fingerprint.template) for group in self._by_id.values()]

    @classmethod
    def from_templates(
        cls, pairs: Iterable[tuple[str, str]], similarity: float = SIMILARITY
    ) -> Grouper:
        grouper = cls(similarity)
        for id, template in pairs:
            grouper.learn(id, template)
        return grouper


def group_lines(lines: list[str]) -> list[str]:
    """One fingerprint id per message, from a fresh grouper with the product's one
    configuration, exactly as ingest groups them."""
    fingerprint = Grouper().fingerprint
    return [fingerprint(line).id for line in lines]
