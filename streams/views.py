"""The worker's web views: a setup's CVR (routed to the worker that holds its partition),
Prometheus metrics with the consumer lag, and a health check."""

from __future__ import annotations

import faust
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from streams import cvr, metrics


def add_views(app: faust.App, setups, params: cvr.CvrParams) -> None:
    """``/cvr/{setup_id}``, ``/metrics`` and ``/healthz`` on the app's web port; ``setups`` is
    the setup-CVR table."""

    @app.page("/cvr/{setup_id}")
    @app.table_route(table=setups, match_info="setup_id")
    async def cvr_view(web, request, setup_id):  # noqa: ARG001
        state = setups.get(setup_id)
        if state is None:
            return web.json({"error": f"no CVR state for setup {setup_id!r}"}, status=404)
        now = max(state["clicks"][1], state["conversions"][1])
        return web.json({"setup_id": setup_id} | cvr.estimate(state, now, params))

    @app.page("/metrics")
    async def metrics_view(web, request):  # noqa: ARG001
        for tp in app.consumer.assignment():
            position = await app.consumer.position(tp)
            highwater = app.consumer.highwater(tp)
            if position is not None and highwater is not None:
                metrics.LAG.labels(tp.topic, str(tp.partition)).set(max(highwater - position, 0))
        return web.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/healthz")
    async def healthz(web, request):  # noqa: ARG001
        return web.json({"ok": True})
