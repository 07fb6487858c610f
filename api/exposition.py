"""The metric catalogue in Prometheus's text exposition format, through
prometheus_client (imported on the first scrape: the API's memory stays as it was for
a box nobody scrapes)."""

from __future__ import annotations

from typing import Any

from common.store import metrics


def render(points: list[dict[str, Any]]) -> tuple[bytes, str]:
    """(body, content type) of the newest point of each series, one gauge family per
    catalogue metric (`oculus_<name>`, its help the catalogue's meaning)."""
    from prometheus_client import CollectorRegistry, exposition
    from prometheus_client.core import GaugeMetricFamily

    by_name: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        by_name.setdefault(p["name"], []).append(p)

    class Catalogue:
        def collect(self) -> Any:
            for m in metrics.CATALOGUE:
                family = GaugeMetricFamily(
                    metrics.prometheus_name(m.name), f"{m.meaning} ({m.unit})", labels=m.labels
                )
                for p in by_name.get(m.name, []):
                    values = [str(p["labels"].get(k, "")) for k in m.labels]
                    family.add_metric(
                        values, p["value_micros"] / 1e6, timestamp=p["at"].timestamp()
                    )
                yield family

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Catalogue())
    return exposition.generate_latest(registry), exposition.CONTENT_TYPE_LATEST
