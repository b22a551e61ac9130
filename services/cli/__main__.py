"""`python -m services.cli`: how the local pipeline starts each service."""

from . import entry_point

entry_point()
