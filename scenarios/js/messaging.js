// MQTT and NATS from JavaScript: each iteration connects to both,
// subscribes to its own topic and subject, publishes MESSAGES (default 5)
// to each and reads them back. MQTT_URL and NATS_URL say where the
// brokers are.

import mqtt from 'runner/mqtt';
import nats from 'runner/nats';
import { check, vu } from 'runner';

export default function () {
  const n = Number(__ENV.MESSAGES || 5);
  const me = `js-${vu.id}-${vu.iteration}`;

  const m = mqtt.connect(__ENV.MQTT_URL || 'mqtt://127.0.0.1:1883', { name: 'js-mqtt' });
  try {
    m.subscribe(`js/${me}`, { qos: 1, name: 'js-topic' });
    for (let i = 0; i < n; i++) m.publish(`js/${me}`, `message ${i}`, { qos: 1, name: 'js-topic' });
    const got = Array.from({ length: n }, () => m.nextMessage(5));
    check(got, { 'mqtt: every message came back': (g) => g.every((x) => x !== null && x.payload.startsWith('message')) });
  } finally {
    m.close();
  }

  const c = nats.connect(__ENV.NATS_URL || 'nats://127.0.0.1:4222', { name: 'js-nats' });
  try {
    const s = c.subscribe(`js.${me}`, { name: 'js-subject' });
    for (let i = 0; i < n; i++) c.publish(`js.${me}`, `message ${i}`, { name: 'js-subject' });
    c.flush();
    const got = Array.from({ length: n }, () => s.nextMessage(5));
    check(got, { 'nats: every message came back': (g) => g.every((x) => x !== null) });
    s.close();
  } finally {
    c.close();
  }
}
