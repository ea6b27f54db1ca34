"""Rewrite step: every PSConv read into the canonical lattice, then lowered, with BatchNorm and
channel permutations folded into the neighbouring convs."""
