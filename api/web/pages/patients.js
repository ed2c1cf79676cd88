// Patients: the caller's patients; for one, a chart per vital kind over a chosen range and
// bucket, alert rules, alerts (live by subscription) and the digest.
import uPlot from '../vendor/uplot/uPlot.esm.js';
import { gql, live, session } from '../lib/gql.js';
import { h, when, announce, notice, errorText, nowMs } from '../lib/ui.js';

const KINDS = [
  ['HEART_RATE', 'Heart rate', 'bpm'], ['SPO2', 'SpO2', '%'], ['SYSTOLIC_BP', 'Systolic BP', 'mmHg'],
  ['DIASTOLIC_BP', 'Diastolic BP', 'mmHg'], ['TEMPERATURE', 'Temperature', '°C'],
  ['GLUCOSE', 'Glucose', 'mg/dL'], ['PAIN', 'Pain', '0-10'], ['STEPS', 'Steps', 'steps'],
];
const RANGES = [['PT6H', 'Last 6 hours', 6], ['P1D', 'Last 24 hours', 24], ['P7D', 'Last 7 days', 168], ['P30D', 'Last 30 days', 720]];
const BUCKETS = ['RAW', 'MINUTE', 'HOUR', 'DAY'];

const LIST = `query { patients(first: 50) { nodes { id name dateOfBirth } } }`;
const vitalsFields = KINDS.map(([k]) => `${k}: vitals(kind: ${k}, from: $from, to: $to, bucket: $bucket) { at min max avg count }`).join('\n');
const PATIENT = `query($id: ID!, $from: DateTime, $to: DateTime, $bucket: VitalBucket!) { patient(id: $id) {
  id name dateOfBirth careTeam ${vitalsFields}
  alerts { alertId ruleId kind value raisedAt resolvedAt }
  rules { ruleId kind comparator threshold forDuration }
  digest { text generatedBy openAlerts } } }`;
const RULE = `mutation($input: DefineAlertRuleInput!) { defineAlertRule(input: $input) { ruleId } }`;
const ALERTS = `subscription($id: ID!, $after: Int) { alertRaised(patientId: $id, after: $after) {
  alertId patientId ruleId kind value raisedAt position } }`;

export function page(main, patientId) {
  const me = session.claims();
  if (!me || !['doctor', 'admin', 'patient'].includes(me.role)) {
    main.append(h('h1', {}, 'Patients'), h('p', {}, 'Sign in as a doctor (or an admin, or the patient) to see patients. ', h('a', { href: '#/signin' }, 'Sign in')));
    return null;
  }
  const errors = notice('patients-error');
  const list = h('ul', { 'data-testid': 'patient-list' });
  main.append(h('h1', {}, 'Patients'), errors, h('nav', { class: 'card', 'aria-label': 'Your patients' }, list));
  const current = h('div');
  main.append(current);
  gql(LIST).then((data) => {
    const nodes = data.patients.nodes;
    if (!nodes.length) list.append(h('li', {}, 'No patients.'));
    for (const p of nodes) {
      list.append(h('li', {}, h('a', { href: `#/patients/${encodeURIComponent(p.id)}`, 'aria-current': p.id === patientId ? 'page' : null, 'data-testid': 'patient-link' },
        p.name || '(erased)'), ' ', h('span', { class: 'muted' }, p.dateOfBirth ? `born ${p.dateOfBirth}` : '')));
    }
    if (!patientId && nodes.length === 1) location.replace(`#/patients/${encodeURIComponent(nodes[0].id)}`);
  }).catch((err) => errors.set(errorText(err)));
  if (!patientId) return null;
  return patientView(current, patientId, me);
}

