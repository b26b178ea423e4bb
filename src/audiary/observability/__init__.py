"""Metrics, JSON logs and traces, the same in every service."""
