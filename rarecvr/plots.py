"""Plots for the HTML reports: matplotlib without a display, each figure embedded as a PNG."""

from __future__ import annotations

import base64
import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["img", "plt"]


def img(fig, dpi: int = 110) -> str:
    """An ``<img>`` tag holding ``fig`` as a PNG; the figure is closed."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return f'<img src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'
