"""faster-whisper behind the `Transcriber` port: window planning (`planning`, pure NumPy) and
the decoder (`engine`, which needs the transcriber extra)."""
