"""Audiary: audio in, transcript and diary note out."""

__version__ = "0.1.0"
