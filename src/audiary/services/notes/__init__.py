"""Diary notes: the provider router, its circuit breaker, the LLM prompts and Markdown rendering."""
