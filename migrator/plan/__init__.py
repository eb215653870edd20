"""The plan language: models and the loader."""
