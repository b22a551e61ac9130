"""The aggregator: stores every scored record, keeps each job's aggregates, writes the result files."""
