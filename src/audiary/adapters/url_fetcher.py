"""Download a user-supplied audio URL without letting it reach into our own network (SSRF).

`POST /v1/jobs {"audio_url": ...}` makes the service fetch a URL chosen by a stranger. From
inside the cloud that URL could name the metadata server (credentials), a private service, or
a loopback admin port. So, unless relaxed by the caller:

- Only https (http with `allow_http`, a development setting); no user name or password in
  the URL (they would be sent to whoever the URL names; use a signed URL instead).
- The host is resolved here, and every address it resolves to must be public unicast: no
  loopback, private (RFC 1918, fc00::/7), link-local (169.254/16, fe80::/10), carrier-grade NAT
  (100.64/10), unspecified, multicast, reserved or documentation ranges, nor IPv6 forms that
  embed such an IPv4 address (::ffff:10.0.0.5, NAT64 64:ff9b::/96, 6to4 2002::/16). One bad
  record refuses the name: a public host has no reason to publish a private address.
- The connection goes to an address checked here, never to a fresh DNS answer, so a name
  cannot resolve to a public address for the check and a private one for the connection
  (DNS rebinding). The Host header, TLS SNI and certificate check still use the host name.
- Public addresses are reached on ports 80 and 443 only, so the fetcher cannot probe other
  services of public hosts. Addresses allowed by exception (`allow_private`, `allow_networks`)
  may use any port: that is where development servers listen.
- The cloud metadata server (169.254.169.254, fd00:ec2::254, `metadata`,
  `metadata.google.internal`) is refused even with `allow_private` or `allow_networks`: no
  audio lives there, and a development setting leaking into production must not expose it.
- Redirects are followed by hand, at most `max_redirects`, each target checked as above (so
  an https URL cannot redirect to http unless http is allowed).
- The body streams to disk and the download stops as soon as it exceeds `max_bytes`; a
  Content-Length above the cap is refused before reading. `timeout_s` bounds every network
  wait and the whole download, so a slow trickle cannot hold a worker.

Error messages never repeat the query string: signed URLs carry their credentials there.
"""

from __future__ import annotations

import enum
import io
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx

from audiary.errors import FetchError, UnsafeUrlError
from audiary.ports import FetchResult, UrlFetcher

__all__ = [
    "AddressKind",
    "CheckedUrl",
    "Resolver",
    "SafeUrlFetcher",
    "check_url",
    "classify_address",
    "fetch_audio",
    "system_resolve",
]

log = logging.getLogger(__name__)

IPAddress = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
Resolver = Callable[[str, int], Iterable[str]]
"""Maps (host, port) to IP address strings; `system_resolve` asks the operating system."""

PUBLIC_PORTS = frozenset({80, 443})
METADATA_NAMES = frozenset({"metadata", "metadata.google.internal"})
MAX_URL_LENGTH = 4096
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "audiary-fetch/1"


class AddressKind(enum.Enum):
    """What an IP address is, as far as fetching from it goes; the value reads in a message."""

    PUBLIC = "a public address"
    PRIVATE = "a private address"
    LOOPBACK = "a loopback address"
    LINK_LOCAL = "a link-local address"
    METADATA = "the cloud metadata address"
    SHARED = "a carrier-grade NAT address"
    UNSPECIFIED = "an unspecified address"
    MULTICAST = "a multicast address"
    RESERVED = "a reserved address"


def _table(*rows: tuple[str, AddressKind]) -> tuple[tuple[Network, AddressKind], ...]:
    return tuple((ipaddress.ip_network(net), kind) for net, kind in rows)


