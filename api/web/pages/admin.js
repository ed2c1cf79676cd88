// Admin: who read a patient's data (the access log), and an aggregate's history with a time
// slider that shows its state as of any of its events.
import { gql, session } from '../lib/gql.js';
import { h, when, notice, errorText } from '../lib/ui.js';

const PATIENTS = `query { patients(first: 100) { nodes { id name } } }`;
const AUDIT = `query($s: ID!) { auditLog(subjectId: $s, first: 100) { nodes { seq at actorId actorRole operation fields outcome } } }`;
const HISTORY = `query($t: String!, $id: String!, $asOf: DateTime) { aggregateHistory(type: $t, id: $id, asOf: $asOf) {
  asOf state events { position sequence recordedAt eventType actorId actorRole shredded } } }`;
const TYPES = ['Auction', 'Patient', 'PatientAlerts', 'Charity', 'Donation'];

export function page(main) {
  const me = session.claims();
  if (me?.role !== 'admin') {
    main.append(h('h1', {}, 'Admin'), h('p', {}, 'Sign in as an admin to read the audit log and histories. ', h('a', { href: '#/signin' }, 'Sign in')));
    return null;
  }
  main.append(h('h1', {}, 'Admin'), auditSection(), historySection());
  return null;
}

function auditSection() {
  const errors = notice('audit-error');
  const subject = h('input', { id: 'subject', name: 'subject', required: true, list: 'patient-ids', 'data-testid': 'audit-subject', autocomplete: 'off' });
  const options = h('datalist', { id: 'patient-ids' });
  const body = h('tbody');
  const form = h('form', { class: 'row', 'aria-label': 'Audit log of reads' },
    h('label', { for: 'subject' }, 'Patient id', subject), options, h('button', { type: 'submit' }, 'Show reads'));
  gql(PATIENTS).then((d) => options.append(...d.patients.nodes.map((p) => h('option', { value: p.id }, p.name || '(erased)')))).catch(() => {});
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const { auditLog } = await gql(AUDIT, { s: subject.value.trim() });
      body.replaceChildren(...auditLog.nodes.map((r) => h('tr', { 'data-testid': 'audit-row', 'data-outcome': r.outcome },
        h('td', {}, r.seq), h('td', {}, when(r.at)), h('td', {}, `${r.actorId} (${r.actorRole})`),
        h('td', {}, r.operation), h('td', {}, r.fields.join(', ')), h('td', {}, r.outcome))));
      if (!auditLog.nodes.length) body.append(h('tr', {}, h('td', { colspan: 6 }, 'No reads recorded.')));
      errors.set('');
    } catch (err) {
      errors.set(errorText(err));
    }
  });
  return h('section', { class: 'card', 'aria-labelledby': 'audit-h' }, h('h2', { id: 'audit-h' }, 'Who read a patient\'s data'), errors, form,
    h('div', { class: 'table-wrap' }, h('table', { 'data-testid': 'audit-log' }, h('thead', {}, h('tr', {},
      ['#', 'When', 'Who', 'Operation', 'Fields', 'Outcome'].map((c) => h('th', { scope: 'col' }, c)))), body)));
}

function historySection() {
  const errors = notice('history-error');
  const type = h('select', { id: 'agg-type', name: 'type' }, TYPES.map((t) => h('option', { value: t }, t)));
  const id = h('input', { id: 'agg-id', name: 'id', required: true, value: 'demo-auction-1', 'data-testid': 'history-id' });
  const slider = h('input', { id: 'as-of', type: 'range', min: 0, max: 0, step: 1, value: 0, disabled: true, 'data-testid': 'history-slider' });
  const asOfLabel = h('output', { for: 'as-of', 'data-testid': 'history-as-of' });
  const events = h('ol', { 'data-testid': 'history-events' });
  const stateView = h('pre', { class: 'json', 'data-testid': 'history-state', tabindex: 0, 'aria-label': 'State as of the chosen time' });
  const form = h('form', { class: 'row', 'aria-label': 'Aggregate history' },
    h('label', { for: 'agg-type' }, 'Type', type), h('label', { for: 'agg-id' }, 'Id', id), h('button', { type: 'submit' }, 'Load history'));
  let history = [];
  let ticket = 0;

  async function showAsOf() {
    const n = Number(slider.value);
    const ev = history[n];
    if (!ev) return;
    asOfLabel.textContent = `As of event ${n + 1} of ${history.length}: ${ev.eventType} at ${when(ev.recordedAt)}`;
    [...events.children].forEach((li, i) => li.toggleAttribute('data-after', i > n));
    const mine = ++ticket;
    try {
      const { aggregateHistory } = await gql(HISTORY, { t: type.value, id: id.value.trim(), asOf: ev.recordedAt });
      if (mine === ticket) {
        stateView.textContent = JSON.stringify(aggregateHistory.state, null, 2);
        stateView.dataset.events = String(aggregateHistory.events.length);
      }
    } catch (err) {
      errors.set(errorText(err));
    }
  }

  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    try {
      const { aggregateHistory } = await gql(HISTORY, { t: type.value, id: id.value.trim(), asOf: null });
      history = aggregateHistory.events;
      events.replaceChildren(...history.map((ev) => h('li', {}, `#${ev.sequence} ${ev.eventType} · ${when(ev.recordedAt)} · position ${ev.position}`,
        ev.actorId ? ` · by ${ev.actorId} (${ev.actorRole})` : '', ev.shredded ? ' · shredded' : '')));
      slider.max = Math.max(0, history.length - 1);
      slider.value = slider.max;
      slider.disabled = history.length === 0;
      errors.set(history.length ? '' : 'No events for this aggregate.');
      stateView.textContent = JSON.stringify(aggregateHistory.state, null, 2);
      if (history.length) showAsOf();
    } catch (err) {
      errors.set(errorText(err));
    }
  });
  slider.addEventListener('input', showAsOf);
  return h('section', { class: 'card', 'aria-labelledby': 'history-h' }, h('h2', { id: 'history-h' }, 'An aggregate\'s history'), errors, form,
    h('label', { for: 'as-of' }, 'Time slider: state as of an event', slider), asOfLabel, stateView, events);
}
