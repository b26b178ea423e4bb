"""What `audiary.adapters.url_fetcher` refuses before any connection: address kinds and URL checks.

No network: host names go through a fake resolver (numeric host forms through the system one,
which parses them without asking DNS).
"""

from ipaddress import ip_address

import pytest

from audiary.adapters.url_fetcher import AddressKind, check_url, classify_address
from audiary.errors import FetchError, UnsafeUrlError

K = AddressKind


def resolver(table):
    """A resolver answering from `table` and recording what it was asked."""
    asked = []

    def resolve(host, port):
        asked.append((host, port))
        return table.get(host, [])

    resolve.asked = asked
    return resolve


PUBLIC_DNS = resolver({"audio.example": ["93.184.216.34", "2606:2800:220:1::1"]})


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("93.184.216.34", K.PUBLIC),
        ("8.8.8.8", K.PUBLIC),
        ("172.15.255.255", K.PUBLIC),
        ("172.32.0.0", K.PUBLIC),
        ("100.63.255.255", K.PUBLIC),
        ("100.128.0.0", K.PUBLIC),
        ("10.0.0.5", K.PRIVATE),
        ("172.16.0.1", K.PRIVATE),
        ("172.31.255.255", K.PRIVATE),
        ("192.168.1.10", K.PRIVATE),
        ("100.64.0.1", K.SHARED),
        ("100.127.255.255", K.SHARED),
        ("127.0.0.1", K.LOOPBACK),
        ("127.255.0.9", K.LOOPBACK),
        ("0.0.0.0", K.UNSPECIFIED),
        ("169.254.169.254", K.METADATA),
        ("169.254.1.1", K.LINK_LOCAL),
        ("224.0.0.1", K.MULTICAST),
        ("239.255.255.250", K.MULTICAST),
        ("240.0.0.1", K.RESERVED),
        ("255.255.255.255", K.RESERVED),
        ("192.0.2.1", K.RESERVED),
        ("198.18.0.1", K.RESERVED),
    ],
)
def test_ipv4_kinds(address, kind):
    assert classify_address(ip_address(address)) is kind


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("2606:2800:220:1::1", K.PUBLIC),
        ("2001:4860:4860::8888", K.PUBLIC),
        ("::1", K.LOOPBACK),
        ("::", K.UNSPECIFIED),
        ("fc00::1", K.PRIVATE),
        ("fd12:3456::1", K.PRIVATE),
        ("fe80::1", K.LINK_LOCAL),
        ("fe80::1%eth0", K.LINK_LOCAL),
        ("ff02::1", K.MULTICAST),
        ("fd00:ec2::254", K.METADATA),
        ("2001:db8::1", K.RESERVED),
        ("2001::1", K.RESERVED),  # Teredo
        ("::a00:5", K.RESERVED),  # retired IPv4-compatible form
        ("4000::1", K.RESERVED),  # outside global unicast 2000::/3
    ],
)
def test_ipv6_kinds(address, kind):
    assert classify_address(ip_address(address)) is kind


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("::ffff:127.0.0.1", K.LOOPBACK),
        ("::ffff:10.0.0.5", K.PRIVATE),
        ("::ffff:169.254.169.254", K.METADATA),
        ("::ffff:100.64.0.1", K.SHARED),
        ("::ffff:93.184.216.34", K.PUBLIC),
        ("64:ff9b::10.0.0.5", K.PRIVATE),  # NAT64 of a private address
        ("64:ff9b::169.254.169.254", K.METADATA),
        ("64:ff9b::93.184.216.34", K.PUBLIC),
        ("2002:a00:5::1", K.PRIVATE),  # 6to4 of 10.0.0.5
        ("2002:7f00:1::1", K.LOOPBACK),
        ("2002:5db8:d822::1", K.PUBLIC),
    ],
)
def test_ipv6_forms_embedding_ipv4_are_judged_by_the_ipv4_address(address, kind):
    assert classify_address(ip_address(address)) is kind