# First match wins: the metadata address sits inside the link-local range and must win.
# Written out rather than taken from `ipaddress.is_private` & co, whose answers change between
# Python patch releases.
_IPV4_RANGES = _table(
    ("169.254.169.254/32", AddressKind.METADATA),
    ("0.0.0.0/8", AddressKind.UNSPECIFIED),
    ("10.0.0.0/8", AddressKind.PRIVATE),
    ("100.64.0.0/10", AddressKind.SHARED),
    ("127.0.0.0/8", AddressKind.LOOPBACK),
    ("169.254.0.0/16", AddressKind.LINK_LOCAL),
    ("172.16.0.0/12", AddressKind.PRIVATE),
    ("192.0.0.0/24", AddressKind.RESERVED),  # IETF protocol assignments
    ("192.0.2.0/24", AddressKind.RESERVED),  # documentation
    ("192.88.99.0/24", AddressKind.RESERVED),  # retired 6to4 relays
    ("192.168.0.0/16", AddressKind.PRIVATE),
    ("198.18.0.0/15", AddressKind.RESERVED),  # benchmarking
    ("198.51.100.0/24", AddressKind.RESERVED),  # documentation
    ("203.0.113.0/24", AddressKind.RESERVED),  # documentation
    ("224.0.0.0/4", AddressKind.MULTICAST),
    ("240.0.0.0/4", AddressKind.RESERVED),  # includes the broadcast address
)
_IPV6_RANGES = _table(
    ("fd00:ec2::254/128", AddressKind.METADATA),  # AWS instance metadata over IPv6
    ("::/128", AddressKind.UNSPECIFIED),
    ("::1/128", AddressKind.LOOPBACK),
    ("64:ff9b:1::/48", AddressKind.PRIVATE),  # local-use NAT64
    ("100::/64", AddressKind.RESERVED),  # discard-only
    ("2001::/23", AddressKind.RESERVED),  # IETF protocol assignments, Teredo
    ("2001:db8::/32", AddressKind.RESERVED),  # documentation
    ("3fff::/20", AddressKind.RESERVED),  # documentation
    ("fc00::/7", AddressKind.PRIVATE),  # unique local
    ("fe80::/10", AddressKind.LINK_LOCAL),
    ("fec0::/10", AddressKind.PRIVATE),  # retired site-local
    ("ff00::/8", AddressKind.MULTICAST),
)
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: IPv6Address) -> IPv4Address | None:
    """The IPv4 address that packets to `address` really reach, for the forms that embed one."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def classify_address(address: IPAddress) -> AddressKind:
    """Whether `address` is public, or which kind of non-public address it is."""
    if isinstance(address, IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return classify_address(embedded)
        ranges = _IPV6_RANGES
    else:
        ranges = _IPV4_RANGES
    for network, kind in ranges:
        if address in network:
            return kind
    if isinstance(address, IPv6Address) and address not in _GLOBAL_UNICAST_V6:
        return AddressKind.RESERVED
    # A last net for ranges IANA lists as not global that the tables above leave out.
    return AddressKind.PUBLIC if address.is_global else AddressKind.RESERVED


def system_resolve(host: str, port: int) -> list[str]:
    """The addresses the operating system resolves `host` to, in its order of preference."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that passed the checks, with the only addresses it may be fetched from."""

    url: httpx.URL
    host: str  # ASCII (IDNA) host name or IP literal, as sent in Host and SNI
    port: int
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class _Policy:
    allow_private: bool
    allow_http: bool
    allow_networks: tuple[Network, ...]
    resolve: Resolver

    @property
    def only(self) -> str:
        schemes = "http and https" if self.allow_http else "https"
        return f"only public {schemes} URLs are accepted"

    def excepted(self, address: IPAddress) -> bool:
        """Whether a non-public `address` is allowed anyway by this policy."""
        if self.allow_private:
            return True
        # ::ffff:127.0.0.1 reaches 127.0.0.1, so it matches an IPv4 exception too.
        plain = address.ipv4_mapped if isinstance(address, IPv6Address) else None
        return any(
            a in net for net in self.allow_networks for a in (address, plain) if a is not None
        )


def _policy(
    allow_private: bool,
    allow_http: bool,
    allow_networks: Iterable[Network | str],
    resolve: Resolver,
) -> _Policy:
    networks = tuple(ipaddress.ip_network(net) for net in allow_networks)
    return _Policy(allow_private, allow_http, networks, resolve)


def _redact(url: httpx.URL) -> str:
    """The URL without credentials, query or fragment: safe to show and log."""
    return f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}"


def check_url(
    url: str,
    *,
    allow_private: bool = False,
    allow_http: bool = False,
    allow_networks: Iterable[Network | str] = (),
    resolve: Resolver = system_resolve,
) -> CheckedUrl:
    """Check `url` as `fetch_audio` does before connecting; `UnsafeUrlError` if refused.

    Also usable to vet a URL when it is registered (a webhook target, say), though only a
    connection pinned to `CheckedUrl.addresses` is safe from DNS rebinding.
    """
    policy = _policy(allow_private, allow_http, allow_networks, resolve)
    return _check(url, policy, "audio_url")


