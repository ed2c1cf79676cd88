// GraphQL over HTTP (queries, mutations) and over WebSocket (subscriptions, graphql-ws),
// and the signed-in session (a bearer token kept in localStorage).
import { createClient } from '../vendor/graphql-ws/client.js';

const TOKEN_KEY = 'triad.token';

/** A refusal from the API, with its stable code (BID_TOO_LOW, FORBIDDEN, ...). */
export class GqlError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

function decodeClaims(token) {
  try {
    const part = token.split('.')[1];
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    const claims = JSON.parse(json);
    if (typeof claims.sub !== 'string' || typeof claims.role !== 'string') return null;
    return claims;
  } catch {
    return null;
  }
}

const sessionListeners = new Set();

export const session = {
  get token() {
    return localStorage.getItem(TOKEN_KEY) || '';
  },
  /** { sub, role, exp } of the current token, or null (signed out, malformed or expired). */
  claims() {
    const claims = decodeClaims(this.token);
    if (!claims) return null;
    if (claims.exp && claims.exp * 1000 < Date.now()) return null;
    return claims;
  },
  /** Returns the claims, or throws when the text is not a token we can use. */
  signIn(token) {
    const trimmed = token.trim().replace(/^Bearer\s+/i, '');
    const claims = decodeClaims(trimmed);
    if (!claims) throw new Error('This is not a Triad token (a JWT with sub and role claims).');
    if (claims.exp && claims.exp * 1000 < Date.now()) throw new Error('This token has expired.');
    localStorage.setItem(TOKEN_KEY, trimmed);
    resetSocket();
    sessionListeners.forEach((l) => l(claims));
    return claims;
  },
  signOut() {
    localStorage.removeItem(TOKEN_KEY);
    resetSocket();
    sessionListeners.forEach((l) => l(null));
  },
  onChange(listener) {
    sessionListeners.add(listener);
    return () => sessionListeners.delete(listener);
  },
};

function firstError(errors) {
  const e = errors[0] || {};
  return new GqlError(e.extensions?.code || 'ERROR', e.message || 'unknown error');
}

/** One query or mutation; resolves to `data`, rejects with a GqlError. */
export async function gql(query, variables = {}) {
  const headers = { 'content-type': 'application/json' };
  const token = session.token;
  if (token) headers.authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch('/graphql', {
      method: 'POST',
      headers,
      body: JSON.stringify({ query, variables }),
    });
  } catch {
    throw new GqlError('NETWORK', 'The server did not answer.');
  }
  let body;
  try {
    body = await response.json();
  } catch {
    throw new GqlError('NETWORK', `The server answered HTTP ${response.status}.`);
  }
  if (body.errors?.length) throw firstError(body.errors);
  return body.data;
}

// --- subscriptions -----------------------------------------------------------------------

let client = null;
let liveCount = 0;
let status = 'idle';
const statusListeners = new Set();

function setStatus(next) {
  status = next;
  statusListeners.forEach((l) => l(status));
}

/** idle | connecting | live | reconnecting | offline; the listener is called at once too. */
export function onConnectionStatus(listener) {
  statusListeners.add(listener);
  listener(status);
  return () => statusListeners.delete(listener);
}

function wsUrl() {
  const url = new URL('/graphql/ws', location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  return url.href;
}

function socket() {
  if (client) return client;
  client = createClient({
    url: wsUrl(),
    connectionParams: () => (session.token ? { Authorization: `Bearer ${session.token}` } : {}),
    // Connect while a page has subscriptions; a short grace avoids churn on navigation.
    lazy: true,
    lazyCloseTimeout: 2_000,
    // Pings reveal a dead link (a phone losing its network) instead of waiting on TCP.
    keepAlive: 10_000,
    // Never give up: the page keeps saying it is offline and keeps trying.
    retryAttempts: Infinity,
    shouldRetry: () => true,
    retryWait: (retries) =>
      new Promise((resolve) =>
        setTimeout(resolve, Math.min(250 * 2 ** retries, 5_000) * (0.75 + Math.random() / 2)),
      ),
    on: {
      connecting: (isRetry) => setStatus(isRetry ? 'reconnecting' : 'connecting'),
      connected: () => setStatus('live'),
      closed: () => setStatus(liveCount > 0 ? 'offline' : 'idle'),
    },
  });
  return client;
}

function resetSocket() {
  // A new token needs a new connection_init: drop the socket, the next subscription opens one.
  const old = client;
  client = null;
  old?.dispose();
  setStatus('idle');
}

/**
 * Subscribes to a stream of log events that carry a `position`, e.g. bidPlaced or
 * alertRaised. Resumes after a lost connection from the last position seen: graphql-ws sends
 * this same payload object again when it resubscribes, and `variables.after` is kept at the
 * last event delivered, so the server replays exactly what was missed; an event at or before
 * that position is dropped, so none is delivered twice.
 *
 * Returns a function that ends the subscription.
 */
export function live(query, variables, field, { onEvent, onError }) {
  const payload = { query, variables: { ...variables } };
  let last = typeof variables.after === 'number' ? variables.after : null;
  let active = true;
  liveCount += 1;
  const dispose = socket().subscribe(payload, {
    next(message) {
      if (message.errors?.length) {
        onError?.(firstError(message.errors));
        return;
      }
      const event = message.data?.[field];
      if (!event) return;
      if (typeof event.position === 'number') {
        if (last !== null && event.position <= last) return;
        last = event.position;
        payload.variables.after = last;
      }
      onEvent(event);
    },
    error(err) {
      if (Array.isArray(err)) onError?.(firstError(err));
      else onError?.(new GqlError(err?.code ? `CLOSED_${err.code}` : 'NETWORK', err?.reason || err?.message || 'subscription failed'));
    },
    complete() {},
  });
  return () => {
    if (!active) return;
    active = false;
    liveCount -= 1;
    dispose();
  };
}
