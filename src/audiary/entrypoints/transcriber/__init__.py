"""The transcriber service: Pub/Sub push endpoint and the OpenAI-compatible routes."""
