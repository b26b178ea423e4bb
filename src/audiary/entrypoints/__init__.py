"""Entry points: the HTTPS API, the transcriber service and the command line."""