def _check(raw: str, policy: _Policy, label: str) -> CheckedUrl:
    if len(raw) > MAX_URL_LENGTH:
        raise UnsafeUrlError("bad_url", f"{label} is longer than {MAX_URL_LENGTH} characters")
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise UnsafeUrlError("bad_url", f"{label} is not a valid URL ({exc})") from None
    if not url.scheme or not url.raw_host:
        raise UnsafeUrlError(
            "bad_url", f"{label} must be an absolute URL such as https://example.com/talk.mp3"
        )
    if url.scheme == "http" and not policy.allow_http:
        raise UnsafeUrlError("scheme", f"{label} uses http; {policy.only}")
    if url.scheme not in ("http", "https"):
        raise UnsafeUrlError("scheme", f"{label} uses the {url.scheme} scheme; {policy.only}")
    if url.userinfo:
        raise UnsafeUrlError(
            "credentials",
            f"{label} contains a user name or password; remove them (a signed URL works)",
        )
    port = url.port or (443 if url.scheme == "https" else 80)
    if not 0 < port < 65536:
        raise UnsafeUrlError("bad_url", f"{label} has an invalid port ({port})")
    host = url.raw_host.decode("ascii")
    if host.rstrip(".").lower() in METADATA_NAMES:
        raise UnsafeUrlError(
            "metadata", f"{label} points at the cloud metadata server ({host}); {policy.only}"
        )
    addresses = _addresses(host, port, policy, label)

    needs_public_port = False
    for address in addresses:
        kind = classify_address(address)
        if kind is AddressKind.METADATA:
            raise UnsafeUrlError(
                "metadata", f"{label} resolves to {kind.value} ({_show(address)}); {policy.only}"
            )
        if kind is AddressKind.PUBLIC:
            needs_public_port = True
        elif not policy.excepted(address):
            raise UnsafeUrlError(
                "address", f"{label} resolves to {kind.value} ({_show(address)}); {policy.only}"
            )
    if needs_public_port and port not in PUBLIC_PORTS:
        raise UnsafeUrlError(
            "port", f"{label} uses port {port}; only ports 80 and 443 are accepted"
        )
    return CheckedUrl(url=url, host=host, port=port, addresses=addresses)


def _show(address: IPAddress) -> str:
    """The address for a message, with the IPv4 address it embeds if any."""
    embedded = _embedded_ipv4(address) if isinstance(address, IPv6Address) else None
    return f"{address}, which reaches {embedded}" if embedded else str(address)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _addresses(host: str, port: int, policy: _Policy, label: str) -> tuple[IPAddress, ...]:
    if _is_ip_literal(host):
        return (ipaddress.ip_address(host),)
    try:
        found = list(dict.fromkeys(policy.resolve(host, port)))
    except (OSError, UnicodeError):
        found = []
    if not found:
        raise FetchError("dns", f"the host of {label} ({host}) could not be resolved")
    return tuple(ipaddress.ip_address(address) for address in found)


def fetch_audio(
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    allow_private: bool = False,
    allow_http: bool = False,
    allow_networks: Iterable[Network | str] = (),
    timeout_s: float = 30,
    max_redirects: int = 3,
    resolve: Resolver = system_resolve,
    ssl_context: ssl.SSLContext | None = None,
) -> FetchResult:
    """Download `url` to `dest`, refusing anything but public http(s) (see the module doc).

    `allow_networks` lists networks (e.g. "127.0.0.1/32") allowed although not public; tests
    and private deployments use it instead of opening all of `allow_private`. `resolve` maps
    a host name to addresses, `ssl_context` replaces the default CA bundle (tests, private
    CAs). Raises `UnsafeUrlError` for a refused URL or redirect, `FetchError` when the download
    fails; `dest` is only written when the whole body arrived.
    """
    policy = _policy(allow_private, allow_http, allow_networks, resolve)

    def save(response: httpx.Response, checked: CheckedUrl, deadline: float) -> FetchResult:
        size = _save(response, dest, max_bytes, deadline, timeout_s)
        log.info("fetched %s: %d bytes", _redact(checked.url), size)
        return FetchResult(path=dest, size=size,
                           content_type=response.headers.get("content-type"),
                           final_url=str(checked.url))

    return _fetch(url, policy, save, timeout_s, max_redirects, ssl_context)


