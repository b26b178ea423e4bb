"""gcp-storage-emulator with the CORS answers the uploads bucket gives on Google Cloud.

The web page PUTs audio straight to a signed URL of the uploads bucket, which is another
origin. On Google Cloud the bucket's CORS rule (infra/buckets.py, `names.UPLOAD_CORS_*`)
lets the browser do that; the emulator knows no CORS at all, so this runs it with the same
rule: preflights (`OPTIONS`) are answered and every answer says which origin may read it.

Run: python -m audiary.local.gcs_emulator <gcp-storage-emulator arguments>
"""

from __future__ import annotations

import sys
from http.server import BaseHTTPRequestHandler

from audiary import names


def allow_cors(handler: type[BaseHTTPRequestHandler]) -> None:
    """Give `handler` an `OPTIONS` answer and CORS headers on every response."""
    end_headers = handler.end_headers

    def with_cors(self: BaseHTTPRequestHandler) -> None:
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Expose-Headers",
                         ", ".join(names.UPLOAD_CORS_RESPONSE_HEADERS))
        end_headers(self)

    def do_options(self: BaseHTTPRequestHandler) -> None:
        self.send_response(204)
        self.send_header("Access-Control-Allow-Methods", ", ".join(names.UPLOAD_CORS_METHODS))
        self.send_header("Access-Control-Allow-Headers",
                         self.headers.get("Access-Control-Request-Headers", "Content-Type"))
        self.send_header("Access-Control-Max-Age", str(names.UPLOAD_CORS_MAX_AGE_S))
        self.send_header("Content-Length", "0")
        self.end_headers()

    handler.end_headers = with_cors  # type: ignore[method-assign]
    handler.do_OPTIONS = do_options  # type: ignore[attr-defined]


def main(argv: list[str]) -> None:
    from gcp_storage_emulator import __main__ as emulator
    from gcp_storage_emulator.server import RequestHandler

    allow_cors(RequestHandler)
    emulator.main(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
