"""Offline research: the paper's tables on simulator data or a user's log, before trusting the
model online (``rarecvr research``, ``docs/research.md``). It trains ``model``'s models on the
``simulator``'s traffic (or a log file) and scores them against the oracle."""
