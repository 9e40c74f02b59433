"""A labelled retrieval set over the installed source of httpx, httpcore and h11.

Three codebases no one here wrote, indexed together as one repository (about 670
chunks), so that a question about connection pools, proxies, TLS or exceptions has
look-alike answers in the other two packages to be confused with. Each query is
phrased as a person would ask it, mostly without the identifiers the code uses; the
expected files are paths below ``site-packages`` (``httpx/_client.py``). httpcore's
``_async`` and ``_sync`` folders hold generated twins of the same code, so a question
about one is answered by either. A query is a hit at rank r when the r-th chunk returned
comes from one of its expected files.

``HTTPX`` (48 queries) is the set the fusion was tuned on; ``HELD_OUT`` (34, httpcore
and h11) was written afterwards and never used for tuning (docs/benchmarks.md).
"""

from __future__ import annotations

HTTPX: list[tuple[str, tuple[str, ...]]] = [
    ("decompress a gzip encoded response body", ("httpx/_decoders.py",)),
    ("brotli content decoding", ("httpx/_decoders.py",)),
    ("split streamed text into lines", ("httpx/_decoders.py",)),
    ("digest authentication challenge and nonce counting", ("httpx/_auth.py",)),
    ("basic auth header built from a username and password", ("httpx/_auth.py",)),
    ("read credentials from the netrc file", ("httpx/_auth.py",)),
    (
        "drop the authorization header when a redirect goes to another origin",
        ("httpx/_client.py",),
    ),
    ("give up after too many redirects", ("httpx/_client.py", "httpx/_exceptions.py")),
    ("connection pool limits on keep-alive connections", ("httpx/_config.py",)),
    ("configure connect, read, write and pool timeouts", ("httpx/_config.py",)),
    ("build an SSL context that verifies certificates", ("httpx/_config.py",)),
    ("proxy configuration with credentials in the URL", ("httpx/_config.py",)),
    ("read proxy settings from environment variables", ("httpx/_utils.py",)),
    ("match a URL against a pattern to pick a transport mount", ("httpx/_utils.py",)),
    ("error raised for a 4xx or 5xx response status", ("httpx/_models.py", "httpx/_exceptions.py")),
    ("hierarchy of timeout exceptions", ("httpx/_exceptions.py",)),
    ("translate httpcore exceptions into httpx exceptions", ("httpx/_transports/default.py",)),
    ("send requests to a WSGI application in process", ("httpx/_transports/wsgi.py",)),
    ("call an ASGI app directly without a network", ("httpx/_transports/asgi.py",)),
    (
        "transport that answers requests with a handler function for tests",
        ("httpx/_transports/mock.py",),
    ),
    ("case-insensitive header mapping with repeated keys", ("httpx/_models.py",)),
    ("hide sensitive header values such as the authorization in repr", ("httpx/_models.py",)),
    ("parse the charset out of the content type header", ("httpx/_models.py",)),
    ("keep cookies and send them with later requests", ("httpx/_models.py", "httpx/_client.py")),
    ("iterate over the raw response body in byte chunks", ("httpx/_models.py",)),
    ("decode the response text using the detected encoding", ("httpx/_models.py",)),
    ("parse a URL into scheme, host, port, path and query", ("httpx/_urlparse.py",)),
    ("encode international domain names with IDNA", ("httpx/_urlparse.py",)),
    ("percent-encode unsafe characters in the path", ("httpx/_urlparse.py",)),
    ("remove dot segments from a path", ("httpx/_urlparse.py",)),
    ("immutable query parameters with methods to add and remove", ("httpx/_urls.py",)),
    ("join a relative URL onto a base URL", ("httpx/_urls.py",)),
    ("encode a multipart form upload with files", ("httpx/_multipart.py",)),
    ("guess the content type of an uploaded file from its name", ("httpx/_multipart.py",)),
    ("encode a JSON request body", ("httpx/_content.py",)),
    ("url-encoded form data body", ("httpx/_content.py",)),
    ("stream request content from an async iterator", ("httpx/_content.py",)),
    ("status code enum with reason phrases", ("httpx/_status_codes.py",)),
    ("command line client printing response headers with syntax highlighting", ("httpx/_main.py",)),
    ("download a response to a file with a progress bar", ("httpx/_main.py",)),
    ("top-level function that sends a GET request without a client", ("httpx/_api.py",)),
    ("stream a response with a context manager without creating a client", ("httpx/_api.py",)),
    ("async client closes its transports when the context exits", ("httpx/_client.py",)),
    (
        "base transport interface that handles a request and returns a response",
        ("httpx/_transports/base.py",),
    ),
    ("sync and async byte stream base classes", ("httpx/_types.py",)),
    ("event hooks called on every request and response", ("httpx/_client.py",)),
    ("check whether a hostname is an IPv4 or IPv6 address", ("httpx/_utils.py",)),
    ("default transport with retries and HTTP/2 support", ("httpx/_transports/default.py",)),
]

