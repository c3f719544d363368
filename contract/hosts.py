"""Which hosts preview clips may be fetched from (pure: no I/O).

``settings.allowed_audio_hosts`` lists them. A host is allowed when it equals an entry or
is a subdomain of a named entry on a dot boundary (case-insensitive, IDNA/UTS 46
A-labels, trailing dot ignored); an IP literal only when listed exactly. Workers fetch
nothing else (``workers/fetch.py``, which also checks the addresses a name resolves to),
and producers make no job whose preview a worker would refuse (``producers/sources.py``):
both ask this module, so the two sides cannot disagree on a host.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from urllib.parse import urlsplit

import idna

from contract.jobs import InvalidJob, check_preview_url

_HOSTNAME = re.compile(r"[a-z0-9_-]+(?:\.[a-z0-9_-]+)*")


def normalize_host(host: str) -> str:
    """Canonical host for matching: IP literals in standard form; names lower-case IDNA
    A-labels without a trailing dot. Raises ``ValueError`` for anything else."""
    name = host.strip()
    if name.startswith("[") and name.endswith("]"):
        name = name[1:-1]
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        pass
    name = name.rstrip(".")
    if not name.isascii():
        try:
            name = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(f"invalid host name {host!r}: {exc}") from None
    name = name.lower()
    if len(name) > 253 or not _HOSTNAME.fullmatch(name):
        raise ValueError(f"invalid host name {host!r}")
    return name


def is_ip(name: str) -> bool:
    """Whether ``name`` is an IPv4 or IPv6 literal (without brackets)."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


class AllowedHosts:
    """The allow-list (``settings.allowed_audio_hosts``), normalised once."""

    def __init__(self, hosts: Iterable[str]) -> None:
        self.allowed: tuple[str, ...] = tuple(normalize_host(h) for h in hosts)

    def listing(self, name: str) -> str:
        """How a *normalised* host is allowed: ``"exact"`` (listed), ``"subdomain"`` (of
        a listed name, never of an IP), or ``""`` (not allowed)."""
        if name in self.allowed:
            return "exact"
        if not is_ip(name) and any(
            name.endswith("." + entry) for entry in self.allowed if not is_ip(entry)
        ):
            return "subdomain"
        return ""

    def refusal(self, url: str) -> str:
        """Why a worker would refuse to fetch ``url`` before any network I/O, or ``""``:
        a URL the job contract refuses (not http(s), relative, credentials...), or a host
        that is not allowed."""
        try:
            check_preview_url(url)
            name = normalize_host(urlsplit(url).hostname or "")
        except (InvalidJob, ValueError) as exc:
            return str(exc)
        if not self.listing(name):
            return f"host {name!r} is not in allowed_audio_hosts"
        return ""
