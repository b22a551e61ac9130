"""Completion backends: model servers reached over HTTP."""
