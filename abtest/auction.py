"""Second-price auctions with a reserve and outside competition, many at once.

Each row is one request's candidates. The floor of a row is the larger of the reserve and the
best outside bid (the rest of the market, which the simulation does not model bid by bid). The
highest candidate bid wins if it beats the floor, and pays the larger of the second-highest
candidate bid and the floor.

>>> bids = np.array([[3.0, 1.0, 2.0], [0.5, 0.4, 0.1], [2.0, 0.0, 0.0]])
>>> winner, price = second_price(bids, np.array([1.5, 1.0, 0.5]))
>>> winner.tolist(), price.tolist()
([0, -1, 0], [2.0, 0.0, 0.5])
"""

from __future__ import annotations

import numpy as np


def second_price(bids: np.ndarray, floor: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The winning column of each row of ``bids`` (-1 where no bid beats the floor) and the
    price it pays (0 where none wins)."""
    rows = np.arange(bids.shape[0])
    order = np.argsort(-bids, axis=1)
    top = order[:, 0]
    best = bids[rows, top]
    second = bids[rows, order[:, 1]] if bids.shape[1] > 1 else np.zeros(rows.size)
    won = best > floor
    winner = np.where(won, top, -1)
    price = np.where(won, np.maximum(second, floor), 0.0)
    return winner, price
