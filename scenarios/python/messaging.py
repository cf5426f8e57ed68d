"""MQTT and NATS from Python: each iteration connects to both, subscribes
to its own topic and subject, publishes MESSAGES (default 5) to each and
reads them back. MQTT_URL and NATS_URL say where the brokers are.
"""

from runner import Scenario, check, mqtt, nats, vu  # noqa: F401


def default():
    n = int(vu.env("MESSAGES", "5"))
    me = f"py-{vu.id()}-{vu.iteration()}"
    with mqtt.connect(vu.env("MQTT_URL", "mqtt://127.0.0.1:1883"), name="py-mqtt") as m:
        m.subscribe(f"py/{me}", qos=1, name="py-topic")
        for i in range(n):
            m.publish(f"py/{me}", f"message {i}", qos=1, name="py-topic")
        got = [m.next_message(timeout=5) for _ in range(n)]
        check("mqtt: every message came back", all(g is not None for g in got))
        m.disconnect()
    with nats.connect(vu.env("NATS_URL", "nats://127.0.0.1:4222"), name="py-nats") as c:
        with c.subscribe(f"py.{me}", name="py-subject") as s:
            for i in range(n):
                c.publish(f"py.{me}", f"message {i}", name="py-subject")
            c.flush()
            got = [s.next_message(timeout=5) for _ in range(n)]
            check("nats: every message came back", all(g is not None for g in got))
