// Shared helpers of the JavaScript guest SDK: durations, tags, host errors.
// Not part of the public API (import from 'runner', 'runner/http', ...).

import { log } from 'runner:scenario/vu@0.1.0';

const UNITS = [
  ['ns', 1n], ['us', 1000n], ['µs', 1000n], ['ms', 1000000n], ['s', 1000000000n],
  ['m', 60000000000n], ['h', 3600000000000n],
].sort((a, b) => b[0].length - a[0].length);

/**
 * Nanoseconds (a number: exact to 104 days) of a duration: text like "30s", "500ms", "1m30s",
 * or a number of `numberUnit` ("ms" in k6's timeouts, "s" for sleep).
 * `undefined` stays `undefined`.
 */
export function nanos(value, numberUnit = 'ms') {
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'number') {
    if (!(value >= 0) || !Number.isFinite(value)) throw new TypeError(`${value} is not a duration`);
    const per = numberUnit === 's' ? 1e9 : 1e6;
    return Math.round(value * per);
  }
  const text = String(value).trim();
  let total = 0n;
  let i = 0;
  while (i < text.length) {
    const m = /^(\d+(?:\.\d+)?)/.exec(text.slice(i));
    const unit = m && UNITS.find(([u]) => text.startsWith(u, i + m[1].length));
    if (!m || !unit) throw new TypeError(`"${value}" is not a duration (examples: 30s, 500ms, 2m)`);
    total += BigInt(Math.round(Number(m[1]) * Number(unit[1])));
    i += m[1].length + unit[0].length;
  }
  return Number(total);
}

/** Seconds (a number) of a duration, for a k6 option such as "30s". */
export function seconds(value) {
  const n = nanos(value, 's');
  return n === undefined ? undefined : Number(n) / 1e9;
}

// The stack of open groups (`outer::inner`), innermost last.
export const groups = [];

/** A tags object as the host's list of pairs, with the current group. */
export function tagPairs(tags) {
  const pairs = [];
  for (const [k, v] of Object.entries(tags ?? {})) pairs.push([String(k), String(v)]);
  const group = groups[groups.length - 1];
  if (group !== undefined && !pairs.some(([k]) => k === 'group')) pairs.push(['group', group]);
  return pairs;
}

/** Text for any value, as console.log shows it. */
export function show(v) {
  if (typeof v === 'string') return v;
  if (v instanceof Error) return v.stack ? `${v}\n${v.stack}`.trimEnd() : String(v);
  if (typeof v === 'bigint') return `${v}`;
  try {
    const s = JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? `${x}` : x));
    return s === undefined ? String(v) : s;
  } catch {
    return String(v);
  }
}

/** An error raised by a failed host call: `kind` is the summary's name
 * for it (`connection-refused`, `timeout`, `denied`...). */
export class RunnerError extends Error {
  constructor(kind, message) {
    super(message ? `${kind}: ${message}` : kind);
    this.name = 'RunnerError';
    this.kind = kind;
  }
}

/** Calls a host function, turning its error variant into a RunnerError. */
export function call(f) {
  try {
    return f();
  } catch (e) {
    const p = e?.payload;
    if (p && typeof p.tag === 'string') throw new RunnerError(p.tag, p.val === undefined ? '' : String(p.val));
    throw e;
  }
}

/** Bytes of a payload given as text, bytes or a buffer. */
export function bytes(body) {
  if (body === undefined || body === null) return new Uint8Array();
  if (body instanceof Uint8Array) return body;
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  if (ArrayBuffer.isView(body)) return new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
  return utf8(body);
}

/** Writes one line to the runner's log. */
export function write(level, args) {
  log(level, args.map(show).join(' '));
}

/** UTF-8 bytes of `text` (QuickJS has no TextEncoder). */
export function utf8(text) {
  const out = [];
  for (const ch of String(text)) {
    const c = ch.codePointAt(0);
    if (c < 0x80) out.push(c);
    else if (c < 0x800) out.push(0xc0 | (c >> 6), 0x80 | (c & 63));
    else if (c < 0x10000) out.push(0xe0 | (c >> 12), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
    else out.push(0xf0 | (c >> 18), 0x80 | ((c >> 12) & 63), 0x80 | ((c >> 6) & 63), 0x80 | (c & 63));
  }
  return new Uint8Array(out);
}

/** Text of UTF-8 `bytes`; invalid sequences become U+FFFD. */
export function fromUtf8(bytes) {
  let s = '';
  let chunk = [];
  const flush = () => {
    s += String.fromCodePoint(...chunk);
    chunk = [];
  };
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i];
    const need = b < 0x80 ? 0 : b >= 0xf0 && b < 0xf8 ? 3 : b >= 0xe0 ? 2 : b >= 0xc2 && b < 0xe0 ? 1 : -1;
    let c = need === 0 ? b : need > 0 ? b & (0x3f >> need) : 0xfffd;
    let ok = need >= 0 && i + need < bytes.length + (need === 0 ? 1 : 0);
    for (let k = 1; ok && k <= need; k++) {
      const n = bytes[i + k];
      if ((n & 0xc0) !== 0x80) ok = false;
      else c = (c << 6) | (n & 63);
    }
    chunk.push(ok ? c : 0xfffd);
    i += ok ? need + 1 : 1;
    if (chunk.length >= 4096) flush();
  }
  flush();
  return s;
}

// TextEncoder and TextDecoder (UTF-8 only) for scripts that use them.
globalThis.TextEncoder ??= class TextEncoder {
  get encoding() {
    return 'utf-8';
  }

  encode(text = '') {
    return utf8(text);
  }
};
globalThis.TextDecoder ??= class TextDecoder {
  get encoding() {
    return 'utf-8';
  }

  decode(input) {
    return input === undefined ? '' : fromUtf8(bytes(input));
  }
};
