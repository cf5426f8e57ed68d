// VU classes that misbehave beside steady ones, in JavaScript: a VU that
// spins, one that throws, one that eats memory; each ends only its own
// iteration. Class sizes from -e: STEADY (default 2), SPIN, FAIL, HOG,
// RANDOM (default 0 each); steady VUs GET BASE_URL every THINK_MS (default
// 20) ms; RANDOM VUs (class `paths`) GET BASE_URL/VU/N with N from
// Math.random (for tests that --seed replays it).

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
    paths: { executor: 'constant-vus', vus: count('RANDOM'), exec: 'paths' },
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

export function paths() {
  const base = __ENV.BASE_URL || 'http://127.0.0.1:8080';
  const n = Math.floor(Math.random() * 1e6);
  const r = http.get(`${base}/${__VU - 1}/${n}`, { responseType: 'none', tags: { name: 'random' } });
  check(r, { 'random: status is 200': (r) => r.status === 200 });
}
