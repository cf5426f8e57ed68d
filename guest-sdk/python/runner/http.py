"""HTTP requests (HTTP/1.1, HTTP/2, TLS), timed by the host.

``http.get(url)`` returns a :class:`Response`; a failed request (refused,
timed out, denied...) raises :class:`RunnerError` with its ``kind``. The
runner counts every request under its name (``name=``, default method and
URL) and tags.
"""

import json as _json

from wit_world.imports import http as _wit

from . import _groups
from ._errors import RunnerError, call
from ._options import duration_ns

__all__ = ["Response", "RunnerError", "delete", "get", "head", "patch", "post", "put", "request"]

_METHODS = {
    "GET": _wit.Method_Get, "HEAD": _wit.Method_Head, "POST": _wit.Method_Post,
    "PUT": _wit.Method_Put, "DELETE": _wit.Method_Delete, "PATCH": _wit.Method_Patch,
    "OPTIONS": _wit.Method_Options,
}


class Response:
    """A complete response: ``status``, ``body`` (bytes), ``text``,
    ``json()``, ``header(name)``, ``headers`` and ``timings`` (seconds)."""

    def __init__(self, handle, keep_body):
        self.status = handle.status()
        self.headers = handle.headers()
        self.body = handle.body() if keep_body else b""
        t = handle.timings()
        self.timings = {k: getattr(t, k) / 1e9 for k in
                        ("dns", "connect", "tls", "wait", "receive", "total")}
        # Hand the host's copy back at once: VUs hold few handles.
        handle.__exit__(None, None, None)

    @property
    def text(self):
        """The body as text (UTF-8)."""
        return self.body.decode("utf-8", "replace")

    def json(self):
        """The body parsed as JSON."""
        return _json.loads(self.body)

    def header(self, name):
        """The first value of header ``name`` (any case), or None."""
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


def request(method, url, body=b"", headers=None, name=None, tags=None,
            timeout=None, version=None, json=None, discard_body=False):
    """Sends a request and waits for the whole response (suspending only
    this VU). ``json=`` sends a JSON body; ``version`` is 1 or 2; ``timeout``
    in seconds or as text (``"5s"``)."""
    hdrs = [(str(k), str(v)) for k, v in (headers or {}).items()]
    if json is not None:
        body = _json.dumps(json).encode()
        if not any(k.lower() == "content-type" for k, _ in hdrs):
            hdrs.append(("content-type", "application/json"))
    if isinstance(body, str):
        body = body.encode()
    m = method.upper()
    pairs = [(str(k), str(v)) for k, v in (tags or {}).items()]
    group = _groups.current()
    if group is not None and not any(k == "group" for k, _ in pairs):
        pairs.append(("group", group))
    req = _wit.Request(
        method=_METHODS[m]() if m in _METHODS else _wit.Method_Other(m),
        url=str(url),
        headers=hdrs,
        body=bytes(body),
        timeout=duration_ns(timeout),
        name=name,
        version={None: None, 1: _wit.Version.HTTP1, 2: _wit.Version.HTTP2}[version],
        discard_body=bool(discard_body),
        tags=pairs,
    )
    return Response(call(_wit.send, req), not discard_body)


def get(url, **kw):
    """A GET request; see :func:`request`."""
    return request("GET", url, **kw)


def head(url, **kw):
    """A HEAD request."""
    return request("HEAD", url, **kw)


def post(url, body=b"", **kw):
    """A POST request."""
    return request("POST", url, body=body, **kw)


def put(url, body=b"", **kw):
    """A PUT request."""
    return request("PUT", url, body=body, **kw)


def patch(url, body=b"", **kw):
    """A PATCH request."""
    return request("PATCH", url, body=body, **kw)


def delete(url, **kw):
    """A DELETE request."""
    return request("DELETE", url, **kw)


RunnerError = RunnerError
