"""Hostname rules shared by the ClientHello parser, the cert cache and the certs API (pure).

A TLS server name (RFC 6066 section 3) is an ASCII DNS host name: letters, digits and hyphens
(LDH), labels of 1-63 characters that neither start nor end with a hyphen, at most 253
characters in all, no trailing dot, and not an IP address literal. Names compare
case-insensitively, so everything here returns lower case.

Wildcards (``*.example.com``) are allowed only where a caller asks for them (certificate names),
never in a ClientHello, and only as the whole left-most label: one wildcard covers exactly one
label, so ``*.example.com`` matches ``a.example.com`` but neither ``example.com`` nor
``a.b.example.com``.
"""

from __future__ import annotations

import ipaddress

__all__ = [
    "MAX_HOSTNAME",
    "host_error",
    "lookup_names",
    "name_matches",
    "normalize_hostname",
    "wildcard_parent",
]

MAX_HOSTNAME = 253
_MAX_LABEL = 63
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


def host_error(name: str, *, allow_wildcard: bool = False) -> str | None:
    """Why ``name`` (already lower case) is not a valid server name, or None if it is."""
    if not name:
        return "empty host name"
    if len(name) > MAX_HOSTNAME:
        return f"host name longer than {MAX_HOSTNAME} characters"
    if name.endswith("."):
        return "host name ends with a dot"
    labels = name.split(".")
    if allow_wildcard and labels[0] == "*":
        if len(labels) < 3:
            return "a wildcard needs at least two labels after '*.'"
        labels = labels[1:]
    for label in labels:
        if not label:
            return "empty label in host name"
        if len(label) > _MAX_LABEL:
            return f"label longer than {_MAX_LABEL} characters"
        if not _LDH.issuperset(label):
            return "invalid character in host name"
        if label[0] == "-" or label[-1] == "-":
            return "label starts or ends with '-'"
    if labels[-1].isdigit() or _is_ip(name):
        return "IP address literal is not a host name"
    return None


def normalize_hostname(name: str, *, allow_wildcard: bool = False) -> str:
    """Lower-cased ``name`` if it is a valid server name; ``ValueError(reason)`` otherwise.

    >>> normalize_hostname("WWW.Example.COM")
    'www.example.com'
    >>> normalize_hostname("*.example.com", allow_wildcard=True)
    '*.example.com'
    """
    lowered = name.lower()
    reason = host_error(lowered, allow_wildcard=allow_wildcard)
    if reason is not None:
        raise ValueError(reason)
    return lowered


def wildcard_parent(name: str) -> str | None:
    """The one-level wildcard that covers ``name``, or None (``a.b.c`` -> ``*.b.c``).

    A name of two labels (``example.com``) has no wildcard: ``*.com`` is never allowed.
    """
    if name.startswith("*."):
        return None
    _, dot, rest = name.partition(".")
    if not dot or "." not in rest:
        return None
    return "*." + rest


def lookup_names(name: str) -> tuple[str, ...]:
    """Certificate names to try for server name ``name``, best first: exact, then wildcard."""
    parent = wildcard_parent(name)
    return (name,) if parent is None else (name, parent)


def name_matches(cert_name: str, hostname: str) -> bool:
    """True if certificate name ``cert_name`` covers ``hostname`` (one-level wildcards only)."""
    cert_name, hostname = cert_name.lower(), hostname.lower()
    if cert_name == hostname:
        return True
    return cert_name.startswith("*.") and wildcard_parent(hostname) == cert_name


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True
