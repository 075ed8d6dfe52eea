"""`GET /metrics`: the replica's metrics in the Prometheus text format (see tokenrelay.metrics);
with `--workers N`, summed across the workers (metrics_workers.py)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from tokenrelay import metrics_workers
from tokenrelay.metrics import METRICS, MetricsCollector

# Our own registry: prometheus_client's default one adds process and GC collectors whose
# names are not ours to promise; only tokenrelay_* series are exposed.
_REGISTRY = CollectorRegistry(auto_describe=True)
_REGISTRY.register(MetricsCollector())


async def metrics(request: Request) -> Response:
    shared = metrics_workers.directory()
    if shared is None:
        return Response(generate_latest(_REGISTRY), media_type=CONTENT_TYPE_LATEST)
    registry = CollectorRegistry(auto_describe=True)
    registry.register(MetricsCollector(metrics_workers.summed(METRICS, shared)))
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


ROUTES: list[BaseRoute] = [Route("/metrics", metrics, methods=["GET"])]
