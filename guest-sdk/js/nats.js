// NATS clients (core and JetStream publish), timed by the host. A failed
// call throws a RunnerError whose `kind` names it (`timeout`,
// `no-responders`...).
//
//   import nats from 'runner/nats';
//   const c = nats.connect('nats://127.0.0.1:4222', { name: 'orders' });
//   const s = c.subscribe('orders.*');
//   c.publish('orders.1', 'hello');
//   const m = s.nextMessage(5);   // seconds; null when none came
//   s.close(); c.close();

import * as host from 'runner:scenario/nats@0.1.0';
import { bytes, call, fromUtf8, nanos } from './_core.js';

function messageOf(m) {
  return {
    subject: m.subject,
    reply: m.reply ?? null,
    bytes: m.payload,
    payload: fromUtf8(m.payload),
    headers: Object.fromEntries(m.headers),
    latency: m.latency === undefined ? null : Number(m.latency) / 1e6,
  };
}

/** A subscription: `nextMessage(seconds)`, `close()`. */
export class Subscription {
  constructor(handle) {
    this.handle = handle;
  }

  /** The next message, or null after `timeout` seconds (default 1). */
  nextMessage(timeout = 1) {
    const m = call(() => this.handle.nextMessage(nanos(timeout, 's')));
    return m === undefined || m === null ? null : messageOf(m);
  }

  /** Unsubscribes and frees the subscription. */
  close() {
    try {
      call(() => this.handle.unsubscribe());
    } finally {
      this.handle[Symbol.dispose]();
    }
  }

  [Symbol.dispose]() {
    this.close();
  }
}

/** A connection to a NATS server. */
export class Connection {
  constructor(handle) {
    this.handle = handle;
  }

  /** Publishes `payload` to `subject`; `{ reply, headers, name }`. */
  publish(subject, payload, o = {}) {
    const headers = Object.entries(o.headers ?? {}).map(([k, v]) => [String(k), String(v)]);
    call(() => this.handle.publish(String(subject), bytes(payload), o.reply, headers, o.name));
  }

  /** Subscribes to `subject`; `{ queue, name }`. */
  subscribe(subject, o = {}) {
    return new Subscription(call(() => this.handle.subscribe(String(subject), o.queue, o.name)));
  }

  /** Sends a request and waits for its reply; `{ timeout (seconds), name }`. */
  request(subject, payload, o = {}) {
    return messageOf(call(() => this.handle.request(String(subject), bytes(payload), nanos(o.timeout, 's'), o.name)));
  }

  /** Publishes to a JetStream stream; returns the stored sequence number. */
  jetstreamPublish(subject, payload, o = {}) {
    return Number(call(() => this.handle.jetstreamPublish(String(subject), bytes(payload), o.name)));
  }

  /** Waits until the server has processed everything sent so far. */
  flush() {
    call(() => this.handle.flush());
  }

  /** Whether the connection is up. */
  isConnected() {
    return this.handle.isConnected();
  }

  /** Frees the connection (the runner closes it). */
  close() {
    this.handle[Symbol.dispose]();
  }

  [Symbol.dispose]() {
    this.close();
  }
}

/**
 * Connects to `nats://host:port`. Options: `token`, `username`,
 * `password`, `tls`, `timeout` (seconds or text), `name`.
 */
export function connect(url, o = {}) {
  return new Connection(call(() => host.connect({
    url: String(url),
    token: o.token,
    username: o.username,
    password: o.password,
    tls: Boolean(o.tls),
    timeout: nanos(o.timeout, 's'),
    name: o.name,
  })));
}

export default { connect, Connection, Subscription };
