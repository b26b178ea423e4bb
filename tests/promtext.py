"""Reading values out of Prometheus' text exposition format, for tests."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families


def sample(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`; 0 when there are none
    (a labelled counter appears only once it was first incremented)."""
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    )
