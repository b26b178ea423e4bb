"""`fetch_audio` against real HTTP(S) servers on 127.0.0.1: what it refuses, where, and what it
downloads.

Names such as `audio.test` exist only in the fake resolvers passed to `fetch_audio`; a request
that reaches a server through one proves the connection went to the address checked, not to a
second DNS answer. 127.0.0.1 is allowed per test with `allow_networks`, never by default.
"""

from __future__ import annotations

import datetime
import os
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from audiary.adapters.memory import MemoryBlobStore
from audiary.adapters.url_fetcher import SafeUrlFetcher, fetch_audio
from audiary.errors import FetchError, UnsafeUrlError

pytestmark = pytest.mark.integration

LOCAL = ["127.0.0.1/32"]
AUDIO = os.urandom(300_000)
Route = Callable[[BaseHTTPRequestHandler], None]


@dataclass
class Seen:
    path: str
    host: str | None


@dataclass
class LocalServer:
    """An HTTP(S) server in a thread; `routes` maps a path to a function that answers."""

    ssl_context: ssl.SSLContext | None = None
    routes: dict[str, Route] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    sni: list[str | None] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                server.seen.append(Seen(self.path, self.headers.get("Host")))
                route = server.routes.get(self.path.split("?")[0])
                try:
                    if route is None:
                        self.send_error(404)
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client stopped reading on purpose (size cap, timeout)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if self.ssl_context is not None:
            self.ssl_context.sni_callback = lambda _sock, name, _ctx: self.sni.append(name)
            self.httpd.socket = self.ssl_context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def url(self, path: str, host: str = "audio.test") -> str:
        scheme = "http" if self.ssl_context is None else "https"
        return f"{scheme}://{host}:{self.port}{path}"

    def close(self) -> None:
        self.release.set()  # let handlers that hold a response back finish
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[LocalServer]:
    s = LocalServer()
    yield s
    s.close()


