// Custom metrics in k6's shape: `new Counter('orders').add(1, { shop: 'a' })`.
// Each lands in the run's mergeable aggregates, in the summary and the JSON.

import * as host from 'runner:scenario/metrics@0.1.0';
import { tagPairs } from './_core.js';

/** A counter: `add(n)` adds a non-negative whole number. */
export class Counter {
  constructor(name) {
    this.name = String(name);
  }

  add(value = 1, tags) {
    host.counter(this.name, Math.max(0, Math.round(Number(value))), tagPairs(tags));
  }
}

/** A gauge: `add(v)` sets it; the summary keeps the last, min and max. */
export class Gauge {
  constructor(name) {
    this.name = String(name);
  }

  add(value, tags) {
    host.gauge(this.name, Number(value), tagPairs(tags));
  }
}

/**
 * A rate: the share of `add(v)` calls with a truthy `v`. It is recorded as
 * a check of the same name (threshold: `checks{name:NAME} rate>0.95`).
 */
export class Rate {
  constructor(name) {
    this.name = String(name);
  }

  add(value, tags) {
    host.check(this.name, Boolean(value), tagPairs(tags));
  }
}

/**
 * A trend: a histogram of `add(v)` values. With `isTime`, values are
 * milliseconds, shown and thresholded as times; otherwise non-negative
 * numbers (rounded to whole numbers).
 */
export class Trend {
  constructor(name, isTime = false) {
    this.name = String(name);
    this.isTime = Boolean(isTime);
  }

  add(value, tags) {
    const v = Math.max(0, Number(value));
    if (this.isTime) host.timing(this.name, Math.round(v * 1e6), tagPairs(tags));
    else host.histogram(this.name, Math.round(v), tagPairs(tags));
  }
}
