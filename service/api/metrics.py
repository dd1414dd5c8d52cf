"""`GET /metrics`: Prometheus' text format, every process of the replica added up
(service/metrics.py), then what the store says at the time of the scrape.

From the store, per policy: the active model version, its age, and the learner's lag -- how long
ago the reward window of the oldest decision the learner has not read yet closed (0 while that
window is still open). These come from the store, not from the learner's process, so every
replica reports them and they stay true when the learner runs elsewhere or has stopped (a lag
that keeps growing is the sign). `tactful_store_up` is 0 when the store did not answer.

Who may read it is configurable (`METRICS_PUBLIC`, `tactful serve --metrics-public`): by default
an API key with the scope `metrics` (a scraper's key that can do nothing else), or no key at all
for a port that only the monitoring network reaches. The figures name policies, never people."""
from __future__ import annotations

import logging

from flask import Flask, Response
from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from service.api.auth import PUBLIC, requires
from service.decision.engine import DecisionEngine
from service.metrics import STORE_ERRORS, exposition
from service.store import StoreUnavailable

log = logging.getLogger("tactful")


class StoreFigures:
    """A collector read at each scrape: what the store says of each policy's learning."""

    def __init__(self, engine: DecisionEngine):
        self.engine = engine

    def collect(self):
        up = GaugeMetricFamily("tactful_store_up", "1 when the store answered this scrape, 0 when it did not")
        version = GaugeMetricFamily("tactful_model_version", "The model version each policy serves", labels=["policy"])
        age = GaugeMetricFamily("tactful_model_version_age_seconds", "Seconds since the served model version was "
                                "created, by the service's clock", labels=["policy"])
        breakers = GaugeMetricFamily("tactful_circuit_breaker_open", "1 while the circuit breaker watching a "
                                     "content, a channel or the whole policy is open, 0 once closed",
                                     labels=["policy", "target"])
        paused = GaugeMetricFamily("tactful_policy_paused", "1 while an operator has paused the policy",
                                   labels=["policy"])
        lag = GaugeMetricFamily("tactful_learner_lag_seconds", "Seconds since the reward window of the oldest "
                                "decision not yet learned closed (0 when none is waiting)", labels=["policy"])
        try:
            now = self.engine.clock.now()
            for name in sorted(self.engine.policies):
                for what, b in self.engine.store.breakers(name).items():
                    breakers.add_metric([name, what], 1 if b["status"] == "open" else 0)
                paused.add_metric([name], 0 if self.engine.store.pause_state(name) is None else 1)
                status = self.engine.store.learning_status(name)
                if status is None or status["active_version"] is None:
                    continue
                version.add_metric([name], status["active_version"])
                if status["created_at"] is not None:
                    age.add_metric([name], max(0.0, now - status["created_at"]))
                closes = status["first_unlearned_closes_at"]
                lag.add_metric([name], max(0.0, now - closes) if closes is not None else 0.0)
            up.add_metric([], 1)
        except StoreUnavailable as exc:
            log.warning("GET /metrics: %s", exc)
            STORE_ERRORS.labels("metrics").inc()
            up.add_metric([], 0)
            yield up
            return
        yield from (up, version, age, lag, breakers, paused)


def init_app(app: Flask, engine: DecisionEngine) -> None:
    store_figures = CollectorRegistry(auto_describe=False)
    store_figures.register(StoreFigures(engine))

    @requires(PUBLIC if app.config["METRICS_PUBLIC"] else "metrics")
    def metrics():
        body, content_type = exposition(store_figures)
        return Response(body, content_type=content_type)

    app.add_url_rule("/metrics", "metrics", metrics, methods=["GET"])
