// An idle JavaScript VU (it sleeps 1 s per iteration): what a VU of the
// engine itself costs. Used by the density benchmark.

import { sleep } from 'runner';

export default function () {
  sleep(1);
}