def resolver(table: dict[str, list[str]]):
    """A resolver answering from `table`; it records each question."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return table.get(host, [])

    resolve.asked = asked  # type: ignore[attr-defined]
    return resolve


LOCAL_DNS = {"audio.test": ["127.0.0.1"], "internal.test": ["192.168.1.10"]}


# Routes


def body(data: bytes, content_type: str = "audio/wav") -> Route:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        h.wfile.write(data)

    return answer


def redirect(location: str, status: int = 302) -> Route:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Location", location)
        h.send_header("Content-Length", "0")
        h.end_headers()

    return answer


def chunked(chunk: bytes, count: int) -> Route:
    """A body with no length announced: the only limit is what the client counts."""

    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        for _ in range(count):
            h.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
        h.wfile.write(b"0\r\n\r\n")

    return answer


def close_delimited(chunk: bytes, count: int) -> Route:
    """An HTTP/1.0-style body that ends when the connection closes."""

    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Connection", "close")
        h.end_headers()
        for _ in range(count):
            h.wfile.write(chunk)
        h.close_connection = True

    return answer


def hold(release: threading.Event, content_length: int | None = None) -> Route:
    """Send headers (if a length is given), then nothing until the test ends."""

    def answer(h: BaseHTTPRequestHandler) -> None:
        if content_length is not None:
            h.send_response(200)
            h.send_header("Content-Length", str(content_length))
            h.end_headers()
            h.wfile.flush()
        release.wait(30)

    return answer


def no_files_left(directory: Path) -> bool:
    return list(directory.iterdir()) == []


# Success


def test_downloads_the_exact_bytes(server, tmp_path):
    server.routes["/talk.wav"] = body(AUDIO)
    dns = resolver(LOCAL_DNS)
    dest = tmp_path / "talk.wav"

    result = fetch_audio(
        server.url("/talk.wav?sig=abc"),
        dest,
        max_bytes=len(AUDIO),
        allow_http=True,
        allow_networks=LOCAL,
        resolve=dns,
    )

    assert dest.read_bytes() == AUDIO
    assert result.size == len(AUDIO)
    assert result.path == dest
    assert result.content_type == "audio/wav"
    assert result.final_url == server.url("/talk.wav?sig=abc")
    assert [p.name for p in tmp_path.iterdir()] == ["talk.wav"]


def test_connects_to_the_checked_address_and_keeps_the_host_name(server, tmp_path):
    """`audio.test` is unknown to real DNS: the request can only arrive through the pinned IP.

    The resolver would answer a private address on a second question (DNS rebinding); it is
    asked once.
    """
    server.routes["/a.wav"] = body(b"RIFF")
    answers = iter([["127.0.0.1"], ["10.0.0.5"]])
    asked: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        asked.append(host)
        return next(answers)

    fetch_audio(
        server.url("/a.wav"),
        tmp_path / "a.wav",
        max_bytes=100,
        allow_http=True,
        allow_networks=LOCAL,
        resolve=rebinding,
    )

    assert asked == ["audio.test"]
    assert server.seen == [Seen("/a.wav", f"audio.test:{server.port}")]


def test_tries_the_next_checked_address_when_one_refuses(server, tmp_path):
    server.routes["/a.wav"] = body(b"RIFF")
    # The server listens on IPv4 only: [::1] refuses (or is unavailable), 127.0.0.1 answers.
    dns = resolver({"audio.test": ["::1", "127.0.0.1"]})

    result = fetch_audio(
        server.url("/a.wav"),
        tmp_path / "a.wav",
        max_bytes=100,
        allow_http=True,
        allow_networks=[*LOCAL, "::1/128"],
        resolve=dns,
    )

    assert result.size == 4


def test_follows_a_relative_redirect_and_checks_each_hop(server, tmp_path):
    server.routes["/old"] = redirect("/new.wav", 301)
    server.routes["/new.wav"] = body(AUDIO)
    dns = resolver(LOCAL_DNS)

    result = fetch_audio(
        server.url("/old"),
        tmp_path / "a.wav",
        max_bytes=len(AUDIO),
        allow_http=True,
        allow_networks=LOCAL,
        resolve=dns,
    )

    assert result.final_url == server.url("/new.wav")
    assert (tmp_path / "a.wav").read_bytes() == AUDIO
    assert dns.asked == ["audio.test", "audio.test"]


# Refused before any request


def test_loopback_is_refused_by_default(server, tmp_path):
    server.routes["/a.wav"] = body(b"RIFF")
    for host in ("127.0.0.1", "localhost", "[::ffff:127.0.0.1]"):
        with pytest.raises(UnsafeUrlError, match="loopback address"):
            fetch_audio(
                server.url("/a.wav", host), tmp_path / "a.wav", max_bytes=100, allow_http=True
            )
    assert server.seen == []
    assert no_files_left(tmp_path)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("files.test", "10.0.0.5"),
        ("nas.test", "192.168.1.10"),
        ("vpc.test", "172.16.0.1"),
        ("cgnat.test", "100.64.0.1"),
        ("v6.test", "fd12::1"),
    ],
)
def test_names_resolving_to_private_addresses_are_refused(tmp_path, host, address):
    with pytest.raises(UnsafeUrlError) as refused:
        fetch_audio(
            f"https://{host}/a.wav",
            tmp_path / "a.wav",
            max_bytes=100,
            resolve=resolver({host: [address]}),
        )
    assert refused.value.code == "address"
    assert f"({address}); only public https URLs are accepted" in str(refused.value)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/",
        "http://metadata/computeMetadata/v1/",
    ],
)
def test_metadata_server_is_refused(tmp_path, url):
    with pytest.raises(UnsafeUrlError, match="metadata") as refused:
        fetch_audio(url, tmp_path / "a", max_bytes=100, allow_http=True, allow_private=True)
    assert refused.value.code == "metadata"


def test_http_is_refused_unless_allowed(server, tmp_path):
    server.routes["/a.wav"] = body(b"RIFF")
    dns = resolver(LOCAL_DNS)
    with pytest.raises(UnsafeUrlError, match="uses http; only public https URLs are accepted"):
        fetch_audio(
            server.url("/a.wav"),
            tmp_path / "a.wav",
            max_bytes=100,
            allow_networks=LOCAL,
            resolve=dns,
        )
    assert server.seen == []
    assert dns.asked == []


# Refused at a redirect


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("http://10.0.0.5/a.wav", r"a private address \(10\.0\.0\.5\)"),
        ("http://internal.test/a.wav", r"a private address \(192\.168\.1\.10\)"),
        ("http://169.254.169.254/latest/meta-data/", "the cloud metadata address"),
        ("http://metadata.google.internal/computeMetadata/v1/", "cloud metadata server"),
        ("http://127.0.0.2:{port}/a.wav", r"a loopback address \(127\.0\.0\.2\)"),
        ("http://[::1]:{port}/a.wav", r"a loopback address \(::1\)"),
        ("ftp://audio.test/a.wav", "uses the ftp scheme"),
        ("http://user:secret@audio.test:{port}/a.wav", "user name or password"),
    ],
)
def test_redirect_to_a_forbidden_target_is_refused_at_the_redirect(
    server, tmp_path, target, expected
):
    server.routes["/start"] = redirect(target.format(port=server.port))

    with pytest.raises(UnsafeUrlError, match=expected) as refused:
        fetch_audio(
            server.url("/start"),
            tmp_path / "a.wav",
            max_bytes=100,
            allow_http=True,
            allow_networks=LOCAL,
            resolve=resolver(LOCAL_DNS),
        )

    assert str(refused.value).startswith("the redirect target of audio_url (")
    assert "secret" not in str(refused.value)
    assert [s.path for s in server.seen] == ["/start"]
    assert no_files_left(tmp_path)


def test_redirects_are_limited(server, tmp_path):
    server.routes["/loop"] = redirect("/loop")
    with pytest.raises(FetchError, match="redirects more than 3 times") as failed:
        fetch_audio(
            server.url("/loop"),
            tmp_path / "a.wav",
            max_bytes=100,
            allow_http=True,
            allow_networks=LOCAL,
            resolve=resolver(LOCAL_DNS),
            max_redirects=3,
        )
    assert failed.value.code == "too_many_redirects"
    assert len(server.seen) == 4


# Size cap


def test_content_length_above_the_cap_is_refused_before_reading(server, tmp_path):
    # The server announces 10 MB and then sends nothing: only the header can end this fetch.
    server.routes["/big.wav"] = hold(server.release, content_length=10_000_000)
    with pytest.raises(FetchError, match="declares 10000000 bytes") as failed:
        fetch_audio(
            server.url("/big.wav"),
            tmp_path / "a.wav",
            max_bytes=1_000_000,
            allow_http=True,
            allow_networks=LOCAL,
            resolve=resolver(LOCAL_DNS),
        )
    assert failed.value.code == "too_large"
    assert no_files_left(tmp_path)


@pytest.mark.parametrize("route", [chunked, close_delimited])
def test_body_without_length_is_cut_at_the_cap(server, tmp_path, route):
    server.routes["/stream.wav"] = route(b"\0" * 65_536, 64)  # 4 MiB, cap 200 kB
    with pytest.raises(FetchError, match="limit of 200000 bytes") as failed:
        fetch_audio(
            server.url("/stream.wav"),
            tmp_path / "a.wav",
            max_bytes=200_000,
            allow_http=True,
            allow_networks=LOCAL,
            resolve=resolver(LOCAL_DNS),
        )
    assert failed.value.code == "too_large"
    assert no_files_left(tmp_path)


def test_cap_is_inclusive(server, tmp_path):
    server.routes["/a.wav"] = chunked(AUDIO[:1000], 3)
    common = {"allow_http": True, "allow_networks": LOCAL, "resolve": resolver(LOCAL_DNS)}
    assert (
        fetch_audio(server.url("/a.wav"), tmp_path / "a.wav", max_bytes=3000, **common).size == 3000
    )
    with pytest.raises(FetchError, match="limit of 2999 bytes"):
        fetch_audio(server.url("/a.wav"), tmp_path / "b.wav", max_bytes=2999, **common)


# Failures


def test_error_status_is_reported(server, tmp_path):
    with pytest.raises(FetchError, match="answered HTTP 404 Not Found") as failed:
        fetch_audio(
            server.url("/missing.wav"),
            tmp_path / "a.wav",
            max_bytes=100,
            allow_http=True,
            allow_networks=LOCAL,
            resolve=resolver(LOCAL_DNS),
        )
    assert failed.value.code == "http_status"


def test_silent_server_times_out(server, tmp_path):
    server.routes["/slow.wav"] = hold(server.release)
    with pytest.raises(FetchError, match=r"not downloaded within 0\.5 s") as failed:
        fetch_audio(
            server.url("/slow.wav"),
            tmp_path / "a.wav",
            max_bytes=100,
            allow_http=True,
            allow_networks=LOCAL,
            resolve=resolver(LOCAL_DNS),
            timeout_s=0.5,
        )
    assert failed.value.code == "timeout"


def test_slow_trickle_hits_the_overall_deadline(server, tmp_path):
    def trickle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Transfer-Encoding", "chunked")
        h.end_headers()
        # Each piece arrives well within the per-read timeout; together they take too long.
        while not server.release.wait(0.1):
            h.wfile.write(b"1\r\n\0\r\n")
            h.wfile.flush()

    server.routes["/trickle.wav"] = trickle
    with pytest.raises(FetchError, match="not downloaded within 1 s") as failed:
        fetch_audio(
            server.url("/trickle.wav"),
            tmp_path / "a.wav",
            max_bytes=1_000_000,
            allow_http=True,
            allow_networks=LOCAL,
            resolve=resolver(LOCAL_DNS),
            timeout_s=1,
        )
    assert failed.value.code == "timeout"
    assert no_files_left(tmp_path)


def test_closed_port_is_a_connect_error(tmp_path):
    probe = LocalServer()
    probe.close()  # a port that was just free: nothing listens on it now
    with pytest.raises(FetchError, match="could not connect") as failed:
        fetch_audio(
            probe.url("/a.wav"),
            tmp_path / "a.wav",
            max_bytes=100,
            allow_http=True,
            allow_networks=LOCAL,
            resolve=resolver(LOCAL_DNS),
        )
    assert failed.value.code == "connect"


# HTTPS: SNI and certificate checks use the host name while the socket goes to the pinned IP


@dataclass(frozen=True)
class Pki:
    ca_pem: bytes
    server_context: Callable[[str], ssl.SSLContext]

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca_pem.decode())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """A throwaway CA, and server contexts with certificates it issues for a given name."""
    pytest.importorskip("cryptography")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "audiary test CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    directory = tmp_path_factory.mktemp("pki")

    def server_context(name: str) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
            )
            .sign(ca_key, hashes.SHA256())
        )
        cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        return context

    return Pki(ca_cert.public_bytes(serialization.Encoding.PEM), server_context)


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[LocalServer]:
    s = LocalServer(ssl_context=pki.server_context("audio.test"))
    yield s
    s.close()


def test_https_sends_the_host_name_as_sni_and_verifies_it(tls_server, pki, tmp_path):
    tls_server.routes["/talk.wav"] = body(AUDIO)

    result = fetch_audio(
        tls_server.url("/talk.wav"),
        tmp_path / "talk.wav",
        max_bytes=len(AUDIO),
        allow_networks=LOCAL,
        resolve=resolver(LOCAL_DNS),
        ssl_context=pki.client_context(),
    )

    assert (tmp_path / "talk.wav").read_bytes() == AUDIO
    assert result.final_url == tls_server.url("/talk.wav")
    assert tls_server.sni == ["audio.test"]
    assert tls_server.seen == [Seen("/talk.wav", f"audio.test:{tls_server.port}")]


def test_https_certificate_for_another_name_is_refused(pki, tmp_path):
    other = LocalServer(ssl_context=pki.server_context("other.test"))
    other.routes["/a.wav"] = body(b"RIFF")
    try:
        with pytest.raises(FetchError, match="could not connect") as failed:
            fetch_audio(
                other.url("/a.wav"),
                tmp_path / "a.wav",
                max_bytes=100,
                allow_networks=LOCAL,
                resolve=resolver(LOCAL_DNS),
                ssl_context=pki.client_context(),
            )
    finally:
        other.close()
    assert "certificate" in str(failed.value).lower()
    assert other.seen == []


def test_https_certificate_is_checked_against_the_system_store_by_default(tls_server, tmp_path):
    tls_server.routes["/a.wav"] = body(b"RIFF")
    with pytest.raises(FetchError, match="certificate"):
        fetch_audio(
            tls_server.url("/a.wav"),
            tmp_path / "a.wav",
            max_bytes=100,
            allow_networks=LOCAL,
            resolve=resolver(LOCAL_DNS),
        )
    assert tls_server.seen == []


def test_https_redirect_to_http_is_refused(tls_server, server, pki, tmp_path):
    server.routes["/a.wav"] = body(b"RIFF")
    tls_server.routes["/start"] = redirect(server.url("/a.wav"))

    with pytest.raises(UnsafeUrlError, match="uses http; only public https URLs") as refused:
        fetch_audio(
            tls_server.url("/start"),
            tmp_path / "a.wav",
            max_bytes=100,
            allow_networks=LOCAL,
            resolve=resolver(LOCAL_DNS),
            ssl_context=pki.client_context(),
        )

    assert refused.value.code == "scheme"
    assert server.seen == []


# Streaming straight into a bucket (what POST /v1/jobs {audio_url} does) -------------------


def _streamer() -> tuple[SafeUrlFetcher, MemoryBlobStore]:
    blobs = MemoryBlobStore()
    blobs.ensure_bucket("uploads")
    return SafeUrlFetcher(allow_http=True, allow_networks=LOCAL,
                          resolve=resolver(LOCAL_DNS)), blobs


@pytest.mark.parametrize("route", [chunked, close_delimited])
def test_a_streamed_body_arrives_whole_in_the_bucket(server, route):
    fetcher, blobs = _streamer()
    server.routes["/s.wav"] = route(AUDIO[:4096], 40)

    def upload(stream, content_type):
        return blobs.upload_stream("uploads", "inbox/s.wav", stream, content_type=content_type)

    info = fetcher.stream(server.url("/s.wav"), upload, max_bytes=4096 * 40)
    assert info.size == 4096 * 40
    assert blobs.get("uploads", "inbox/s.wav") == AUDIO[:4096] * 40


def test_a_streamed_body_past_the_cap_stops_and_leaves_no_object(server):
    fetcher, blobs = _streamer()
    server.routes["/big.wav"] = chunked(b"\0" * 65_536, 64)  # 4 MiB, cap 200 kB

    def upload(stream, content_type):
        return blobs.upload_stream("uploads", "inbox/big.wav", stream)

    with pytest.raises(FetchError, match="limit of 200000 bytes") as failed:
        fetcher.stream(server.url("/big.wav"), upload, max_bytes=200_000)
    assert failed.value.code == "too_large"
    assert blobs.stat("uploads", "inbox/big.wav") is None


def test_a_declared_length_past_the_cap_is_refused_before_reading(server):
    fetcher, blobs = _streamer()
    server.routes["/a.wav"] = body(AUDIO)
    read = []

    def upload(stream, content_type):
        read.append(True)
        return blobs.upload_stream("uploads", "inbox/a.wav", stream)

    with pytest.raises(FetchError, match="declares"):
        fetcher.stream(server.url("/a.wav"), upload, max_bytes=len(AUDIO) - 1)
    assert read == []
