"""Scoring replicas: route each candidate by its task, hot-swap verified graphs, HTTP API."""
