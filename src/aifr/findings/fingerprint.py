r"""The fingerprint of a finding: what makes two reports the same result.

A fingerprint is the SHA-256 (hex) of, joined by ``\x1f``:

1. ``FINGERPRINT_VERSION`` (``"1"``), so a later change of the rule cannot collide with
   fingerprints already stored;
2. the scanner name (``nuclei``, ``feroxbuster``, ``katana``);
3. the rule id (nuclei's template id; ``content-discovery`` or ``crawled-endpoint`` for
   the two discovery tools);
4. the normalized location (:func:`~aifr.findings.location.normalize_location`): nuclei's ``matched-at``
   (``matched`` in older generations, else ``url``, else ``host``), feroxbuster's ``url``,
   katana's ``endpoint``;
5. the qualifiers that tell apart results at one location: nuclei's matcher name,
   extractor name and the sorted extracted results (the same template at the same
   place with another matcher, or extracting ``tls12`` and then ``tls13``, is another
   finding); the HTTP method for feroxbuster and katana (``GET`` when not written).

Left out on purpose, because they change between two scans of an unchanged target:
timestamps, the scanned IP (DNS moves), request and response bytes (dates, cookies,
request ids), ``curl-command``, the template path and URL (they depend on the scanning
host and moved between template registries), the status code and sizes of a discovered
URL, the page a URL was crawled from, and the output format generation (nuclei v2.3's
``templateID``/``matched`` and v3's ``template-id``/``matched-at`` give one fingerprint).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from aifr.findings.location import normalize_location

__all__ = ["FINGERPRINT_VERSION", "compute_fingerprint", "normalize_location"]

FINGERPRINT_VERSION = "1"


def compute_fingerprint(
    scanner: str, rule_id: str, location: str, qualifiers: Iterable[str] = ()
) -> str:
    """SHA-256 hex of the fields that identify one result (see the module docstring).

    ``location`` must already be normalized; qualifiers are taken in the order given
    (callers sort the ones whose order carries no meaning).
    """
    text = "\x1f".join((FINGERPRINT_VERSION, scanner, rule_id, location, *qualifiers))
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
