"""Entry point of the transcriber container (and of the native local stack).

    gunicorn --bind :$PORT --config python:audiary.entrypoints.transcriber.gunicorn_conf
        'main:create_app()'
"""

from audiary.entrypoints.transcriber.app import create_app

__all__ = ["create_app"]
