// VU classes that misbehave beside steady ones, in JavaScript: a VU that
// spins, one that throws, one that eats memory; each ends only its own
// iteration. Class sizes from -e: STEADY (default 2), SPIN, FAIL, HOG
// (default 0 each); steady VUs GET BASE_URL every THINK_MS (default 20) ms.

import http from 'runner/http';
import { check, group, sleep } from 'runner';
import { Counter } from 'runner/metrics';

const count = (key, fallback = 0) => Number(__ENV[key] ?? fallback);
const steadyIterations = new Counter('steady_iterations');

export const options = {
  scenarios: {
    steady: { executor: 'constant-vus', vus: count('STEADY', 2), exec: 'steady' },
    spin: { executor: 'constant-vus', vus: count('SPIN'), exec: 'spin' },
    fail: { executor: 'constant-vus', vus: count('FAIL'), exec: 'fail' },
    hog: { executor: 'constant-vus', vus: count('HOG'), exec: 'hog' },
  },
};

export function steady() {
  const base = __ENV.BASE_URL || 'http://127.0.0.1:8080';
  group('home', () => {
    const r = http.get(`${base}/`, { responseType: 'none' });
    check(r, { 'status is 200': (r) => r.status === 200 });
  });
  steadyIterations.add(1);
  sleep(count('THINK_MS', 20) / 1000);
}

export function spin() {
  let n = 0;
  for (;;) n++;
}

export function fail() {
  sleep(0.05);
  throw new TypeError('chaos: failing on purpose');
}

export function hog() {
  const hoard = [];
  for (;;) hoard.push(new Uint8Array(1 << 20).fill(1));
}
