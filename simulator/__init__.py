"""A simulated performance-ad marketplace whose true conversion probabilities are known.

Every stage of rarecvr is exercised and measured on it: the true probability of each click gives
every model a ceiling (the oracle), and lets tests check attribution, labels and CVR state
exactly. The equations and defaults are in ``docs/simulator.md``.
"""

from simulator.config import Faults, SimConfig
from simulator.marketplace import Marketplace

__all__ = ["Faults", "Marketplace", "SimConfig"]
