r"""Read another process's Prometheus ``/metrics`` with prometheus_client's own parser.

>>> text = 'a_total{x="1"} 2.0\na_total{x="2"} 3.0\nb 1.5\n'
>>> by_name(parse(text))["a_total"]
5.0
>>> [s.labels for s in parse(text) if s.name == "a_total"]
[{'x': '1'}, {'x': '2'}]
"""

from __future__ import annotations

import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample


def parse(text: str) -> list[Sample]:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def samples(url: str, timeout: float = 5) -> list[Sample]:
    """Every sample the endpoint serves; OSError when it cannot be reached."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return parse(response.read().decode())


def by_name(found: list[Sample]) -> dict[str, float]:
    """Each sample name's value summed over its label sets."""
    sums: dict[str, float] = {}
    for sample in found:
        sums[sample.name] = sums.get(sample.name, 0.0) + sample.value
    return sums