def test_public_https_url_passes_with_all_addresses():
    checked = check_url("https://audio.example/talks/a.mp3?sig=abc", resolve=PUBLIC_DNS)
    assert checked.host == "audio.example"
    assert checked.port == 443
    assert [str(a) for a in checked.addresses] == ["93.184.216.34", "2606:2800:220:1::1"]


def test_ip_literals_skip_the_resolver():
    dns = resolver({})
    assert check_url("https://93.184.216.34/a.mp3", resolve=dns).addresses == (
        ip_address("93.184.216.34"),
    )
    assert check_url("https://[2606:2800:220:1::1]/a.mp3", resolve=dns).port == 443
    assert dns.asked == []


def test_http_only_when_allowed():
    with pytest.raises(UnsafeUrlError, match="uses http; only public https URLs") as refused:
        check_url("http://audio.example/a.mp3", resolve=PUBLIC_DNS)
    assert refused.value.code == "scheme"
    assert check_url("http://audio.example/a.mp3", allow_http=True, resolve=PUBLIC_DNS).port == 80


@pytest.mark.parametrize(
    "url", ["ftp://audio.example/a.mp3", "file:///etc/passwd", "gopher://audio.example/"]
)
def test_other_schemes_are_refused(url):
    with pytest.raises(UnsafeUrlError) as refused:
        check_url(url, allow_http=True, allow_private=True, resolve=PUBLIC_DNS)
    assert refused.value.code in {"scheme", "bad_url"}


@pytest.mark.parametrize(
    "url", ["audio.example/a.mp3", "/a.mp3", "https:///a.mp3", "https://audio\n.example/"]
)
def test_malformed_or_relative_urls_are_refused(url):
    with pytest.raises(UnsafeUrlError) as refused:
        check_url(url, resolve=PUBLIC_DNS)
    assert refused.value.code == "bad_url"


@pytest.mark.parametrize(
    "url", ["https://user:pw@audio.example/a.mp3", "https://token@audio.example/a.mp3"]
)
def test_credentials_in_the_url_are_refused(url):
    with pytest.raises(UnsafeUrlError, match="user name or password") as refused:
        check_url(url, resolve=PUBLIC_DNS)
    assert refused.value.code == "credentials"
    assert "pw" not in str(refused.value)


@pytest.mark.parametrize("port", [22, 25, 6379, 8080, 8443])
def test_public_addresses_only_on_ports_80_and_443(port):
    with pytest.raises(UnsafeUrlError, match=f"port {port}; only ports 80 and 443") as refused:
        check_url(f"https://audio.example:{port}/a.mp3", resolve=PUBLIC_DNS)
    assert refused.value.code == "port"
    assert check_url("https://audio.example:80/a.mp3", resolve=PUBLIC_DNS).port == 80


def test_port_out_of_range_is_refused():
    with pytest.raises(UnsafeUrlError, match="invalid port"):
        check_url("https://audio.example:99999/a.mp3", resolve=PUBLIC_DNS)


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.0.0.5", "a private address"),
        ("192.168.1.10", "a private address"),
        ("172.16.0.1", "a private address"),
        ("127.0.0.1", "a loopback address"),
        ("169.254.1.1", "a link-local address"),
        ("100.64.0.1", "a carrier-grade NAT address"),
        ("fd12::1", "a private address"),
        ("fe80::1", "a link-local address"),
        ("::1", "a loopback address"),
        ("0.0.0.0", "an unspecified address"),
        ("224.0.0.1", "a multicast address"),
    ],
)
def test_names_resolving_to_non_public_addresses_are_refused(address, kind):
    dns = resolver({"files.example": [address]})
    with pytest.raises(UnsafeUrlError) as refused:
        check_url("https://files.example/a.mp3", resolve=dns)
    assert refused.value.code == "address"
    assert str(refused.value) == (
        f"audio_url resolves to {kind} ({address}); only public https URLs are accepted"
    )


