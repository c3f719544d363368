"""The preview host rule both sides apply (contract/hosts.py): which hosts are allowed,
and why a URL would be refused before any network I/O."""

from __future__ import annotations

import pytest

from contract.hosts import AllowedHosts, normalize_host

HOSTS = AllowedHosts(["mzstatic.com", "cdnt-preview.dzcdn.net", "127.0.0.1", "Bücher.example"])


@pytest.mark.parametrize(("host", "listing"), [
    ("mzstatic.com", "exact"),
    ("is1-ssl.mzstatic.com", "subdomain"),
    ("xn--bcher-kva.example", "exact"),  # entries are normalised too
    ("127.0.0.1", "exact"),
    ("evilmzstatic.com", ""),  # a suffix, not on a dot boundary
    ("mzstatic.com.evil.example", ""),
    ("preview.dzcdn.net", ""),  # a sibling of an entry, not under it
    ("127.0.0.2", ""),
])
def test_a_host_is_allowed_when_listed_or_under_a_listed_name(host: str, listing: str) -> None:
    assert HOSTS.listing(normalize_host(host)) == listing


@pytest.mark.parametrize(("url", "why"), [
    ("https://is1-ssl.mzstatic.com/x.m4a", ""),
    ("http://MZSTATIC.com./x.m4a", ""),
    ("https://127.0.0.1:8080/x.m4a", ""),  # the port is not the host
    ("https://evil.example.com/x.m4a", "host 'evil.example.com' is not in allowed_audio_hosts"),
    ("https://mzstatic.com.evil.example/x", "is not in allowed_audio_hosts"),
    ("javascript:alert(1)", "scheme must be http or https"),
    ("/itunes-assets/x.m4a", "scheme must be http or https"),
    ("https://user@mzstatic.com/x", "credentials"),
    ("https://mzstatic.com/a b", "whitespace"),
])
def test_a_url_is_refused_as_a_worker_would_refuse_it(url: str, why: str) -> None:
    got = HOSTS.refusal(url)
    assert (got == "") if not why else why in got
