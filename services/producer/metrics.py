"""The producer's own metrics (the shared ones are in services/runtime/metrics.py)."""

from prometheus_client import Counter

JOBS = Counter("introspect_jobs_total", "Jobs the producer took, by outcome", ["outcome"])
OBSERVATIONS = Counter("introspect_observations_published_total", "Observation messages the producer published")
