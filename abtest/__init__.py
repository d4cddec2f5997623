"""The paper's online A/B test, simulated: budget-split auctions between two pCVR models.

Requests and their candidates come from ``simulator.auctions``; each arm bids target-CPA with
its own pCVR, paces its half of every budget and runs its own second-price auctions; the KPIs
are the paper's (Table 4), per conversion setup, with cluster-bootstrap intervals. See
``docs/abtest.md``.
"""
