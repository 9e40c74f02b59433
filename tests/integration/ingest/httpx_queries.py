"""A labelled retrieval set over the installed source of httpx (a codebase no one here wrote).

Each query is phrased as a person would ask it, mostly without the identifiers the code
uses; the expected files are paths below the ``httpx`` package folder. A query is a hit
at rank r when the r-th chunk returned comes from one of its expected files.
"""

from __future__ import annotations

QUERIES: list[tuple[str, tuple[str, ...]]] = [
    ("decompress a gzip encoded response body", ("_decoders.py",)),
    ("brotli content decoding", ("_decoders.py",)),
    ("split streamed text into lines", ("_decoders.py",)),
    ("digest authentication challenge and nonce counting", ("_auth.py",)),
    ("basic auth header built from a username and password", ("_auth.py",)),
    ("read credentials from the netrc file", ("_auth.py",)),
    (
        "drop the authorization header when a redirect goes to another origin",
        ("_client.py",),
    ),
    ("give up after too many redirects", ("_client.py", "_exceptions.py")),
    ("connection pool limits on keep-alive connections", ("_config.py",)),
    ("configure connect, read, write and pool timeouts", ("_config.py",)),
    ("build an SSL context that verifies certificates", ("_config.py",)),
    ("proxy configuration with credentials in the URL", ("_config.py",)),
    ("read proxy settings from environment variables", ("_utils.py",)),
    ("match a URL against a pattern to pick a transport mount", ("_utils.py",)),
    ("error raised for a 4xx or 5xx response status", ("_models.py", "_exceptions.py")),
    ("hierarchy of timeout exceptions", ("_exceptions.py",)),
    ("translate httpcore exceptions into httpx exceptions", ("_transports/default.py",)),
    ("send requests to a WSGI application in process", ("_transports/wsgi.py",)),
    ("call an ASGI app directly without a network", ("_transports/asgi.py",)),
    ("transport that answers requests with a handler function for tests", ("_transports/mock.py",)),
    ("case-insensitive header mapping with repeated keys", ("_models.py",)),
    ("hide sensitive header values such as the authorization in repr", ("_models.py",)),
    ("parse the charset out of the content type header", ("_models.py",)),
    ("keep cookies and send them with later requests", ("_models.py", "_client.py")),
    ("iterate over the raw response body in byte chunks", ("_models.py",)),
    ("decode the response text using the detected encoding", ("_models.py",)),
    ("parse a URL into scheme, host, port, path and query", ("_urlparse.py",)),
    ("encode international domain names with IDNA", ("_urlparse.py",)),
    ("percent-encode unsafe characters in the path", ("_urlparse.py",)),
    ("remove dot segments from a path", ("_urlparse.py",)),
    ("immutable query parameters with methods to add and remove", ("_urls.py",)),
    ("join a relative URL onto a base URL", ("_urls.py",)),
    ("encode a multipart form upload with files", ("_multipart.py",)),
    ("guess the content type of an uploaded file from its name", ("_multipart.py",)),
    ("encode a JSON request body", ("_content.py",)),
    ("url-encoded form data body", ("_content.py",)),
    ("stream request content from an async iterator", ("_content.py",)),
    ("status code enum with reason phrases", ("_status_codes.py",)),
    ("command line client printing response headers with syntax highlighting", ("_main.py",)),
    ("download a response to a file with a progress bar", ("_main.py",)),
    ("top-level function that sends a GET request without a client", ("_api.py",)),
    ("stream a response with a context manager without creating a client", ("_api.py",)),
    ("async client closes its transports when the context exits", ("_client.py",)),
    (
        "base transport interface that handles a request and returns a response",
        ("_transports/base.py",),
    ),
    ("sync and async byte stream base classes", ("_types.py",)),
    ("event hooks called on every request and response", ("_client.py",)),
    ("check whether a hostname is an IPv4 or IPv6 address", ("_utils.py",)),
    ("default transport with retries and HTTP/2 support", ("_transports/default.py",)),
]
