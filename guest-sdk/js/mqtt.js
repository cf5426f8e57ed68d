// MQTT 3.1.1 and 5 clients, timed by the host (connect, publish, message
// latency). A failed call throws a RunnerError whose `kind` names it.
//
//   import mqtt from 'runner/mqtt';
//   const c = mqtt.connect('mqtt://127.0.0.1:1883', { name: 'telemetry' });
//   c.subscribe('sensors/#', { qos: 1 });
//   c.publish('sensors/1', 'hello', { qos: 1 });
//   const m = c.nextMessage(5);   // seconds; null when none came
//   c.close();

import * as host from 'runner:scenario/mqtt@0.1.0';
import { bytes, call, fromUtf8, nanos } from './_core.js';

const QOS = ['at-most-once', 'at-least-once', 'exactly-once'];

function qosOf(n) {
  const q = QOS[n ?? 0];
  if (q === undefined) throw new TypeError(`qos must be 0, 1 or 2, not ${n}`);
  return q;
}

/** A connection to a broker. `close()` (or `using`) ends it. */
export class Connection {
  constructor(handle) {
    this.handle = handle;
  }

  /** Publishes `payload` (text or bytes) to `topic`; `{ qos, retain, name }`. */
  publish(topic, payload, o = {}) {
    call(() => this.handle.publish(String(topic), bytes(payload), qosOf(o.qos), Boolean(o.retain), o.name));
  }

  /** Subscribes; returns the QoS the broker granted (0, 1 or 2). */
  subscribe(filter, o = {}) {
    return QOS.indexOf(call(() => this.handle.subscribe(String(filter), qosOf(o.qos), o.name)));
  }

  /** Ends a subscription. */
  unsubscribe(filter) {
    call(() => this.handle.unsubscribe(String(filter)));
  }

  /**
   * The next message, or null after `timeout` seconds (default 1): `topic`,
   * `payload` (text; `bytes` for the raw bytes), `qos`, `retain` and
   * `latency` (ms, when the sender stamped it).
   */
  nextMessage(timeout = 1) {
    const m = call(() => this.handle.nextMessage(nanos(timeout, 's')));
    if (m === undefined || m === null) return null;
    return {
      topic: m.topic,
      bytes: m.payload,
      payload: fromUtf8(m.payload),
      qos: QOS.indexOf(m.qos),
      retain: m.retain,
      latency: m.latency === undefined ? null : Number(m.latency) / 1e6,
    };
  }

  /** Whether the connection is up. */
  isConnected() {
    return this.handle.isConnected();
  }

  /** Disconnects cleanly and frees the connection. */
  close() {
    try {
      if (this.handle.isConnected()) call(() => this.handle.disconnect());
    } finally {
      this.handle[Symbol.dispose]();
    }
  }

  [Symbol.dispose]() {
    this.close();
  }
}

/**
 * Connects to `mqtt://host:port` (`mqtts://` for TLS). Options: `clientId`,
 * `cleanSession` (default true), `keepAlive` (seconds or text), `username`,
 * `password`, `version` (4 for 3.1.1, the default, or 5), `timeout`, `name`.
 */
export function connect(url, o = {}) {
  return new Connection(call(() => host.connect({
    url: String(url),
    clientId: o.clientId,
    cleanSession: o.cleanSession ?? true,
    keepAlive: nanos(o.keepAlive, 's'),
    username: o.username,
    password: o.password,
    protocol: o.version === 5 ? 'v5' : 'v311',
    timeout: nanos(o.timeout, 's'),
    name: o.name,
  })));
}

export default { connect, Connection };
