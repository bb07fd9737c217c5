"""NER tag schemes: what a data set's tags follow (IOB1/IOB2/IOE and IOBES as seqeval reads them, BILOU, or plain
IO entity types), checked before training, and tags turned into the form the entity metric reads."""

from __future__ import annotations

import re

from ptcli.errors import PtcliError

PREFIXED = re.compile(r"^([BIESLU])[-_](.+)$")
SCHEMES = ("auto", "IOB", "IOBES", "BILOU", "IO")


def resolve(names: list[str], declared: str) -> str:
    """The scheme the tags ``names`` follow (IOB, IOBES, BILOU or IO), checked against ``declared``; an error
    with the reason and the fix when they follow none, or not the declared one."""
    tags = [n for n in names if n != "O"]
    bare = [t for t in tags if not PREFIXED.match(t)]
    prefixes = {PREFIXED.match(t).group(1) for t in tags if PREFIXED.match(t)}
    if declared == "IO":
        if prefixes:
            raise PtcliError(f"objective.tag_scheme=IO, but tags carry B-/I- style prefixes "
                             f"({', '.join(sorted(set(tags) - set(bare))[:5])})",
                             fix="leave objective.tag_scheme=auto for prefixed tags")
        return "IO"
    if bare:
        all_bare = len(bare) == len(tags)
        raise PtcliError(f"{'every' if all_bare else 'some'} NER tag lacks a B-/I- prefix "
                         f"({', '.join(sorted(set(bare))[:6])}); entity metrics would misread them",
                         where="dataset.label_column",
                         fix=("if each tag names an entity type and a run of one tag is one entity, set "
                              "objective.tag_scheme=IO; otherwise convert the tags to BIO (B-PER, I-PER, O)")
                         if all_bare else "give every tag but O a prefix (B-, I-, E-, S-, L-, U-)")
    scheme = "BILOU" if prefixes & {"L", "U"} else ("IOBES" if prefixes & {"E", "S"} else "IOB")
    if declared not in ("auto", scheme) and not (declared == "IOBES" and scheme == "IOB"):
        used = ", ".join(sorted(prefixes))
        raise PtcliError(f"objective.tag_scheme={declared}, but the tags use the prefixes {used} ({scheme})",
                         fix=f"set objective.tag_scheme={scheme} or auto")
    return scheme


def for_metrics(tags: list[str], scheme: str) -> list[str]:
    """One sentence's tags as the entity metric reads them (seqeval's default mode): BILOU's L and U become E and
    S; IO's entity types become B-/I- runs (a run of one type is one entity)."""
    if scheme == "BILOU":
        return [("E" + t[1:] if t[0] == "L" else "S" + t[1:] if t[0] == "U" else t) if t != "O" else t for t in tags]
    if scheme == "IO":
        out, previous = [], "O"
        for t in tags:
            out.append("O" if t == "O" else ("I-" if t == previous else "B-") + t)
            previous = t
        return out
    return tags