T = TypeVar("T")


def _fetch(
    url: str,
    policy: _Policy,
    handle: Callable[[httpx.Response, CheckedUrl, float], T],
    timeout_s: float,
    max_redirects: int,
    ssl_context: ssl.SSLContext | None,
) -> T:
    """GET `url` following checked redirects; `handle(response, url, deadline)` takes the 200."""
    deadline = time.monotonic() + timeout_s
    checked = _check(url, policy, "audio_url")
    redirects = 0
    try:
        while True:
            with _open(checked, ssl_context, _remaining(deadline, timeout_s)) as response:
                location = response.headers.get("location")
                if response.status_code in REDIRECT_STATUSES and location:
                    if redirects == max_redirects:
                        raise FetchError(
                            "too_many_redirects",
                            f"audio_url redirects more than {max_redirects} times",
                        )
                    redirects += 1
                    checked = _redirect(checked, location, policy)
                    continue
                if response.status_code != 200:
                    raise FetchError(
                        "http_status",
                        f"audio_url answered HTTP {response.status_code} "
                        f"{response.reason_phrase}; expected 200 with the audio",
                    )
                return handle(response, checked, deadline)
    except httpx.TimeoutException as exc:
        raise _timeout(timeout_s) from exc
    except httpx.HTTPError as exc:
        raise FetchError("network", f"audio_url could not be downloaded ({exc})") from exc


class _Body(io.RawIOBase):
    """A response body as a read-only stream that stops at `max_bytes` and at the deadline."""

    def __init__(self, response: httpx.Response, max_bytes: int, deadline: float,
                 timeout_s: float) -> None:
        self._chunks = response.iter_bytes()
        self._pending = b""
        self._size = 0
        self._max_bytes, self._deadline, self._timeout_s = max_bytes, deadline, timeout_s

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while not self._pending:
            chunk = next(self._chunks, None)
            if chunk is None:
                return 0
            self._size += len(chunk)
            if self._size > self._max_bytes:
                raise FetchError("too_large", _too_large(self._max_bytes, "it sends more"))
            if time.monotonic() > self._deadline:
                raise _timeout(self._timeout_s)
            self._pending = chunk
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


def _remaining(deadline: float, timeout_s: float) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _timeout(timeout_s)
    return min(remaining, timeout_s)


def _timeout(timeout_s: float) -> FetchError:
    return FetchError(
        "timeout", f"audio_url was not downloaded within {timeout_s:g} s; try a faster host"
    )


def _redirect(checked: CheckedUrl, location: str, policy: _Policy) -> CheckedUrl:
    try:
        target = checked.url.join(location)
    except httpx.InvalidURL:
        raise UnsafeUrlError("bad_url", "audio_url redirects to an invalid URL") from None
    log.info("audio_url redirects from %s to %s", _redact(checked.url), _redact(target))
    return _check(str(target), policy, f"the redirect target of audio_url ({_redact(target)})")


