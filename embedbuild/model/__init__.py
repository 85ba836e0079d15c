"""Pydantic models of what users write: boards and the sources they build from."""
