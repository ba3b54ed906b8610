"""Figures, when matplotlib (the optional extra `plot`) is installed."""

NO_PLOT_NOTE = ("matplotlib is not installed, so only JSON and CSV were written; for the figures, "
                "`pip install 'revlearn[plot]'` and run `revlearn run --resume {out}` (a finished "
                "run is only re-plotted)")


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend, or None without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def save(plt, fig, path):
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return str(path)
