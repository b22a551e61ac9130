"""The aggregator's own metrics (the shared ones are in services/runtime/metrics.py).

Per-job series carry the job id: jobs are few (one per experiment), never one per observation.
The label is `job_id`, not `job`: Prometheus gives every scraped series a `job` label of its
own (the scrape job) and would rename ours.
"""

from prometheus_client import Counter, Gauge

RECORDS = Counter("introspect_observations_completed_total", "Result records stored, first delivery only", ["task"])
UNREADABLE = Counter(
    "introspect_unreadable_stored_total", "Stored manifests or records skipped at start: unreadable or invalid"
)
FINISH_FAILURES = Counter("introspect_finish_failures_total", "Attempts to write a job's result files that failed")
DUPLICATES = Counter("introspect_duplicate_results_total", "Redelivered results recognised and not counted again")
JOBS_COMPLETED = Counter("introspect_jobs_completed_total", "Jobs whose every expected record arrived")
JOB_PROGRESS = Gauge("introspect_job_observations", "Observations of a job, by state", ["job_id", "state"])
JOB_COMPLETE = Gauge(
    "introspect_job_complete", "1 once a job's result files are written and it is complete, else 0", ["job_id"]
)
JOB_CORRECT = Gauge("introspect_job_correct", "Observations the model classified correctly, per job", ["job_id"])
JOB_FAITHFUL = Gauge(
    "introspect_job_faithful_and_correct", "Faithful (or introspective) and correct, per job", ["job_id"]
)
