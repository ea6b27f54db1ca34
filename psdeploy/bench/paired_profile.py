"""Two models profiled side by side over alternating rounds, each round opening both anew.

One pair of profiles taken one after the other mixes the noise of two periods into every conv's ratio, and
on a shared machine that noise can be larger than the gap being looked for. Here the rounds alternate which
model runs first (A B, B A, ...), each conv's speed share is taken within a round, and the table gives the
median of those shares with their p10-p90 band, as ``bench`` gives a network's ratio.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from psdeploy.backends.base import ConvTime, Profile, median_profile
from psdeploy.bench.stats import ratio_spread
from psdeploy.export.counts import ConvKey


@dataclass
class ConvShare:
    """One conv of the first model beside the same conv in the other, over the rounds."""

    mine: ConvTime  # medians over the rounds
    theirs: ConvTime | None  # None where the other model has no such conv
    share: float | None = None  # median per-round share of the other's speed (its ms / mine)
    band: tuple[float, float] | None = None  # p10-p90 of the per-round shares


@dataclass
class PairedProfile:
    first: Profile  # each node's median over the rounds
    other: Profile
    rounds: int
    convs: list[ConvShare]  # the first model's convs, slowest first
    total_ratio: tuple[float, float, float]  # first's total / other's, per round: median, p10, p90


def profile_pair(profile_one: Callable[[Path], Profile], model: Path, against: Path, rounds: int) -> PairedProfile:
    """``profile_one`` run on both models ``rounds`` times, alternating which goes first."""
    mine: list[Profile] = []
    theirs: list[Profile] = []
    for r in range(rounds):
        if r % 2 == 0:
            mine.append(profile_one(model))
            theirs.append(profile_one(against))
        else:
            theirs.append(profile_one(against))
            mine.append(profile_one(model))
    first, other = median_profile(mine), median_profile(theirs)
    return PairedProfile(first, other, rounds, _conv_shares(first, other, mine, theirs),
                         ratio_spread([p.total_ms for p in mine], [p.total_ms for p in theirs]))


def _conv_shares(first: Profile, other: Profile, mine: list[Profile], theirs: list[Profile]) -> list[ConvShare]:
    """``first``'s convs (the medians of ``mine``) beside ``other``'s, each with its per-round shares' median."""
    matched = {t.key: t for t in other.convs}
    per_round: dict[ConvKey, list[float]] = {}
    for a, b in zip(mine, theirs):
        for m, t, share in a.beside(b):
            if share is not None:
                per_round.setdefault(m.key, []).append(share)
    rows = []
    for conv in first.convs:
        shares = per_round.get(conv.key)
        if shares:
            band = (float(np.percentile(shares, 10)), float(np.percentile(shares, 90)))
            rows.append(ConvShare(conv, matched.get(conv.key), float(np.median(shares)), band))
        else:
            rows.append(ConvShare(conv, matched.get(conv.key)))
    return rows