HELD_OUT: list[tuple[str, tuple[str, ...]]] = [
    (
        "reuse an idle connection from the pool for a request to the same origin",
        ("httpcore/_async/connection_pool.py", "httpcore/_sync/connection_pool.py"),
    ),
    (
        "close pooled connections whose keep-alive has expired",
        ("httpcore/_async/connection_pool.py", "httpcore/_sync/connection_pool.py"),
    ),
    (
        "tunnel HTTPS through an HTTP proxy with the CONNECT method",
        ("httpcore/_async/http_proxy.py", "httpcore/_sync/http_proxy.py"),
    ),
    (
        "SOCKS5 handshake with username and password authentication",
        ("httpcore/_async/socks_proxy.py", "httpcore/_sync/socks_proxy.py"),
    ),
    (
        "pick HTTP/2 or HTTP/1.1 from the protocol negotiated during the TLS handshake",
        ("httpcore/_async/connection.py", "httpcore/_sync/connection.py"),
    ),
    (
        "retry opening a TCP connection with exponential backoff",
        ("httpcore/_async/connection.py", "httpcore/_sync/connection.py"),
    ),
    (
        "HTTP/2 flow control window when sending request data",
        ("httpcore/_async/http2.py", "httpcore/_sync/http2.py"),
    ),
    (
        "send the connection preface and initial settings frame for HTTP/2",
        ("httpcore/_async/http2.py", "httpcore/_sync/http2.py"),
    ),
    (
        "read the HTTP/1.1 response body from the socket until the message ends",
        ("httpcore/_async/http11.py", "httpcore/_sync/http11.py"),
    ),
    ("network stream on anyio that can upgrade to TLS", ("httpcore/_backends/anyio.py",)),
    ("trio network backend", ("httpcore/_backends/trio.py",)),
    (
        "blocking socket stream wrapped in SSL for the synchronous backend",
        ("httpcore/_backends/sync.py",),
    ),
    (
        "fake network stream that replays a list of byte buffers in tests",
        ("httpcore/_backends/mock.py",),
    ),
    (
        "detect whether the code runs under asyncio or trio",
        ("httpcore/_synchronization.py", "httpcore/_backends/auto.py"),
    ),
    ("lock and semaphore that work under both asyncio and trio", ("httpcore/_synchronization.py",)),
    ("report each step of a request to a tracing callback", ("httpcore/_trace.py",)),
    (
        "turn low-level socket errors into the library's own exceptions",
        ("httpcore/_exceptions.py", "httpx/_transports/default.py"),
    ),
    ("origin made of scheme, host and port", ("httpcore/_models.py",)),
    (
        "default SSL context loaded with certifi's certificate bundle",
        ("httpcore/_ssl.py", "httpx/_config.py"),
    ),
    ("send one request with a temporary pool that is closed afterwards", ("httpcore/_api.py",)),
    (
        "abstract interface every connection implements: is it idle, closed, expired",
        ("httpcore/_async/interfaces.py", "httpcore/_sync/interfaces.py"),
    ),
    (
        "network backend interface to open TCP and unix socket streams",
        ("httpcore/_backends/base.py",),
    ),
    ("state machine tracking the client and server side of a connection", ("h11/_state.py",)),
    ("parse a body sent with chunked transfer encoding", ("h11/_readers.py",)),
    ("serialize the request line and headers to bytes", ("h11/_writers.py",)),
    ("validate header names and values", ("h11/_headers.py",)),
    ("regular expressions for the tokens of the HTTP grammar", ("h11/_abnf.py",)),
    ("buffer incoming bytes and cut out the next line", ("h11/_receivebuffer.py",)),
    (
        "switch protocols after an upgrade or CONNECT is accepted",
        ("h11/_state.py", "h11/_connection.py"),
    ),
    (
        "decide from the Connection header whether to keep the connection alive",
        ("h11/_connection.py",),
    ),
    ("event classes for request, response, data and end of message", ("h11/_events.py",)),
    ("error raised when the peer sends malformed HTTP", ("h11/_util.py",)),
    ("work out how the body is framed: content length or chunked", ("h11/_connection.py",)),
    ("reject a Content-Length header with conflicting values", ("h11/_headers.py",)),
]

QUERIES = HTTPX + HELD_OUT
