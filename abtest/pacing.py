"""Budget pacing: a PI controller per (arm, setup) on the day's spend.

A setup's planned spend by time t of a day is its daily budget times the share of the day's
traffic before t. Every step, the error is the shortfall of spend against plan as a share of
the budget (positive when behind); the bid multiplier is ``exp(min(0, kp * e + ki * sum e))``:
1 (bid the full target-CPA value) while spend keeps up with plan, lower while it runs ahead,
never above 1, so pacing never buys conversions dearer than the target. The integral is kept at
or below 0 (no wind-up from the hours a setup cannot spend its budget). A setup that has spent
its day's budget bids nothing until the next day.

>>> pacer = Pacer(np.array([[100.0]]))
>>> pacer.update(np.array([[40.0]]), planned_share=0.1)  # 40 spent where 10 was planned
>>> round(float(pacer.multipliers()[0, 0]), 3)
0.259
>>> pacer.update(np.array([[70.0]]), planned_share=0.1)  # the budget is gone
>>> float(pacer.multipliers()[0, 0])
0.0
>>> pacer.new_day(); float(pacer.multipliers()[0, 0])
1.0
"""

from __future__ import annotations

import numpy as np


class Pacer:
    """Bid multipliers for ``budget`` (daily, any shape) from the spend of each step."""

    def __init__(self, budget: np.ndarray, kp: float = 4.0, ki: float = 0.5):
        self.budget = np.asarray(budget, dtype=np.float64)
        self.kp, self.ki = kp, ki
        self.new_day()

    def new_day(self) -> None:
        self.spent = np.zeros_like(self.budget)
        self.planned = np.zeros_like(self.budget)
        self.integral = np.zeros_like(self.budget)
        self.multiplier = np.ones_like(self.budget)

    def multipliers(self) -> np.ndarray:
        """Each bidder's multiplier now: 0 for a spent budget."""
        return np.where(self.spent < self.budget, self.multiplier, 0.0)

    def remaining(self) -> np.ndarray:
        """What each bidder may still spend today."""
        return np.maximum(self.budget - self.spent, 0.0)

    def update(self, spend: np.ndarray, planned_share: float) -> None:
        """Account a step's ``spend``, when the plan for the step was ``planned_share`` of the
        day's budget."""
        self.spent += spend
        self.planned += planned_share * self.budget
        error = np.divide(
            self.planned - self.spent,
            self.budget,
            out=np.zeros_like(self.budget),
            where=self.budget > 0,
        )
        self.integral = np.minimum(self.integral + error, 0.0)
        self.multiplier = np.exp(np.minimum(self.kp * error + self.ki * self.integral, 0.0))
