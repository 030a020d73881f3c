// Calls to the gateway's public HTTP API, with the token the person entered.
//
// The token lives in sessionStorage only: it goes with this tab, never into a
// URL or a cookie, and is sent as the Authorization header every client sends.

import { readEvents } from "./sse.js";

const TOKEN_KEY = "aqueduct-console.token";

export function savedToken() {
  return sessionStorage.getItem(TOKEN_KEY) ?? "";
}

/** Keeps the token for this tab (an empty one forgets it) and tells the pages. */
export function saveToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
  document.dispatchEvent(new CustomEvent("token-changed"));
}

/** A refused or failed call, with what OpenAI's error envelope and the headers said. */
export class ApiError extends Error {
  constructor({
    status,
    message,
    type = null,
    code = null,
    param = null,
    requestId = null,
    retryAfter = null,
  }) {
    super(message);
    this.status = status;
    this.type = type;
    this.code = code;
    this.param = param;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}

/** The error of an answer or a stream's `error` event: its envelope, else the text. */
function errorFrom(status, text, headers) {
  let envelope = null;
  try {
    envelope = JSON.parse(text).error ?? null;
  } catch {
    // Not JSON (a proxy's page, say): its text is the message.
  }
  return new ApiError({
    status,
    message: envelope?.message ?? (text.trim().slice(0, 300) || "(no message)"),
    type: envelope?.type ?? null,
    code: envelope?.code ?? null,
    param: envelope?.param ?? null,
    requestId: headers?.get("x-request-id") ?? null,
    retryAfter: headers?.get("retry-after") ?? null,
  });
}

async function send(method, path, { json, form, signal }) {
  const headers = {};
  const token = savedToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // the browser writes the multipart boundary
  }
  try {
    return await fetch(path, { method, headers, body, signal, credentials: "omit", cache: "no-store" });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError({ status: 0, message: `The gateway could not be reached (${error.message}).` });
  }
}

/**
 * One call: a JSON body (`json`) or a form (`form`) in, JSON out.
 * Resolves to {status, body, requestId, latencyMs}; rejects with an ApiError.
 */
export async function callApi(method, path, { json, form, signal } = {}) {
  const started = performance.now();
  const response = await send(method, path, { json, form, signal });
  const text = await response.text();
  const latencyMs = performance.now() - started;
  if (!response.ok) {
    const error = errorFrom(response.status, text, response.headers);
    error.latencyMs = latencyMs;
    throw error;
  }
  return {
    status: response.status,
    body: text ? JSON.parse(text) : null,
    requestId: response.headers.get("x-request-id"),
    latencyMs,
  };
}

/**
 * A streamed call (`"stream": true`). Resolves, once the answer's headers are
 * in, to {status, requestId, started, events}: `events` yields each event's
 * {event, data} with its data parsed, and throws an ApiError for an `error`
 * event (an error after the stream started). An error before it rejects here.
 */
export async function streamApi(method, path, { json, form, signal } = {}) {
  const started = performance.now();
  const response = await send(method, path, { json, form, signal });
  const requestId = response.headers.get("x-request-id");
  if (!response.ok) {
    const error = errorFrom(response.status, await response.text(), response.headers);
    error.latencyMs = performance.now() - started;
    throw error;
  }
  async function* events() {
    for await (const { event, data } of readEvents(response.body)) {
      if (event === "error") {
        const error = errorFrom(response.status, data, null);
        error.requestId = requestId;
        error.afterStart = true; // the HTTP status was 200; the envelope tells what failed
        throw error;
      }
      yield { event, data: JSON.parse(data) };
    }
  }
  return { status: response.status, requestId, started, events: events() };
}
