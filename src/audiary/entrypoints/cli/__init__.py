"""The `audiary` command line, on the local stores or over the HTTPS API."""
