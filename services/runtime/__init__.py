"""Plumbing every service shares: settings, the NATS bus and worker loop, metrics, the process shell."""
