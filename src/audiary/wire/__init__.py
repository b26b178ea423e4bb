"""Pub/Sub messages between the stages, and the storage events that start a job."""
