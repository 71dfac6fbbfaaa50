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


def shortfall_message(experience: int, empty: int, groups: int, budget: int, unit: str,
                      unit_bytes: int, header: int = 0) -> str:
    """Why ``empty`` of ``groups`` (class, task) groups hold nothing after ``experience``: the
    share of the ``budget`` (bytes) each group gets is below one ``unit`` (``"record"`` or
    ``"sample"``) of ``unit_bytes`` plus a ``header`` per group; names the budget that holds
    one per group."""
    one = f"one {unit} ({unit_bytes} B" + (f" plus a {header} B group header)" if header else ")")
    remedy = ("raise the budget (budget_bytes, budget_fraction) or lower token_retention"
              if unit == "record" else "raise the budget (the fraction of the bytes seen)")
    if groups == 1:
        return (f"the memory holds no {unit} after experience {experience}: its budget of "
                f"{budget} B is below {one}, so nothing is replayed; {remedy}")
    head = (f"the memory holds no {unit} after experience {experience}" if empty == groups else
            f"{empty} of {groups} (class, task) groups hold no {unit} after experience "
            f"{experience} and are not replayed")
    return (f"{head}: the budget of {budget} B is split over {groups} (class, task) groups, "
            f"{budget // groups} B each, below {one}; a budget of {groups * (unit_bytes + header)}"
            f" B holds one {unit} per group; {remedy}")