def test_message_names_the_ipv4_address_a_mapped_address_reaches():
    with pytest.raises(UnsafeUrlError, match=r"::ffff:a00:5, which reaches 10\.0\.0\.5"):
        check_url("https://[::ffff:10.0.0.5]/a.mp3")


def test_one_private_record_refuses_the_whole_name():
    dns = resolver({"mixed.example": ["93.184.216.34", "10.0.0.5"]})
    with pytest.raises(UnsafeUrlError, match=r"private address \(10\.0\.0\.5\)"):
        check_url("https://mixed.example/a.mp3", resolve=dns)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://2130706433/",  # 127.0.0.1 as one decimal number
        "http://0x7f.1/",
        "http://0177.0.0.1/",  # octal: httpx already refuses to parse it
        "http://127.1/",
        "http://[::1]/",
        "http://[::ffff:127.0.0.1]/",
    ],
)
def test_loopback_in_any_spelling_is_refused(url):
    with pytest.raises(UnsafeUrlError, match=r"loopback|not a valid URL"):
        check_url(url, allow_http=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://[fd00:ec2::254]/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.google.internal./computeMetadata/v1/",
        "http://metadata/computeMetadata/v1/",
    ],
)
def test_metadata_server_is_refused_even_when_private_addresses_are_allowed(url):
    dns = resolver({})
    with pytest.raises(UnsafeUrlError, match="metadata") as refused:
        check_url(
            url, allow_http=True, allow_private=True, allow_networks=["0.0.0.0/0"], resolve=dns
        )
    assert refused.value.code == "metadata"
    assert dns.asked == []


def test_name_resolving_to_the_metadata_address_is_refused():
    dns = resolver({"innocent.example": ["169.254.169.254"]})
    with pytest.raises(UnsafeUrlError, match="the cloud metadata address"):
        check_url("https://innocent.example/", allow_private=True, resolve=dns)


def test_allow_private_accepts_private_addresses_on_any_port():
    dns = resolver({"minio.internal": ["10.0.0.5"]})
    checked = check_url(
        "http://minio.internal:9000/a.wav", allow_http=True, allow_private=True, resolve=dns
    )
    assert checked.addresses == (ip_address("10.0.0.5"),)
    assert checked.port == 9000


def test_allow_networks_accepts_only_the_listed_networks():
    checked = check_url(
        "http://127.0.0.1:8123/a.wav", allow_http=True, allow_networks=["127.0.0.1/32"]
    )
    assert checked.port == 8123
    # The mapped IPv6 spelling reaches the same IPv4 address, so the exception covers it.
    check_url("http://[::ffff:127.0.0.1]:8123/", allow_http=True, allow_networks=["127.0.0.1/32"])
    with pytest.raises(UnsafeUrlError, match="loopback"):
        check_url("http://127.0.0.2:8123/a.wav", allow_http=True, allow_networks=["127.0.0.1/32"])
    with pytest.raises(UnsafeUrlError, match="private"):
        check_url("http://10.0.0.5/a.wav", allow_http=True, allow_networks=["127.0.0.1/32"])


def test_unresolvable_host_is_a_fetch_error_not_an_unsafe_url():
    with pytest.raises(FetchError, match=r"host of audio_url \(nowhere\.example\)") as failed:
        check_url("https://nowhere.example/a.mp3", resolve=resolver({}))
    assert failed.value.code == "dns"
    assert not isinstance(failed.value, UnsafeUrlError)


def test_resolver_errors_become_fetch_errors():
    def broken(host, port):
        raise OSError("name resolution failed")

    with pytest.raises(FetchError, match="could not be resolved"):
        check_url("https://audio.example/a.mp3", resolve=broken)


def test_internationalised_names_are_resolved_in_their_ascii_form():
    dns = resolver({"xn--fa-hia.example": ["93.184.216.34"]})
    assert check_url("https://faß.example/a.mp3", resolve=dns).host == "xn--fa-hia.example"


def test_overlong_url_is_refused():
    with pytest.raises(UnsafeUrlError, match="longer than"):
        check_url("https://audio.example/" + "a" * 5000, resolve=PUBLIC_DNS)
