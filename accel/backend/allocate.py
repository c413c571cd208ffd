"""The liveness allocator: which device buffer each root tensor of a lowered model uses."""

from __future__ import annotations

from .lowered import Lowered


def allocate(lowered: Lowered) -> tuple[dict[str, int], list[int]]:
    """Liveness-based buffer plan: root tensor -> buffer index, and each buffer's size.
    Inputs and outputs get buffers of their own (the Plan copies them whole). A root's
    buffer is taken at its first writing step and freed after its last reading step; a new
    root takes the smallest free buffer that fits, else grows the largest free one."""
    roots: dict[str, int] = {}  # root -> bytes
    for name, p in lowered.placements.items():
        roots[p.root] = max(roots.get(p.root, 0), p.nbytes if p.root == name else 0)
    first: dict[str, int] = {}
    last: dict[str, int] = {}
    for i, step in enumerate(lowered.steps):
        root = lowered.placements[step.output].root
        first.setdefault(root, i)
        last[root] = max(last.get(root, i), i)
        for name in step.inputs:
            r = lowered.placements[name].root
            last[r] = max(last.get(r, i), i)
    pinned = [lowered.placements[t.name].root
              for t in lowered.device_inputs + lowered.device_outputs]
    sizes: list[int] = []
    assignment: dict[str, int] = {}
    for root in dict.fromkeys(pinned):
        assignment[root] = len(sizes)
        sizes.append(roots[root])
    free: list[int] = []
    ending: dict[int, list[str]] = {}
    for root, end in last.items():
        if root not in assignment:
            ending.setdefault(end, []).append(root)
    for i, step in enumerate(lowered.steps):
        for root in [r for r, f in first.items() if f == i and r not in assignment]:
            fits = [b for b in free if sizes[b] >= roots[root]]
            if fits:
                best = min(fits, key=lambda b: sizes[b])
            elif free:  # grow the largest free buffer rather than add one
                best = max(free, key=lambda b: sizes[b])
                sizes[best] = roots[root]
            else:
                best = len(sizes)
                sizes.append(roots[root])
            if best in free:
                free.remove(best)
            assignment[root] = best
        for root in ending.get(i, []):  # after this step's output is placed: no aliasing
            free.append(assignment[root])
    for root in roots:  # never written nor read (cannot happen in a checked graph)
        if root not in assignment:
            assignment[root] = len(sizes)
            sizes.append(roots[root])
    return assignment, sizes
