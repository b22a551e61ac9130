"""The report page: the comparison table, the figures, each job's progress and a transcript
browser; served by the aggregator (`routes.py`) and written as static files (`static.py`)."""
