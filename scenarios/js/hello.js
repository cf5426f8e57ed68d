// A scenario in JavaScript, in k6's shape (what `runner new --lang js`
// writes): each VU requests BASE_URL, checks the answer, then thinks for
// THINK_MS milliseconds (default 100). Build: `npm run build`; run:
// `runner run app.wasm --vus 10 --duration 30s -e BASE_URL=http://...`.

import http from 'runner/http';
import { check, sleep } from 'runner';

const BASE = __ENV.BASE_URL || 'http://127.0.0.1:8080';
const THINK = Number(__ENV.THINK_MS || 100) / 1000;

export const options = {
  thresholds: {
    http_req_failed: ['rate<0.01'],
    http_req_duration: ['p(95)<500'],
  },
};

export default function () {
  const r = http.get(`${BASE}/`, { responseType: 'none' });
  check(r, { 'status is 200': (r) => r.status === 200 });
  sleep(THINK);
}
