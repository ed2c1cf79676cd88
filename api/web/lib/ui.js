// Small DOM helpers shared by the pages.

/** h('button', {type: 'button', onclick}, 'Text', child...) */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'dataset') Object.assign(el.dataset, value);
    else if (key in el && typeof value !== 'string') el[key] = value;
    else el.setAttribute(key, value === true ? '' : value);
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';
export function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value);
  }
  return append(el, children);
}

const moneyFormat = new Intl.NumberFormat('en', { style: 'currency', currency: 'EUR' });
export const money = (cents) => moneyFormat.format(cents / 100);

export function when(iso) {
  if (!iso) return '';
  return new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
}

export function countdown(iso, now = Date.now()) {
  let left = Math.round((new Date(iso).getTime() - now) / 1000);
  if (left <= 0) return 'ended';
  const d = Math.floor(left / 86400);
  left %= 86400;
  const hms = [Math.floor(left / 3600), Math.floor((left % 3600) / 60), left % 60]
    .map((n) => String(n).padStart(2, '0'))
    .join(':');
  return d > 0 ? `${d}d ${hms}` : hms;
}

/** Tells screen-reader users what just happened (bids, alerts, rollbacks). */
export function announce(text) {
  const el = document.getElementById('announcer');
  if (!el) return;
  el.textContent = '';
  setTimeout(() => { el.textContent = text; }, 30);
}

/** A notice area; set(text, kind) with kind 'error' or 'ok'; set('') hides it. */
export function notice(testid) {
  const el = h('div', { class: 'notice', role: 'alert', 'data-testid': testid });
  el.set = (text, kind = 'error') => {
    el.className = `notice ${kind}`;
    el.textContent = text;
  };
  return el;
}

/** The wall-clock time of now, in ms, with sub-millisecond precision (for latency probes). */
export const nowMs = () => performance.timeOrigin + performance.now();

export function signedInAs(claims, roles) {
  return claims && roles.includes(claims.role);
}

export function errorText(err) {
  return err?.code ? `${err.message} (${err.code})` : String(err?.message || err);
}

const HOME_BY_ROLE = {
  dealer: '#/auctions', seller: '#/auctions', doctor: '#/patients', patient: '#/patients',
  donor: '#/donations', charity: '#/donations', admin: '#/admin',
};

/** Where a signed-in person starts (or the sign-in page). */
export function homeFor(claims) {
  return claims ? HOME_BY_ROLE[claims.role] || '#/auctions' : '#/signin';
}
