"""Shared code of the course: plumbing the notebooks need, never the lesson itself."""
