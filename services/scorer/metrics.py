"""The scorer's own metrics (the shared ones are in services/runtime/metrics.py)."""

from prometheus_client import Counter

QUESTIONS = Counter("introspect_questions_total", "Generation requests the scorer asked, by task kind", ["task"])
SCORED = Counter("introspect_observations_scored_total", "Observations the scorer finished, by task kind", ["task"])
