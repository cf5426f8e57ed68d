"""MQTT 3.1.1 and 5 clients, timed by the host (connect, publish, message
latency). Failures raise :class:`RunnerError`."""

from wit_world.imports import mqtt as _wit

from ._errors import RunnerError, call
from ._options import duration_ns

__all__ = ["Connection", "Message", "RunnerError", "connect"]


class Message:
    """A received message: ``topic``, ``payload`` (bytes), ``qos``,
    ``retain`` and ``latency`` (seconds, when the sender stamped it)."""

    def __init__(self, m):
        self.topic, self.payload, self.qos, self.retain = m.topic, m.payload, m.qos.value, m.retain
        self.latency = None if m.latency is None else m.latency / 1e9


class Connection:
    """A connection to a broker; ``with`` closes it."""

    def __init__(self, handle):
        self._c = handle

    def publish(self, topic, payload, qos=0, retain=False, name=None):
        """Publishes ``payload`` (bytes or text) to ``topic``."""
        if isinstance(payload, str):
            payload = payload.encode()
        call(self._c.publish, topic, bytes(payload), _wit.Qos(qos), retain, name)

    def subscribe(self, topic_filter, qos=0, name=None):
        """Subscribes; returns the QoS the broker granted."""
        return call(self._c.subscribe, topic_filter, _wit.Qos(qos), name).value

    def unsubscribe(self, topic_filter):
        """Ends a subscription."""
        call(self._c.unsubscribe, topic_filter)

    def next_message(self, timeout=1.0):
        """The next message, or None after ``timeout`` seconds."""
        m = call(self._c.next_message, duration_ns(timeout))
        return None if m is None else Message(m)

    def is_connected(self):
        """Whether the connection is up."""
        return self._c.is_connected()

    def disconnect(self):
        """Closes the connection cleanly."""
        call(self._c.disconnect)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._c.__exit__(*exc)


def connect(url, client_id=None, clean_session=True, keep_alive=None,
            username=None, password=None, version=4, timeout=None, name=None):
    """Connects to ``mqtt://host:port`` (``mqtts://`` for TLS); ``version``
    is 4 (3.1.1) or 5."""
    o = _wit.ConnectOptions(
        url=url, client_id=client_id, clean_session=clean_session,
        keep_alive=duration_ns(keep_alive), username=username, password=password,
        protocol=_wit.Protocol.V5 if version == 5 else _wit.Protocol.V311,
        timeout=duration_ns(timeout), name=name,
    )
    return Connection(call(_wit.connect, o))
