// The component's export, made from a k6-shaped script module: its
// `options` become the runner's scenario options and each VU class runs
// the function its k6 scenario names (`exec`, default `default`).

import { panicked } from 'runner:scenario/vu@0.1.0';
import { nanos, seconds, show } from './_core.js';

const EXECUTORS = [
  'constant-vus', 'per-vu-iterations', 'shared-iterations', 'ramping-vus',
  'constant-arrival-rate', 'ramping-arrival-rate',
];

function stagesOf(stages, perSecond = 1) {
  return (stages ?? []).map((s) => ({ duration: nanos(s.duration, 's'), target: Number(s.target) * perSecond }));
}

function count(v) {
  return v === undefined || v === null ? undefined : Math.max(0, Math.floor(Number(v)));
}

// One k6 scenario (or the top-level options) as a VU class.
function classOf(name, s) {
  const executor = s.executor ?? (s.stages ? 'ramping-vus' : s.iterations !== undefined ? 'shared-iterations' : 'constant-vus');
  if (!EXECUTORS.includes(executor)) {
    throw new Error(`scenario "${name}": executor "${executor}" is not supported (use one of ${EXECUTORS.join(', ')})`);
  }
  const c = {
    name,
    vus: 1,
    rate: undefined,
    maxVus: undefined,
    stages: [],
    startRate: undefined,
    poissonStart: false,
    thinkTime: undefined,
    pacing: undefined,
    iterations: undefined,
    env: Object.entries(s.env ?? {}).map(([k, v]) => [String(k), String(v)]),
  };
  const perSecond = 1 / (seconds(s.timeUnit ?? '1s') || 1);
  const vus = count(s.vus) ?? 1;
  switch (executor) {
    case 'constant-vus':
      c.vus = vus;
      break;
    case 'per-vu-iterations':
      c.vus = vus;
      c.iterations = count(s.iterations) ?? 1;
      break;
    case 'shared-iterations':
      // The runner counts iterations per VU: the total is shared out,
      // rounded up.
      c.vus = vus;
      c.iterations = (Math.ceil((count(s.iterations) ?? 1) / Math.max(vus, 1)));
      break;
    case 'ramping-vus':
      c.vus = Math.max(count(s.startVUs) ?? 0, ...(s.stages ?? []).map((st) => count(st.target) ?? 0), 1);
      c.stages = stagesOf(s.stages);
      break;
    case 'constant-arrival-rate':
      c.rate = Number(s.rate) * perSecond;
      c.vus = count(s.preAllocatedVUs) ?? 1;
      c.maxVus = count(s.maxVUs);
      break;
    case 'ramping-arrival-rate':
      c.rate = Number(s.startRate ?? 0) * perSecond;
      c.vus = count(s.preAllocatedVUs) ?? 1;
      c.maxVus = count(s.maxVUs);
      c.stages = stagesOf(s.stages, perSecond);
      break;
  }
  return c;
}

// k6's thresholds object ({ metric: ['p(95)<200', { threshold, abortOnFail }] })
// as the runner's lines ("metric p(95)<200", "... abort").
function thresholdsOf(t) {
  const out = [];
  for (const [metric, list] of Object.entries(t ?? {})) {
    for (const item of Array.isArray(list) ? list : [list]) {
      if (typeof item === 'string') out.push(`${metric} ${item}`);
      else out.push(`${metric} ${item.threshold}${item.abortOnFail ? ' abort' : ''}`);
    }
  }
  return out;
}

function durationOf(s) {
  if (s.duration !== undefined) return nanos(s.duration, 's');
  if (s.stages) return (s.stages ?? []).reduce((sum, st) => sum + nanos(st.duration, 's'), 0);
  return undefined;
}

/** The runner's scenario options, and which function each class runs. */
export function optionsOf(o) {
  const exec = new Map();
  const classes = [];
  let duration;
  const longest = (d) => {
    if (d !== undefined && (duration === undefined || d > duration)) duration = d;
  };
  if (o.scenarios) {
    for (const [name, s] of Object.entries(o.scenarios)) {
      classes.push(classOf(name, s));
      exec.set(name, s.exec ?? 'default');
      longest(durationOf(s));
    }
  } else if (o.vus !== undefined || o.iterations !== undefined || o.stages !== undefined) {
    classes.push(classOf('default', o));
    exec.set('default', 'default');
  }
  longest(o.duration === undefined ? undefined : nanos(o.duration, 's'));
  if (!o.scenarios && o.stages) longest(durationOf(o));
  return { wit: { classes, duration, thresholds: thresholdsOf(o.thresholds) }, exec };
}

/** The `scenario` export of the component, for the script module that
 * `load` evaluates (once, at the first call). */
export function scenarioFor(load) {
  let module;
  let exec;
  const script = () => (module ??= load());
  // The runner may ask for the options in another instance than the VU's.
  const execOf = () => (exec ??= optionsOf(script().options ?? {}).exec);
  return {
    options() {
      try {
        const made = optionsOf(script().options ?? {});
        exec = made.exec;
        return made.wit;
      } catch (e) {
        // No error result here: tell the runner why before the trap.
        panicked(e instanceof Error ? e.message : show(e));
        throw e;
      }
    },
    run(className) {
      const name = execOf().get(className) ?? className;
      const f = script()[name];
      if (typeof f !== 'function') {
        throw `this scenario has no VU class "${className}": export a function named "${name}"`;
      }
      try {
        f();
      } catch (e) {
        // A string is what the runner records as the iteration's error.
        throw show(e);
      }
    },
  };
}
