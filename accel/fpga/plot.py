"""A per-layer stacked bar chart of an Estimate (matplotlib, optional): where each layer's
time goes."""

from __future__ import annotations


def plot_layers(result, path: str) -> str:
    """Write a chart of per-layer time to ``path``: the MAC array busy (compute), DDR time
    beyond it (memory), reader stalls (window reloads, restarts) and fixed overhead (prologue,
    fill, launch). Returns a line saying what happened (a clear message, not an error, when
    matplotlib is missing)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return (f"no plot written to {path}: matplotlib is not installed "
                "(pip install matplotlib)")
    rows = result.layers
    compute = [r.compute_ms for r in rows]
    memory = [max(0.0, r.memory_ms - r.compute_ms - r.stall_ms) for r in rows]
    stall = [r.stall_ms for r in rows]
    overhead = [r.overhead_ms for r in rows]
    x = range(len(rows))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(rows)), 4.0))
    bottom = [0.0] * len(rows)
    for values, label, color in ((compute, "compute", "tab:blue"),
                                 (memory, "memory (beyond compute)", "tab:red"),
                                 (stall, "stalls", "tab:orange"),
                                 (overhead, "prologue, fill, launch", "tab:gray")):
        ax.bar(x, values, bottom=bottom, color=color, label=label)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xlabel("layer")
    ax.set_ylabel("ms")
    ax.legend(fontsize="small")
    ax.set_title(f"{result.model} on {result.board}: VEC {result.vec_size} x LANE "
                 f"{result.lane_num} @ {result.fmax_mhz:.0f} MHz, {result.latency_ms:.2f} ms")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return f"plot written to {path}"
