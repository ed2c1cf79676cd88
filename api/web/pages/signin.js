// Sign in: as one of the demo's people (only when the server runs with --demo), or by
// pasting a token (`triad token --sub ID --role ROLE`).
import { session } from '../lib/gql.js';
import { h, notice, homeFor } from '../lib/ui.js';

const home = () => homeFor(session.claims());

export function page(main) {
  const message = notice('signin-error');
  const demo = h('section', { class: 'card', 'aria-labelledby': 'demo-h', hidden: true },
    h('h2', { id: 'demo-h' }, 'Demo: sign in as'),
    h('p', { class: 'muted' }, 'This server runs with --demo and hands out tokens for its demo users.'));
  const token = h('textarea', { id: 'token', name: 'token', required: true, spellcheck: 'false', autocomplete: 'off', 'data-testid': 'token-input' });
  const form = h('form', { class: 'card', 'aria-labelledby': 'paste-h' },
    h('h2', { id: 'paste-h' }, 'Paste a token'),
    h('label', { for: 'token' }, 'Bearer token (JWT)'),
    token,
    h('p', { class: 'muted' }, 'Mint one with: triad token --sub dealer-1 --role dealer'),
    h('button', { type: 'submit', 'data-testid': 'token-submit' }, 'Sign in'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    try {
      session.signIn(token.value);
      location.hash = home();
    } catch (err) {
      message.set(err.message);
    }
  });
  const claims = session.claims();
  main.append(
    h('h1', {}, 'Sign in'),
    claims ? h('p', {}, `Signed in as ${claims.sub} (${claims.role}). Choose another identity below, or `,
      h('a', { href: home() }, 'continue'), '.') : null,
    message, demo, form,
    h('p', {}, h('a', { href: '#/auctions' }, 'Browse open auctions without signing in')));

  const abort = new AbortController();
  fetch('/demo/tokens', { signal: abort.signal })
    .then((r) => (r.ok ? r.json() : null))
    .then((body) => {
      if (!body?.identities?.length) return;
      const list = h('div', { class: 'identities' });
      for (const who of body.identities) {
        list.append(h('button', {
          type: 'button', class: 'secondary', 'data-testid': 'demo-identity', 'data-sub': who.sub, 'data-role': who.role,
          onclick: () => { session.signIn(who.token); location.hash = home(); },
        }, h('strong', {}, who.label), `${who.sub} · ${who.role}`));
      }
      demo.append(list);
      demo.hidden = false;
    })
    .catch(() => {});
  return () => abort.abort();
}
