// The JavaScript guest SDK of `runner`: write a scenario as you would a k6
// script.
//
//   import http from 'runner/http';
//   import { check, sleep } from 'runner';
//
//   export const options = { vus: 10, duration: '30s',
//     thresholds: { http_req_duration: ['p(95)<200'] } };
//
//   export default function () {
//     const r = http.get(`${__ENV.BASE_URL}/`);
//     check(r, { 'status is 200': (r) => r.status === 200 });
//     sleep(1);
//   }
//
// `node sdk/build.mjs app.js -o app.wasm` (what `runner new --lang js`
// sets up as `npm run build`) makes it a component; `runner run app.wasm`
// runs it, each VU in its own sandbox. An uncaught exception fails only
// that iteration, its stack in the runner's log.

import * as host from 'runner:scenario/vu@0.1.0';
import * as metrics from 'runner:scenario/metrics@0.1.0';
import { groups, nanos, tagPairs, write } from './_core.js';

export { RunnerError } from './_core.js';

/**
 * k6's check: runs each named condition of `sets` on `value` (a function
 * of the value, or a plain boolean), records each as a check and returns
 * whether all passed. `tags` tag the checks.
 */
export function check(value, sets, tags) {
  let all = true;
  const pairs = tagPairs(tags);
  for (const [name, condition] of Object.entries(sets ?? {})) {
    let pass;
    try {
      pass = Boolean(typeof condition === 'function' ? condition(value) : condition);
    } catch (e) {
      write('warn', [`check "${name}" threw:`, e]);
      pass = false;
    }
    metrics.check(name, pass, pairs);
    all = all && pass;
  }
  return all;
}

/** Suspends this VU only, for `seconds` (a number, or text like "500ms"). */
export function sleep(seconds) {
  const n = nanos(seconds, 's');
  if (n > 0) host.sleep(n);
}

/**
 * Runs `fn` inside group `name`: its requests, checks and metrics are
 * tagged `group=outer::name`, and its time is recorded as `group_duration`.
 * Returns what `fn` returns.
 */
export function group(name, fn) {
  const full = groups.length ? `${groups[groups.length - 1]}::${name}` : String(name);
  groups.push(full);
  const started = host.now();
  try {
    return fn();
  } finally {
    groups.pop();
    metrics.timing('group_duration', Number(host.now()) - Number(started), [['group', full]]);
  }
}

/** Fails the iteration with `message` (k6's `fail`). */
export function fail(message) {
  throw new Error(message ?? 'fail() called');
}

/** This virtual user: its id (0-based), class, iteration and environment. */
export const vu = {
  /** This VU's number, unique within the run (0-based). */
  get id() {
    return host.id();
  },
  /** The name of this VU's class (a k6 scenario's name). */
  get className() {
    return host.className();
  },
  /** The number of this VU's current iteration (0-based). */
  get iteration() {
    return Number(host.iteration());
  },
  /** A value given with `runner run -e KEY=VALUE`, or `fallback`. */
  env(key, fallback) {
    return host.env(String(key)) ?? fallback;
  },
  /** Seconds since the run started (monotonic). */
  now() {
    return Number(host.now()) / 1e9;
  },
  /** Wall-clock milliseconds since the Unix epoch, from the runner's clock. */
  unixTimeMs() {
    return Math.floor(Number(host.unixTime()) / 1e6);
  },
};

// Math.random: QuickJS's generator state is fixed when the component is
// pre-initialized (Wizer), so every VU would draw the same numbers. This
// one is seeded on first use from the VU's seed (from `--seed` and its
// id): each VU its own stream, which the same seed replays.
let nextRandom;
Math.random = () => {
  if (nextRandom === undefined) {
    const seed = BigInt(host.randomSeed());
    nextRandom = sfc32(
      Number(seed & 0xffffffffn),
      Number((seed >> 32n) & 0xffffffffn),
      0x9e3779b9,
      0x243f6a88,
    );
    // Mix the seed in before the first value is used.
    for (let i = 0; i < 12; i++) nextRandom();
  }
  return nextRandom();
};

/** Chris Doty-Humphrey's Small Fast Counting generator (32-bit): values in [0, 1). */
function sfc32(a, b, c, d) {
  return () => {
    const t = (((a + b) | 0) + d) | 0;
    d = (d + 1) | 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) | 0;
    c = (c << 21) | (c >>> 11);
    c = (c + t) | 0;
    return (t >>> 0) / 4294967296;
  };
}

// k6's globals: __ENV (values given with -e), __VU (1-based, as in k6)
// and __ITER (0-based); console writes to the runner's log.
globalThis.__ENV = new Proxy({}, {
  get: (_, key) => (typeof key === 'string' ? host.env(key) : undefined),
  has: (_, key) => typeof key === 'string' && host.env(key) !== undefined,
});
Object.defineProperty(globalThis, '__VU', { get: () => host.id() + 1, configurable: true });
Object.defineProperty(globalThis, '__ITER', { get: () => Number(host.iteration()), configurable: true });
globalThis.console = {
  log: (...a) => write('info', a),
  info: (...a) => write('info', a),
  debug: (...a) => write('debug', a),
  warn: (...a) => write('warn', a),
  error: (...a) => write('error', a),
};

