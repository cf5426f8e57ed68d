// A k6 script, as a k6 user writes one: scenarios with their own
// executors, thresholds on tagged metrics, groups, a custom trend. The
// only changes from k6: imports say 'runner' for 'k6', and the script is
// built into a component (`node sdk/build.mjs shop.js`).
//
// - `api`: constant-arrival-rate, 20 iterations per second.
// - `browser`: ramping-vus up to 4 VUs, then holding, with think time.
// - `batch`: per-vu-iterations, 2 VUs × 3, with its own env value.

import http from 'runner/http';
import { check, group, sleep } from 'runner';
import { Counter, Trend } from 'runner/metrics';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const pageTime = new Trend('page_time', true);
const viewed = new Counter('products_viewed');

export const options = {
  scenarios: {
    api: { executor: 'constant-arrival-rate', rate: 20, timeUnit: '1s', duration: '3s', preAllocatedVUs: 2, maxVUs: 10, exec: 'api' },
    browser: { executor: 'ramping-vus', startVUs: 0, stages: [{ duration: '1s', target: 4 }, { duration: '2s', target: 4 }], exec: 'browse' },
    batch: { executor: 'per-vu-iterations', vus: 2, iterations: 3, exec: 'batch', env: { ROLE: 'nightly' } },
  },
  thresholds: {
    checks: ['rate==1'],
    'http_req_duration{name:api}': ['p(99)<500'],
    http_req_failed: [{ threshold: 'rate<0.05', abortOnFail: true }],
  },
};

export function api() {
  const r = http.get(`${BASE}/`, { tags: { name: 'api' } });
  check(r, { 'api status 200': (r) => r.status === 200, 'api says ok': (r) => r.body.startsWith('ok') });
}

export function browse() {
  group('home', () => {
    const r = http.get(`${BASE}/`, { tags: { name: 'home' } });
    check(r, { 'home status 200': (r) => r.status === 200 });
    pageTime.add(r.timings.duration, { page: 'home' });
  });
  group('product', () => {
    const r = http.get(`${BASE}/delay/5`, { tags: { name: 'product' } });
    check(r, { 'product status 200': (r) => r.status === 200 });
    pageTime.add(r.timings.duration, { page: 'product' });
    if (r.status === 200) viewed.add(1, { product: 'p-1' });
  });
  sleep(0.1);
}

export function batch() {
  const r = http.get(`${BASE}/bytes/64`, { tags: { name: `batch-${__ENV.ROLE}` }, responseType: 'binary' });
  check(r, { 'batch got 64 bytes': (r) => r.body.byteLength === 64 });
  sleep(0.5);
}
