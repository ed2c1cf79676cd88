// The Triad console: a single page with hash routes, talking to the same GraphQL API as
// every other client. Each page renders into <main> and returns a cleanup function that
// ends its subscriptions and timers when you leave it.
import { session, onConnectionStatus } from './lib/gql.js';
import { homeFor } from './lib/ui.js';
import * as signin from './pages/signin.js';
import * as auctions from './pages/auctions.js';
import * as patients from './pages/patients.js';
import * as donations from './pages/donations.js';
import * as admin from './pages/admin.js';

const routes = [
  [/^#\/signin$/, signin.page],
  [/^#\/auctions$/, auctions.listPage],
  [/^#\/auction\/([^/]+)$/, auctions.auctionPage],
  [/^#\/patients(?:\/([^/]+))?$/, patients.page],
  [/^#\/donations$/, donations.page],
  [/^#\/admin$/, admin.page],
];

const home = () => homeFor(session.claims());

let cleanup = null;

function render() {
  const main = document.getElementById('main');
  if (!location.hash || location.hash === '#/' || location.hash === '#') {
    location.replace(home());
    return;
  }
  const match = routes.find(([re]) => re.test(location.hash));
  if (!match) {
    location.replace(home());
    return;
  }
  try { cleanup?.(); } catch (e) { console.error(e); }
  cleanup = null;
  main.replaceChildren();
  const [re, page] = match;
  const params = location.hash.match(re).slice(1).map((p) => (p ? decodeURIComponent(p) : p));
  const section = location.hash.split('/')[1];
  for (const a of document.querySelectorAll('.top nav a')) {
    const target = a.getAttribute('href').split('/')[1];
    const current = target === section || (target === 'auctions' && section === 'auction');
    if (current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  cleanup = page(main, ...params) || null;
  main.focus({ preventScroll: true });
}

function renderSession() {
  const claims = session.claims();
  document.getElementById('who').textContent = claims ? `${claims.sub} (${claims.role})` : 'Not signed in';
  document.getElementById('signout').hidden = !claims;
  document.getElementById('signin-link').hidden = !!claims;
}

const LABELS = {
  idle: 'Live updates: idle',
  connecting: 'Live updates: connecting',
  live: 'Live updates: connected',
  reconnecting: 'Live updates: connection lost, reconnecting',
  offline: 'Live updates: connection lost, reconnecting',
};

onConnectionStatus((state) => {
  const el = document.getElementById('connection');
  if (!el) return;
  el.dataset.state = state;
  el.textContent = LABELS[state] || state;
});

document.getElementById('signout').addEventListener('click', () => {
  session.signOut();
  location.hash = '#/signin';
});

session.onChange(() => renderSession());
window.addEventListener('hashchange', render);
renderSession();
render();
