"""Entry point of the transcriber container (and of the native local stack).

    gunicorn --bind :$PORT --workers 1 --threads 4 --graceful-timeout 600 'main:create_app()'
"""

from audiary.entrypoints.transcriber.app import create_app

__all__ = ["create_app"]