function patientView(root, id, me) {
  const errors = notice('patient-error');
  const heading = h('h2', { 'data-testid': 'patient-name' }, 'Patient');
  const range = h('select', { id: 'range', 'data-testid': 'range' }, RANGES.map(([v, label]) => h('option', { value: v, selected: v === 'P1D' }, label)));
  const bucket = h('select', { id: 'bucket', 'data-testid': 'bucket' }, BUCKETS.map((b) => h('option', { value: b, selected: b === 'HOUR' }, b.toLowerCase())));
  const charts = h('div', { class: 'grid', 'data-testid': 'charts' });
  const absent = h('p', { class: 'muted' });
  const alertsList = h('ul', { 'data-testid': 'alerts', 'aria-live': 'polite' });
  const rulesBody = h('tbody');
  const digest = h('p', { 'data-testid': 'digest' });
  const ruleMsg = notice('rule-message');
  const canRule = me.role === 'doctor' || me.role === 'admin';
  const ruleForm = h('form', { class: 'row', 'aria-label': 'Define an alert rule' },
    h('label', {}, 'Vital', h('select', { name: 'kind' }, KINDS.map(([k, label]) => h('option', { value: k }, label)))),
    h('label', {}, 'Comparator', h('select', { name: 'comparator' }, ['GT', 'GTE', 'LT', 'LTE'].map((c) => h('option', { value: c }, c)))),
    h('label', {}, 'Threshold', h('input', { name: 'threshold', type: 'number', step: 'any', required: true })),
    h('label', {}, 'For (ISO 8601)', h('input', { name: 'forDuration', required: true, placeholder: 'PT10M or P3D' })),
    h('button', { type: 'submit' }, 'Add rule'));

  root.append(h('section', { class: 'card', 'aria-labelledby': 'vitals-h' }, heading, errors,
      h('h3', { id: 'vitals-h' }, 'Vitals'),
      h('div', { class: 'row' }, h('label', { for: 'range' }, 'Range', range), h('label', { for: 'bucket' }, 'Bucket', bucket)),
      charts, absent),
    h('div', { class: 'grid' },
      h('section', { class: 'card', 'aria-labelledby': 'alerts-h' }, h('h3', { id: 'alerts-h' }, 'Alerts'), alertsList),
      h('section', { class: 'card', 'aria-labelledby': 'digest-h' }, h('h3', { id: 'digest-h' }, 'Digest'), digest)),
    h('section', { class: 'card', 'aria-labelledby': 'rules-h' }, h('h3', { id: 'rules-h' }, 'Alert rules'),
      h('div', { class: 'table-wrap' }, h('table', { 'data-testid': 'rules' }, h('thead', {}, h('tr', {},
        h('th', { scope: 'col' }, 'Vital'), h('th', { scope: 'col' }, 'Condition'), h('th', { scope: 'col' }, 'For'))), rulesBody)),
      canRule ? [ruleMsg, ruleForm] : null));

  const plots = [];
  // Charts follow their card's width (grid columns change as cards are added, on rotation).
  const chartWidth = (box) => Math.max(200, box.clientWidth - 26);
  const sizes = new ResizeObserver((entries) => {
    for (const { target } of entries) {
      const plot = plots.find((p) => p.root.parentElement === target);
      if (plot && plot.width !== chartWidth(target)) plot.setSize({ width: chartWidth(target), height: 180 });
    }
  });
  const seenAlerts = new Set();
  const liveAlerts = new Map(); // alerts that arrived by subscription, by id
  let loading = 0;

  function alertItem(a, fresh) {
    const li = h('li', { 'data-testid': 'alert', 'data-alert-id': a.alertId, 'data-kind': a.kind, 'data-live': fresh ? 'true' : 'false' },
      h('strong', {}, a.kind), ` ${a.value ?? ''} · raised ${when(a.raisedAt)}`,
      a.resolvedAt ? ` · resolved ${when(a.resolvedAt)}` : h('span', { class: 'badge new' }, fresh ? 'new' : 'open'));
    if (fresh) li.dataset.renderedAt = nowMs().toFixed(1);
    return li;
  }

  function chart(kind, label, unit, points, [fromSec, toSec]) {
    const box = h('figure', { class: 'card chart', 'data-testid': `chart-${kind}`, 'data-points': points.length },
      h('figcaption', {}, h('strong', {}, label), ` (${unit}) · ${points.length} points`));
    charts.append(box);
    const xs = points.map((p) => new Date(p.at).getTime() / 1000);
    const data = [xs, points.map((p) => p.avg), points.map((p) => p.min), points.map((p) => p.max)];
    const plot = new uPlot({
      width: chartWidth(box), height: 180, title: '',
      // The chosen range, not the data's extent: charts line up, and one point still reads.
      scales: { x: { time: true, range: () => [fromSec, toSec] } },
      series: [{}, { label: 'avg', stroke: '#1f5fbf', width: 2 },
        { label: 'min', stroke: '#7aa7e0', dash: [4, 4] }, { label: 'max', stroke: '#d3543c', dash: [4, 4] }],
      axes: [{}, { label: unit, size: 50 }],
    }, data, box);
    plot.root.setAttribute('role', 'img');
    plot.root.setAttribute('aria-label', `${label}: ${points.length} points, from ${Math.min(...data[2])} to ${Math.max(...data[3])} ${unit}`);
    plots.push(plot);
    sizes.observe(box);
  }

  async function load() {
    const ticket = ++loading;
    const hours = RANGES.find(([v]) => v === range.value)[2];
    const to = new Date(Date.now() + 60_000);
    const from = new Date(to.getTime() - hours * 3600_000);
    try {
      const data = await gql(PATIENT, { id, from: from.toISOString(), to: to.toISOString(), bucket: bucket.value });
      if (ticket !== loading) return; // a newer choice of range or bucket won
      const p = data.patient;
      heading.textContent = `${p.name || '(erased)'}${p.dateOfBirth ? `, born ${p.dateOfBirth}` : ''}`;
      sizes.disconnect();
      plots.splice(0).forEach((plot) => plot.destroy());
      charts.replaceChildren();
      absent.textContent = '';
      const empty = [];
      for (const [kind, label, unit] of KINDS) {
        if (p[kind].length) chart(kind, label, unit, p[kind], [from.getTime() / 1000, to.getTime() / 1000]);
        else empty.push(label);
      }
      if (empty.length) absent.textContent = `No readings in this range: ${empty.join(', ')}.`;
      charts.dataset.loaded = 'true';
      alertsList.replaceChildren();
      const alerts = [...p.alerts].sort((a, b) => b.raisedAt.localeCompare(a.raisedAt));
      for (const a of alerts) { seenAlerts.add(a.alertId); alertsList.append(alertItem(a, liveAlerts.has(a.alertId))); }
      // The read model may not have an alert the stream already brought: keep it listed.
      for (const a of liveAlerts.values()) if (!alerts.some((x) => x.alertId === a.alertId)) alertsList.prepend(alertItem(a, true));
      if (!alertsList.children.length) alertsList.append(h('li', { class: 'muted', 'data-testid': 'no-alerts' }, 'No alerts.'));
      rulesBody.replaceChildren(...p.rules.map((r) => h('tr', {}, h('td', {}, r.kind), h('td', {}, `${r.comparator} ${r.threshold}`), h('td', {}, r.forDuration))));
      digest.textContent = `${p.digest.text} (${p.digest.generatedBy}; ${p.digest.openAlerts} open alerts)`;
    } catch (err) {
      errors.set(errorText(err));
    }
  }

  range.addEventListener('change', load);
  bucket.addEventListener('change', load);
  ruleForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = new FormData(ruleForm);
    try {
      await gql(RULE, { input: { patientId: id, kind: f.get('kind'), comparator: f.get('comparator'), threshold: Number(f.get('threshold')), forDuration: f.get('forDuration') } });
      ruleMsg.set('Rule added.', 'ok');
      ruleForm.reset();
      load();
    } catch (err) {
      ruleMsg.set(errorText(err));
    }
  });

  let reload = null;
  let stop = null;
  let left = false;
  // After the first load: alerts from the start of this patient's alert stream, then live;
  // ones already listed are skipped, so nothing between the load and the subscription is
  // lost. A new alert means new readings too: reload the charts and digest shortly.
  const subscribe = () => left ? null : live(ALERTS, { id, after: 0 }, 'alertRaised', {
    onEvent: (a) => {
      if (seenAlerts.has(a.alertId)) return;
      seenAlerts.add(a.alertId);
      liveAlerts.set(a.alertId, a);
      alertsList.querySelector('[data-testid="no-alerts"]')?.remove();
      alertsList.prepend(alertItem(a, true));
      announce(`Alert: ${a.kind} ${a.value ?? ''}`);
      clearTimeout(reload);
      reload = setTimeout(load, 500);
    },
    onError: (err) => errors.set(`Live alerts stopped: ${errorText(err)}`),
  });
  load().then(() => { stop = subscribe(); });
  return () => { left = true; stop?.(); clearTimeout(reload); sizes.disconnect(); plots.forEach((p) => p.destroy()); };
}
