"""Audiary's Pulumi program (pulumi-gcp): `infra/__main__.py` is the entry point."""
