"""A per-layer bar chart of an Estimate (matplotlib, optional)."""

from __future__ import annotations


def plot_layers(result, path: str) -> str:
    """Write a bar chart of per-layer time (compute vs DDR bound) to ``path``; returns a line
    saying what happened (a clear message, not an error, when matplotlib is missing)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return (f"no plot written to {path}: matplotlib is not installed "
                "(pip install matplotlib)")
    times = [row.time_ms for row in result.layers]
    colors = ["tab:blue" if row.bound == "compute" else "tab:red" for row in result.layers]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.18 * len(times)), 4.0))
    ax.bar(range(len(times)), times, color=colors)
    ax.set_xlabel("layer (blue: compute-bound, red: DDR-bound)")
    ax.set_ylabel("ms")
    ax.set_title(f"{result.model} on {result.board}: VEC {result.vec_size} x LANE "
                 f"{result.lane_num} @ {result.fmax_mhz:.0f} MHz, {result.latency_ms:.2f} ms")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return f"plot written to {path}"
