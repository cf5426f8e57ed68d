"""NATS clients (core and JetStream publish), timed by the host. Failures
raise :class:`RunnerError`."""

from wit_world.imports import nats as _wit

from ._errors import RunnerError, call
from ._options import duration_ns

__all__ = ["Connection", "Message", "RunnerError", "Subscription", "connect"]


class Message:
    """A message or reply: ``subject``, ``reply``, ``payload`` (bytes),
    ``headers`` and ``latency`` (seconds, when the sender stamped it)."""

    def __init__(self, m):
        self.subject, self.reply, self.payload, self.headers = m.subject, m.reply, m.payload, m.headers
        self.latency = None if m.latency is None else m.latency / 1e9


class Subscription:
    """A subscription; ``with`` ends it."""

    def __init__(self, handle):
        self._s = handle

    def next_message(self, timeout=1.0):
        """The next message, or None after ``timeout`` seconds."""
        m = call(self._s.next_message, duration_ns(timeout))
        return None if m is None else Message(m)

    def unsubscribe(self):
        """Ends the subscription."""
        call(self._s.unsubscribe)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._s.__exit__(*exc)


def _bytes(payload):
    return payload.encode() if isinstance(payload, str) else bytes(payload)


class Connection:
    """A connection to a server; ``with`` closes it."""

    def __init__(self, handle):
        self._c = handle

    def publish(self, subject, payload, reply=None, headers=None, name=None):
        """Publishes ``payload`` (bytes or text) to ``subject``."""
        hdrs = [(str(k), str(v)) for k, v in (headers or {}).items()]
        call(self._c.publish, subject, _bytes(payload), reply, hdrs, name)

    def subscribe(self, subject, queue_group=None, name=None):
        """Subscribes to ``subject`` (in ``queue_group``, if given)."""
        return Subscription(call(self._c.subscribe, subject, queue_group, name))

    def request(self, subject, payload, timeout=None, name=None):
        """Sends a request and waits for its reply."""
        return Message(call(self._c.request, subject, _bytes(payload), duration_ns(timeout), name))

    def jetstream_publish(self, subject, payload, name=None):
        """Publishes to a JetStream stream; returns the stream sequence."""
        return call(self._c.jetstream_publish, subject, _bytes(payload), name)

    def flush(self):
        """Waits until the server has everything sent so far."""
        call(self._c.flush)

    def is_connected(self):
        """Whether the connection is up."""
        return self._c.is_connected()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._c.__exit__(*exc)


def connect(url, token=None, username=None, password=None, tls=False,
            timeout=None, name=None):
    """Connects to ``nats://host:port``."""
    o = _wit.ConnectOptions(url=url, token=token, username=username, password=password,
                            tls=tls, timeout=duration_ns(timeout), name=name)
    return Connection(call(_wit.connect, o))
