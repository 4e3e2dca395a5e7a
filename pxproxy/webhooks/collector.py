"""pxproxy_webhook_* counters, read from each webhook's status at scrape time."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .sender import WebhookSender


class WebhooksCollector(Collector):
    def __init__(self, senders: Callable[[], Sequence[WebhookSender]]) -> None:
        self._senders = senders

    def collect(self) -> Iterator[Metric]:
        deliveries = CounterMetricFamily(
            "pxproxy_webhook_deliveries",
            "Webhook deliveries by result: delivered; failed (retries exhausted or refused); "
            "dropped (the webhook's queue was full)",
            labels=["webhook", "result"],
        )
        attempts = CounterMetricFamily(
            "pxproxy_webhook_attempts",
            "Webhook HTTP attempts, retries included",
            labels=["webhook"],
        )
        queued = GaugeMetricFamily(
            "pxproxy_webhook_queued", "Webhook deliveries not yet done", labels=["webhook"]
        )
        for sender in self._senders():
            s = sender.status
            deliveries.add_metric([s.name, "delivered"], s.delivered)
            deliveries.add_metric([s.name, "failed"], s.failed)
            deliveries.add_metric([s.name, "dropped"], s.dropped)
            attempts.add_metric([s.name], s.attempts)
            queued.add_metric([s.name], sender.queued)
        yield deliveries
        yield attempts
        yield queued
