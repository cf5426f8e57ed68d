// HTTP requests (HTTP/1.1, HTTP/2, TLS), timed by the host, in k6's shape:
//
//   import http from 'runner/http';
//   const r = http.post(url, JSON.stringify(body), { headers: { 'Content-Type': 'application/json' } });
//
// A failed request does not throw: as in k6, it returns a response with
// status 0 and `error` set (`error_kind` names it: `connection-refused`,
// `timeout`, `denied`...). The runner counts every request under its name
// (`tags.name`, default the method and URL) and tags.

import { send } from 'runner:scenario/http@0.1.0';
import { bytes, fromUtf8, nanos, tagPairs } from './_core.js';

const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];
const ms = (ns) => Number(ns) / 1e6;

function decode(body) {
  return fromUtf8(body);
}

/** A complete response, in k6's shape. */
export class Response {
  constructor(fields) {
    Object.assign(this, fields);
  }

  /** The body parsed as JSON; with `selector` ("a.b.0"), one value in it. */
  json(selector) {
    let v = JSON.parse(typeof this.body === 'string' ? this.body : decode(bytes(this.body)));
    if (selector) {
      for (const key of String(selector).split('.')) v = v?.[key];
    }
    return v;
  }
}

function formBody(object) {
  return Object.entries(object)
    .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
    .join('&');
}

function requestOf(method, url, body, params) {
  const p = params ?? {};
  const headers = Object.entries(p.headers ?? {}).map(([k, v]) => [String(k), String(v)]);
  const has = (name) => headers.some(([k]) => k.toLowerCase() === name);
  if (body !== null && typeof body === 'object' && !(body instanceof ArrayBuffer) && !ArrayBuffer.isView(body)) {
    // k6 sends a plain object as a form.
    body = formBody(body);
    if (!has('content-type')) headers.push(['Content-Type', 'application/x-www-form-urlencoded']);
  }
  const tags = { ...(p.tags ?? {}) };
  const name = p.name ?? tags.name;
  delete tags.name;
  const m = String(method).toUpperCase();
  return {
    method: METHODS.includes(m) ? { tag: m.toLowerCase() } : { tag: 'other', val: m },
    url: String(url),
    headers,
    body: bytes(body),
    timeout: nanos(p.timeout, 'ms'),
    name: name === undefined ? undefined : String(name),
    version: p.version === 2 ? 'http2' : p.version === 1 ? 'http1' : undefined,
    discardBody: p.responseType === 'none',
    tags: tagPairs(tags),
  };
}

function headersOf(list) {
  const out = {};
  for (const [k, v] of list) {
    // k6 canonicalises names: content-type -> Content-Type.
    const name = k.replace(/(^|-)([a-z])/g, (_, d, c) => d + c.toUpperCase());
    out[name] = name in out ? `${out[name]}, ${v}` : v;
  }
  return out;
}

/**
 * Sends a request and waits for the whole response (suspending only this
 * VU). `params`: `headers`, `tags` (`tags.name` names the request in the
 * results), `timeout` (ms or text), `responseType` (`text`, `binary` for
 * an ArrayBuffer, `none` to count the body without keeping it), and
 * `version` (1 or 2) to force the protocol.
 */
export function request(method, url, body, params) {
  const req = requestOf(method, url, body, params);
  let r;
  try {
    r = send(req);
  } catch (e) {
    const p = e?.payload;
    if (!p || typeof p.tag !== 'string') throw e;
    const message = p.val === undefined ? p.tag : `${p.tag}: ${p.val}`;
    return new Response({
      status: 0, body: null, headers: {}, proto: '', url: req.url, error: message, error_kind: p.tag,
      timings: { blocked: 0, connecting: 0, tls_handshaking: 0, sending: 0, waiting: 0, receiving: 0, duration: 0 },
    });
  }
  try {
    const t = r.timings();
    const type = params?.responseType ?? 'text';
    const raw = type === 'none' ? null : r.body();
    return new Response({
      status: r.status(),
      proto: r.version() === 'http2' ? 'HTTP/2.0' : 'HTTP/1.1',
      url: req.url,
      headers: headersOf(r.headers()),
      body: raw === null ? null : type === 'binary' ? raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength) : decode(raw),
      bodySize: Number(r.bodySize()),
      error: '',
      error_kind: '',
      timings: {
        blocked: ms(t.dns),
        connecting: ms(t.connect),
        tls_handshaking: ms(t.tls),
        sending: 0,
        waiting: ms(t.wait),
        receiving: ms(t.receive),
        duration: ms(t.wait + t.receive),
        total: ms(t.total),
      },
    });
  } finally {
    // Hand the host's copy back at once: a VU may hold only so many.
    r[Symbol.dispose]();
  }
}

/** A GET request; see `request`. */
export const get = (url, params) => request('GET', url, null, params);
/** A HEAD request. */
export const head = (url, params) => request('HEAD', url, null, params);
/** A POST request; `body` is text, bytes, or an object sent as a form. */
export const post = (url, body, params) => request('POST', url, body, params);
/** A PUT request. */
export const put = (url, body, params) => request('PUT', url, body, params);
/** A PATCH request. */
export const patch = (url, body, params) => request('PATCH', url, body, params);
/** A DELETE request (k6 names it `del`). */
export const del = (url, body, params) => request('DELETE', url, body, params);
/** An OPTIONS request. */
export const options = (url, body, params) => request('OPTIONS', url, body, params);

export default { request, get, head, post, put, patch, del, options, Response };
