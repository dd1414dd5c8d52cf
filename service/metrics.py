"""What Tactful counts for Prometheus: the counters and histograms every process adds to, and the
one way to write them out.

`tactful serve` runs gunicorn workers and a learner in separate processes; it gives them one
directory in `PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multiprocess mode), where each
process keeps its own values in a memory-mapped file and `GET /metrics` adds them up, so a scrape
of any worker sees the whole replica, the learner included. The variable must be set before
prometheus_client is first imported (it picks its storage then): `serve` sets it for its
children. Without it (tests, an app built in process) the values live in this process.

What is true of the store rather than of a process -- the learner's lag, each policy's active
model version and its age -- is read from the store when /metrics is scraped
(service/api/metrics.py), so every replica reports the same figures whichever process learns.

Label values are bounded: a policy name, a mode, a reason code of the guardrails, an outcome type,
a route's template (never a path, which may hold a user id), a status code."""
from __future__ import annotations

import os
from typing import Mapping

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import disable_created_metrics, multiprocess

MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # a `_created` sample per series doubles the page for nothing Prometheus uses

DECISIONS = Counter("tactful_decisions", "Decisions served, by policy, mode and whether nothing is sent (hold)",
                    ["policy", "mode", "hold"])
REMOVED = Counter("tactful_removed_arms", "Arms a guardrail removed from decisions, by policy and reason code",
                  ["policy", "reason"])
OUTCOMES = Counter("tactful_outcomes", "Outcomes recorded (repeats of a recorded outcome not counted), by type",
                   ["type"])
DECIDE_SECONDS = Histogram("tactful_decide_duration_seconds", "Time to answer a decide request, by policy",
                           ["policy"], buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1.0, 2.5))
REQUESTS = Counter("tactful_http_requests", "HTTP requests answered, by method, route template and status",
                   ["method", "route", "status"])
STORE_ERRORS = Counter("tactful_store_errors", "Times the store could not be reached or did not grant a lock in "
                       "time, by where (api: a request answered 503; learner; metrics: a scrape)", ["where"])
LEARNED = Counter("tactful_learner_decisions_learned", "Decisions the learner learned from, by policy", ["policy"])
VERSIONS_PUBLISHED = Counter("tactful_learner_versions_published", "Model versions the learner published, by policy",
                             ["policy"])

DECIDE_ROUTE = "/v1/policies/<policy>/decide"

# Each series' child, by metric and label values: `labels()` takes a lock and checks its
# arguments on every call (about 1 us each, three or more per served decide), and returns the
# same child every time. Label values are bounded (above), so this stays small.
_CHILDREN: dict = {}


def _child(metric, *labels: str):
    child = _CHILDREN.get((metric, labels))
    if child is None:
        child = _CHILDREN[(metric, labels)] = metric.labels(*labels)
    return child


def count_decision(answer: Mapping) -> None:
    """Count one decide answer (the API's JSON): its mode, whether it holds, what was removed."""
    policy = answer["policy"]
    _child(DECISIONS, policy, answer["mode"], "true" if answer["action"]["hold"] else "false").inc()
    for reason, n in answer["removed"]["reasons"].items():
        _child(REMOVED, policy, reason).inc(n)


def count_request(method: str, route: str | None, policy: str | None, status: int, seconds: float) -> None:
    """Count one HTTP request; time it too when it was a decide."""
    _child(REQUESTS, method, route or "unmatched", str(status)).inc()
    if route == DECIDE_ROUTE and policy is not None and status == 200:
        _child(DECIDE_SECONDS, policy).observe(seconds)


def exposition(extra: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """The text format of every process's values (all of them in multiprocess mode), then `extra`'s."""
    if os.environ.get(MULTIPROC_DIR):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    body = generate_latest(registry)
    if extra is not None:
        body += generate_latest(extra)
    return body, CONTENT_TYPE_LATEST
