"""The producer: a job in, its manifest and one observation message per row out."""
