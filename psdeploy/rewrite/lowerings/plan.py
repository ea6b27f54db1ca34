"""Plan grouped branches over a PSConv lattice: channel orders, group counts, shuffles.

Each dilation rate becomes one grouped conv. A grouped conv with G groups per card
needs its input blocks cut into G contiguous chunks, each feeding a disjoint set
of output blocks. Input order (pi, folded into conv1/bn1 rows) and output order
(sigma, folded into bn2 and conv3 columns) are free; we search them so that no
kernel block is wasted and as few branches as possible need their output blocks
re-ordered (a channel shuffle: the only data movement left). For the released
lattice this gives d=2 and d=4 with 4 groups/card and d=1 with 2 groups/card,
and proves two shuffles are the minimum: every pair of the three branches
disagrees on the (pi, sigma) it needs.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class BranchPlan:
    dilation: int
    groups_per_card: int
    in_order: tuple[int, ...]
    out_sets: tuple[frozenset[int], ...]  # output blocks fed by each input chunk
    wasted_blocks: int  # kernel blocks inside the groups that hold no live kernel

    def out_order(self, sigma: tuple[int, ...]) -> tuple[int, ...]:
        """Row order this branch writes: sigma's order where chunks agree, sorted otherwise."""
        if self.aligned(sigma):
            return sigma
        return tuple(b for s in self.out_sets for b in sorted(s))

    def aligned(self, sigma: tuple[int, ...]) -> bool:
        k = len(sigma) // self.groups_per_card
        return all(frozenset(sigma[c * k:(c + 1) * k]) == s for c, s in enumerate(self.out_sets))


@dataclass(frozen=True)
class LayerPlan:
    in_order: tuple[int, ...]
    out_order: tuple[int, ...]
    branches: tuple[BranchPlan, ...]

    @property
    def shuffled(self) -> list[BranchPlan]:
        return [b for b in self.branches if not b.aligned(self.out_order)]

    @property
    def shuffle_count(self) -> int:
        """Distinct re-orderings needed (branches sharing an order are summed first)."""
        return len({b.out_order(self.out_order) for b in self.shuffled})


def plan_branch(live: np.ndarray, dilation: int, in_order: tuple[int, ...]) -> BranchPlan:
    """Most groups per card that keep every live block (o, i) inside one group."""
    parts = len(in_order)
    for g in [d for d in range(parts, 0, -1) if parts % d == 0]:
        k = parts // g
        chunks = [in_order[c * k:(c + 1) * k] for c in range(g)]
        outs = [frozenset(o for o in range(parts) for i in ch if live[o, i]) for ch in chunks]
        if any(len(s) > k for s in outs) or sum(len(s) for s in outs) != len(frozenset().union(*outs)):
            continue
        # Give chunks whose outputs are not constrained the blocks nobody claimed.
        free = [b for b in range(parts) if not any(b in s for s in outs)]
        filled = []
        for s in outs:
            need = k - len(s)
            filled.append(frozenset(s | set(free[:need])))
            free = free[need:]
        wasted = sum(k * k for _ in chunks) - int(live.sum())
        return BranchPlan(dilation, g, in_order, tuple(filled), wasted)
    raise AssertionError("groups=1 always fits")


def plan_layer(live_by_rate: dict[int, np.ndarray]) -> LayerPlan:
    """Search input/output block orders: no waste first, then fewest shuffles, then identity-like."""
    parts = next(iter(live_by_rate.values())).shape[0]
    best: tuple[tuple[int, int, int], LayerPlan] | None = None
    identity = tuple(range(parts))
    orders = list(itertools.permutations(identity)) if parts <= 6 else [identity]
    for pi in orders:
        branches = tuple(plan_branch(live, d, pi) for d, live in sorted(live_by_rate.items()) if live.any())
        for sigma in orders:
            plan = LayerPlan(pi, sigma, branches)
            key = (
                sum(b.wasted_blocks for b in branches),
                plan.shuffle_count,
                int(pi != sigma) + int(pi != identity),
            )
            if best is None or key < best[0]:
                best = (key, plan)
    assert best is not None
    return best[1]
