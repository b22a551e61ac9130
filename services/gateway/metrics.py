"""The gateway's own metrics (the shared ones are in services/runtime/metrics.py).

`backend` labels are the configured backend URLs: a handful, never one per request.
"""

from prometheus_client import Counter, Gauge, Histogram

CACHE_HITS = Counter("introspect_cache_hits_total", "Generation requests answered from the cache")
CACHE_MISSES = Counter("introspect_cache_misses_total", "Generation requests the cache could not answer")
CACHE_WRITE_FAILURES = Counter(
    "introspect_cache_write_failures_total", "Generations answered but not stored: the cache could not take them"
)
CACHE_UNREADABLE = Counter("introspect_cache_unreadable_total", "Cache entries that could not be read: taken as misses")
GENERATIONS = Counter(
    "introspect_generations_total",
    "Backend calls, by backend and outcome (ok, rejected, unavailable)",
    ["backend", "outcome"],
)
RETRIES = Counter(
    "introspect_backend_retries_total", "Backend calls retried after 429, 5xx, timeouts, resets", ["backend"]
)
# As the servers count them (TGI's x-prompt-tokens and x-generated-tokens headers, an
# OpenAI server's usage); a cache hit costs no tokens and counts none.
PROMPT_TOKENS = Counter("introspect_prompt_tokens_total", "Prompt tokens sent to backends", ["backend"])
GENERATED_TOKENS = Counter("introspect_generated_tokens_total", "Tokens backends generated", ["backend"])
BACKEND_IN_FLIGHT = Gauge("introspect_backend_in_flight", "Backend calls in flight", ["backend"])
BACKEND_LIMIT = Gauge(
    "introspect_backend_limit",
    "Calls a backend takes at once (its /info max_concurrent_requests, or the configured limit)",
    ["backend"],
)
# Read when scraped, from the pool (`model`: the model the gateway serves, `all-models` for a
# gateway that takes every model's requests): what the alerts need to say that a model has
# no server, and that its servers are full with requests queuing for long.
BACKENDS_READY = Gauge(
    "introspect_backends_ready", "Model servers in the gateway's pool that answer and take requests", ["model"]
)
BACKEND_WAITING = Gauge(
    "introspect_backend_waiting", "Generation requests waiting for room at a model server", ["model"]
)
BACKEND_WAIT_OLDEST = Gauge(
    "introspect_backend_wait_oldest_seconds",
    "Seconds the longest-waiting generation request has waited for room at a model server (0: none waits)",
    ["model"],
)
BACKEND_SECONDS = Histogram(
    "introspect_backend_seconds",
    "Seconds a backend call took, retries included",
    ["backend"],
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120),
)
