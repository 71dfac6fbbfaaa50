"""Splitting an integer budget over groups: equal shares, capped, summing exactly."""
from typing import List, Sequence

__all__ = ["water_fill"]


def water_fill(total: int, caps: Sequence[int]) -> List[int]:
    """Split ``total`` units over groups as equally as possible, group ``i`` taking at most ``caps[i]``.

    What a capped group cannot use is shared among the others. Remainders go to the
    first groups (largest remainder with equal weights). The result sums to
    ``min(total, sum(caps))``.
    """
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    shares = [0] * len(caps)
    open_ = [i for i, c in enumerate(caps) if c > 0]
    left = int(total)
    while open_ and left > 0:
        base, extra = divmod(left, len(open_))
        if base == 0:
            for i in open_[:extra]:
                shares[i] += 1
            break
        capped = [i for i in open_ if caps[i] - shares[i] <= base]
        if not capped:
            for j, i in enumerate(open_):
                shares[i] += base + (1 if j < extra else 0)
            break
        for i in capped:
            left -= caps[i] - shares[i]
            shares[i] = caps[i]
        open_ = [i for i in open_ if i not in capped]
    return shares
