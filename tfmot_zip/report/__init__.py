"""Zip reports (Markdown, JSON, PNG) and their plots."""