@contextmanager
def _open(
    checked: CheckedUrl, ssl_context: ssl.SSLContext | None, timeout_s: float, *,
    method: str = "GET", content: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> Iterator[httpx.Response]:
    """Send the request to the checked URL's vetted addresses, in order, until one accepts."""
    headers = {
        # Audio is already compressed; identity keeps byte counts and the file exact.
        "Accept-Encoding": "identity",
        "User-Agent": USER_AGENT,
        **(headers or {}),
        # The request goes to an IP literal; the server must still see the name it serves.
        "Host": checked.url.netloc.decode("ascii"),
    }
    extensions: dict[str, str] = {}
    if checked.url.scheme == "https" and not _is_ip_literal(checked.host):
        # SNI and certificate verification use the host name, not the pinned address.
        extensions["sni_hostname"] = checked.host
    failures: list[str] = []
    for address in checked.addresses:
        # A fresh client per connection: a pooled TLS connection verified for one name must
        # not be reused for another name (a redirect target) that shares the address.
        with httpx.Client(
            verify=ssl_context or True,
            trust_env=False,  # a proxy would resolve the name again, undoing the pinning
            follow_redirects=False,
            timeout=timeout_s,
        ) as client:
            request = client.build_request(
                method,
                checked.url.copy_with(host=str(address)),
                headers=headers,
                content=content,
                extensions=extensions,
            )
            try:
                response = client.send(request, stream=True)
            except httpx.ConnectError as exc:
                failures.append(f"{address}: {exc}")
                continue
            try:
                yield response
            finally:
                response.close()
            return
    raise FetchError("connect", f"could not connect to {checked.host} ({'; '.join(failures)})")


def _save(
    response: httpx.Response, dest: Path, max_bytes: int, deadline: float, timeout_s: float
) -> int:
    """Stream the body to `dest` via a temporary file; nothing is left behind on failure."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise FetchError("too_large", _too_large(max_bytes, f"it declares {int(declared)} bytes"))
    partial = dest.with_name(f".{dest.name}.part")
    size = 0
    try:
        with partial.open("wb") as out:
            # As the data arrives (no re-chunking), so the deadline is checked even on a trickle.
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > max_bytes:
                    raise FetchError("too_large", _too_large(max_bytes, "it sends more"))
                if time.monotonic() > deadline:
                    raise _timeout(timeout_s)
                out.write(chunk)
        partial.replace(dest)
    finally:
        partial.unlink(missing_ok=True)
    return size


def _too_large(max_bytes: int, detail: str) -> str:
    return (
        f"audio_url is larger than the limit of {max_bytes} bytes ({detail}); send a shorter file"
    )


class SafeUrlFetcher(UrlFetcher):
    """`check_url` and `fetch_audio` behind the `UrlFetcher` port, with one policy."""

    def __init__(
        self, *, allow_private: bool = False, allow_http: bool = False,
        allow_networks: Iterable[Network | str] = (), timeout_s: float = 30,
        resolve: Resolver = system_resolve, ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.allow_private = allow_private
        self.allow_http = allow_http
        self.allow_networks = tuple(allow_networks)
        self.timeout_s = timeout_s
        self.resolve = resolve
        self.ssl_context = ssl_context

    def check(self, url: str) -> None:
        check_url(url, allow_private=self.allow_private, allow_http=self.allow_http,
                  allow_networks=self.allow_networks, resolve=self.resolve)

    def post(self, url: str, body: bytes, headers: Mapping[str, str], timeout_s: float
             ) -> tuple[int, str | None]:
        """POST `body` to `url` after checking it, connected to an address the check found;
        returns the status and the Retry-After header. Redirects are not followed."""
        policy = _policy(self.allow_private, self.allow_http, self.allow_networks, self.resolve)
        checked = _check(url, policy, "the webhook URL")
        with _open(checked, self.ssl_context, timeout_s, method="POST", content=body,
                   headers=headers) as response:
            return response.status_code, response.headers.get("retry-after")

    def stream(self, url: str, consume: Callable[[IO[bytes], str | None], T], *,
               max_bytes: int) -> T:
        """GET `url` (checked, pinned, redirects checked) and hand its body, as a stream that
        stops at `max_bytes`, to `consume(stream, content_type)`; its result is returned."""
        policy = _policy(self.allow_private, self.allow_http, self.allow_networks, self.resolve)

        def hand_over(response: httpx.Response, checked: CheckedUrl, deadline: float) -> T:
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise FetchError("too_large",
                                 _too_large(max_bytes, f"it declares {int(declared)} bytes"))
            body = io.BufferedReader(_Body(response, max_bytes, deadline, self.timeout_s),
                                     buffer_size=256 * 1024)
            result = consume(body, response.headers.get("content-type"))
            log.info("streamed %s", _redact(checked.url))
            return result

        return _fetch(url, policy, hand_over, self.timeout_s, 3, self.ssl_context)

    def fetch(self, url: str, dest: Path, *, max_bytes: int) -> FetchResult:
        return fetch_audio(
            url, dest, max_bytes=max_bytes, allow_private=self.allow_private,
            allow_http=self.allow_http, allow_networks=self.allow_networks,
            timeout_s=self.timeout_s, resolve=self.resolve, ssl_context=self.ssl_context,
        )
