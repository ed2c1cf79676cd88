// Donations: charities around a point on a drawn map (SVG, with a scale; no tiles), the
// radius search, and claims. A charity user's charities (myCharities) are listed with today's
// remaining capacity and all watched live for matches; a donor posts and sees their donations
// (myDonations), so the list survives a reload.
import { gql, live, session } from '../lib/gql.js';
import { h, svg, when, announce, notice, errorText, nowMs } from '../lib/ui.js';

const FOODS = ['PRODUCE', 'BAKERY', 'DAIRY', 'MEAT', 'PREPARED', 'PANTRY', 'FROZEN'];
const CHARITY_FIELDS = 'id name managerId capacityKg remainingKg accepts location { lat lng }';
const DONATION_FIELDS = 'id status foodType quantityKg pickupBy claimedBy location { lat lng }';
const NEAR = `query($lat: Float!, $lng: Float!, $radiusKm: Float!, $foodType: FoodType) {
  charitiesNear(lat: $lat, lng: $lng, radiusKm: $radiusKm, foodType: $foodType) {
    distanceKm charity { ${CHARITY_FIELDS} } } }`;
const DONATION = `query($id: ID!) { donation(id: $id) { ${DONATION_FIELDS} } }`;
const CHARITY = `query($id: ID!) { charity(id: $id) { ${CHARITY_FIELDS} } }`;
const MY_CHARITIES = `query($after: String) { myCharities(first: 100, after: $after) {
  nodes { ${CHARITY_FIELDS} } pageInfo { hasNextPage endCursor } } }`;
const MY_DONATIONS = `query($after: String) { myDonations(first: 20, after: $after) {
  nodes { ${DONATION_FIELDS} } pageInfo { hasNextPage endCursor } } }`;
const CLAIM = `mutation($d: ID!, $c: ID!) { claimDonation(donationId: $d, charityId: $c) { id status claimedBy } }`;
const POST = `mutation($input: PostDonationInput!) { postDonation(input: $input) { ${DONATION_FIELDS} } }`;
const MATCHES = `subscription($c: ID!, $after: Int) { donationMatched(charityId: $c, after: $after) { donationId charityId distanceKm position } }`;

const W = 640;
const H = 420;
const KM_PER_DEG = 111.195; // mean Earth radius, per degree of latitude

/** Rounds down to 1, 2 or 5 times a power of ten: a readable scale-bar length. */
function niceKm(x) {
  const p = 10 ** Math.floor(Math.log10(x));
  return [5, 2, 1].map((m) => m * p).find((v) => v <= x) || p;
}

export function page(main) {
  const me = session.claims();
  const isCharity = me?.role === 'charity' || me?.role === 'admin';
  // A charity user's own charities come from myCharities; an admin manages none, and watches
  // the charities the search finds instead.
  const isManager = me?.role === 'charity';
  const isDonor = me?.role === 'donor';
  const state = { lat: 48.8566, lng: 2.3522, radiusKm: 10, foodType: '' };
  const charities = new Map(); // id -> { charity, distanceKm } (last search)
  const own = new Map(); // id -> charity: the manager's charities (myCharities)
  const mine = new Map(); // watched charities -> stop function of their match stream
  const donations = new Map(); // id -> { donation, matches: [{charityId, distanceKm}] }
  let closed = false;

  const errors = notice('donations-error');
  const lat = h('input', { id: 'lat', name: 'lat', type: 'number', step: 'any', min: -90, max: 90, value: state.lat, required: true, 'data-testid': 'lat' });
  const lng = h('input', { id: 'lng', name: 'lng', type: 'number', step: 'any', min: -180, max: 180, value: state.lng, required: true, 'data-testid': 'lng' });
  const radius = h('input', { id: 'radius', name: 'radius', type: 'number', step: 'any', min: 0.1, max: 500, value: state.radiusKm, required: true, 'data-testid': 'radius' });
  const food = h('select', { id: 'food', name: 'food' }, h('option', { value: '' }, 'any'), FOODS.map((f) => h('option', { value: f }, f.toLowerCase())));
  const search = h('form', { class: 'row', role: 'search', 'aria-label': 'Charities near a point' },
    h('label', { for: 'lat' }, 'Latitude', lat), h('label', { for: 'lng' }, 'Longitude', lng),
    h('label', { for: 'radius' }, 'Radius (km)', radius), h('label', { for: 'food' }, 'Accepts', food),
    h('button', { type: 'submit', 'data-testid': 'search' }, 'Search'));
  const map = svg('svg', { class: 'map', viewBox: `0 0 ${W} ${H}`, role: 'img', 'data-testid': 'map' });
  const results = h('tbody');
  const summary = h('p', { class: 'muted', 'data-testid': 'search-summary', 'aria-live': 'polite' });
  const matchList = h('ul', { 'data-testid': 'matches', 'aria-live': 'polite' });
  const ownList = h('ul', { 'data-testid': 'my-charities' });
  // The donor's donations (myDonations), newest first: what they posted survives a reload.
  const myDonations = [];
  const myList = h('ul', { 'data-testid': 'my-donations', 'aria-live': 'polite' });
  const older = h('button', { type: 'button', hidden: true, 'data-testid': 'older-donations', onclick: () => loadMyDonations() }, 'Show older');
  let olderCursor = null;

  const claimMsg = notice('claim-message');

  main.append(h('h1', {}, 'Donations'), errors,
    h('section', { class: 'card', 'aria-labelledby': 'near-h' }, h('h2', { id: 'near-h' }, 'Charities near a point'), search, summary, map,
      h('p', { class: 'muted' }, 'Click the map to search around another point. Green: charities; blue: yours; orange: donations; grey: claimed.'),
      h('div', { class: 'table-wrap' }, h('table', { 'data-testid': 'charity-results' },
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Charity'), h('th', { scope: 'col' }, 'Distance'),
          h('th', { scope: 'col' }, 'Accepts'), h('th', { scope: 'col' }, 'Capacity/day'))), results))));
  if (isManager) {
    main.append(h('section', { class: 'card', 'aria-labelledby': 'own-h' },
      h('h2', { id: 'own-h' }, 'Your charities'), ownList));
  }
  if (isCharity) {
    main.append(h('section', { class: 'card', 'aria-labelledby': 'matches-h' },
      h('h2', { id: 'matches-h' }, 'Donations proposed to your charities'),
      h('p', { class: 'muted' }, isManager ? 'All your charities are watched live.' : 'The charities found by the search are watched live.'),
      claimMsg, matchList));
  }
  if (isDonor) main.append(...donorForm());

  // Equirectangular around the centre: fine at city scale, and the scale bar stays honest.
  function project(p) {
    const scale = (Math.min(W, H) / 2 - 24) / state.radiusKm; // px per km
    const x = W / 2 + (p.lng - state.lng) * KM_PER_DEG * Math.cos((state.lat * Math.PI) / 180) * scale;
    const y = H / 2 - (p.lat - state.lat) * KM_PER_DEG * scale;
    return [x, y, scale];
  }

  function drawMap() {
    const [cx, cy, scale] = project(state);
    const bar = niceKm(state.radiusKm / 2);
    const items = [
      svg('circle', { cx, cy, r: state.radiusKm * scale, fill: '#fff', 'fill-opacity': 0.6, stroke: '#1f5fbf', 'stroke-dasharray': '6 4' }),
      svg('path', { d: `M${cx - 8} ${cy}H${cx + 8}M${cx} ${cy - 8}V${cy + 8}`, stroke: '#b3261e', 'stroke-width': 2 }),
      svg('g', { 'data-testid': 'scale-bar' },
        svg('path', { d: `M16 ${H - 16}h${bar * scale}M16 ${H - 22}v12M${16 + bar * scale} ${H - 22}v12`, stroke: '#1b1f24', 'stroke-width': 2, fill: 'none' }),
        svg('text', { x: 16, y: H - 26 }, `${bar} km`)),
    ];
    // Labels go where they overlap no earlier label (right, left, below, above, then further
    // down): charities a kilometre apart on a 50 km map would otherwise print over each other.
    const placed = [];
    const free = (b) => placed.every((o) => b.x + b.w < o.x || o.x + o.w < b.x || b.y + b.h < o.y || o.y + o.h < b.y);
    function labelAt(x, y, text) {
      const w = text.length * 7.5;
      const h = 14;
      const spots = [[x + 10, y + 4], [x - 10 - w, y + 4], [x - w / 2, y + 22], [x - w / 2, y - 12]];
      for (let k = 1; k < 6; k++) spots.push([x + 10, y + 4 + k * 16]);
      const [lx, ly] = spots.find(([sx, sy]) => free({ x: sx, y: sy - h, w, h })) || spots[0];
      placed.push({ x: lx, y: ly - h, w, h });
      return svg('text', { x: lx, y: ly }, text);
    }
    for (const { charity: c } of charities.values()) {
      const [x, y] = project(c.location);
      items.push(svg('g', { 'data-testid': 'map-charity', 'data-id': c.id },
        svg('circle', { cx: x, cy: y, r: 7, class: mine.has(c.id) ? 'charity mine' : 'charity' }, svg('title', {}, c.name)),
        labelAt(x, y, c.name)));
    }
    for (const { donation: d } of donations.values()) {
      const [x, y] = project(d.location);
      items.push(svg('rect', { x: x - 6, y: y - 6, width: 12, height: 12, class: d.status === 'OPEN' || d.status === 'MATCHED' ? 'donation' : 'donation claimed', 'data-testid': 'map-donation' },
        svg('title', {}, `${d.quantityKg} kg ${d.foodType.toLowerCase()} (${d.status.toLowerCase()})`)));
    }
    map.replaceChildren(...items);
    map.setAttribute('aria-label', `Map: ${charities.size} charities and ${donations.size} donations within ${state.radiusKm} km of ${state.lat.toFixed(4)}, ${state.lng.toFixed(4)}`);
  }

  const kg = (x) => `${Number(x.toFixed(2))} kg`; // sums of floats: 6, not 5.999999999
  const capacityText = (c) => `${kg(c.capacityKg)} (${kg(c.remainingKg)} left today)`;

  function renderResults() {
    results.replaceChildren(...[...charities.values()].map(({ charity: c, distanceKm }) =>
      h('tr', { 'data-testid': 'charity-row', 'data-id': c.id },
        h('td', {}, c.name, me && c.managerId === me.sub ? ' (yours)' : ''), h('td', {}, `${distanceKm.toFixed(2)} km`),
        h('td', {}, c.accepts.map((f) => f.toLowerCase()).join(', ')),
        h('td', { 'data-testid': 'remaining', 'data-remaining-kg': c.remainingKg }, capacityText(c)))));
  }

  async function runSearch() {
    try {
      const data = await gql(NEAR, { lat: state.lat, lng: state.lng, radiusKm: state.radiusKm, foodType: state.foodType || null });
      charities.clear();
      for (const { charity: c, distanceKm } of data.charitiesNear) {
        charities.set(c.id, { charity: c, distanceKm });
        if (me?.role === 'admin' && !mine.has(c.id)) watch(c);
      }
      renderResults();
      summary.textContent = `${data.charitiesNear.length} charities within ${state.radiusKm} km, nearest first.`;
      errors.set('');
      drawMap();
    } catch (err) {
      errors.set(errorText(err));
    }
  }

  function renderOwn() {
    if (!own.size) {
      ownList.replaceChildren(h('li', { class: 'muted' }, 'You manage no charity yet.'));
      return;
    }
    ownList.replaceChildren(...[...own.values()].map((c) =>
      h('li', { 'data-testid': 'my-charity', 'data-id': c.id, 'data-remaining-kg': c.remainingKg },
        h('strong', {}, c.name), ` · accepts ${c.accepts.map((f) => f.toLowerCase()).join(', ')} · `, capacityText(c))));
  }

  // Every page of myCharities: all of them are watched, wherever the search looks.
  async function loadOwn() {
    try {
      let after = null;
      do {
        const { myCharities: page } = await gql(MY_CHARITIES, { after });
        for (const c of page.nodes) {
          own.set(c.id, c);
          if (!mine.has(c.id)) watch(c);
        }
        after = page.pageInfo.hasNextPage ? page.pageInfo.endCursor : null;
      } while (after);
      renderOwn();
    } catch (err) {
      errors.set(errorText(err));
    }
  }

  // After a claim the charity's remaining capacity has changed: read it again.
  async function refreshCharity(id) {
    try {
      const { charity: c } = await gql(CHARITY, { id });
      if (!c) return;
      if (own.has(id)) { own.set(id, c); renderOwn(); }
      const hit = charities.get(id);
      if (hit) { hit.charity = c; renderResults(); }
    } catch (err) {
      errors.set(errorText(err));
    }
  }

  const names = new Map(); // charity id -> name, for claimers neither ours nor in the search
  const charityName = (id) => own.get(id)?.name || charities.get(id)?.charity.name || names.get(id) || id;

  function watch(charity) {
    if (closed) return; // an answer that arrived after the page was left
    // From the start of the matches (after: 0) so earlier proposals are listed too, then live.
    mine.set(charity.id, live(MATCHES, { c: charity.id, after: 0 }, 'donationMatched', {
      onEvent: (m) => proposed(m, charity),
      onError: (err) => errors.set(`Live matches for ${charity.name} stopped: ${errorText(err)}`),
    }));
  }

  async function proposed(m, charity) {
    try {
      const { donation: d } = await gql(DONATION, { id: m.donationId });
      if (!d) return;
      const known = donations.get(d.id);
      if (known) { known.donation = d; known.matches.push({ charity, distanceKm: m.distanceKm }); }
      else donations.set(d.id, { donation: d, matches: [{ charity, distanceKm: m.distanceKm }] });
      renderMatches();
      drawMap();
      if (d.status !== 'CLAIMED') announce(`New donation proposed: ${d.quantityKg} kg ${d.foodType.toLowerCase()}`);
    } catch (err) {
      errors.set(errorText(err));
    }
  }

  function renderMatches() {
    const entries = [...donations.values()].sort((a, b) => b.donation.pickupBy.localeCompare(a.donation.pickupBy));
    matchList.replaceChildren(...entries.map(({ donation: d, matches }) => {
      const claimable = !d.claimedBy && !['EXPIRED', 'CANCELLED', 'DELIVERED', 'PICKED_UP'].includes(d.status);
      return h('li', { 'data-testid': 'match', 'data-donation-id': d.id, 'data-status': d.status, 'data-rendered-at': nowMs().toFixed(1) },
        h('strong', {}, `${d.quantityKg} kg ${d.foodType.toLowerCase()}`),
        ` · pick up by ${when(d.pickupBy)} · `, h('span', { 'data-testid': 'donation-status' }, d.status.toLowerCase()),
        d.claimedBy ? ` by ${charityName(d.claimedBy)}` : '',
        h('div', { class: 'row' }, claimable ? matches.map(({ charity, distanceKm }) =>
          h('button', { type: 'button', 'data-testid': 'claim', 'data-charity-id': charity.id, onclick: (e) => claim(d.id, charity, e.currentTarget) },
            `Claim for ${charity.name} (${distanceKm.toFixed(1)} km)`)) : null));
    }));
  }

  async function claim(donationId, charity, button) {
    button.disabled = true;
    try {
      const { claimDonation: d } = await gql(CLAIM, { d: donationId, c: charity.id });
      const entry = donations.get(donationId);
      entry.donation = { ...entry.donation, ...d };
      claimMsg.set(`Claimed for ${charity.name}.`, 'ok');
      announce(`Donation claimed for ${charity.name}`);
      refreshCharity(charity.id);
    } catch (err) {
      claimMsg.set(`Could not claim: ${errorText(err)}`);
      button.disabled = false;
    }
    renderMatches();
    drawMap();
  }

  function renderMyDonations() {
    if (!myDonations.length) {
      myList.replaceChildren(h('li', { class: 'muted' }, 'You have posted no donation yet.'));
      return;
    }
    myList.replaceChildren(...myDonations.map((d) =>
      h('li', { 'data-testid': 'my-donation', 'data-id': d.id, 'data-status': d.status },
        h('strong', {}, `${d.quantityKg} kg ${d.foodType.toLowerCase()}`),
        ` · pick up by ${when(d.pickupBy)} · `, h('span', { 'data-testid': 'donation-status' }, d.status.toLowerCase()),
        d.claimedBy ? ` by ${charityName(d.claimedBy)}` : '')));
  }

  async function loadMyDonations() {
    older.disabled = true;
    try {
      const { myDonations: page } = await gql(MY_DONATIONS, { after: olderCursor });
      for (const d of page.nodes) {
        // A donation posted from this page may already be listed (the read model lags a little).
        if (myDonations.some((m) => m.id === d.id)) continue;
        myDonations.push(d);
        donations.set(d.id, { donation: d, matches: [] });
      }
      olderCursor = page.pageInfo.hasNextPage ? page.pageInfo.endCursor : null;
      older.hidden = !olderCursor;
      renderMyDonations();
      drawMap();
      const unknown = new Set(page.nodes.map((d) => d.claimedBy).filter((id) => id && charityName(id) === id));
      if (unknown.size) {
        await Promise.all([...unknown].map(async (id) => {
          const { charity: c } = await gql(CHARITY, { id });
          if (c) names.set(id, c.name);
        }));
        renderMyDonations();
      }
    } catch (err) {
      errors.set(errorText(err));
    }
    older.disabled = false;
  }

  function donorForm() {
    const msg = notice('post-message');
    const pickup = h('input', { id: 'pickup', name: 'pickupBy', type: 'datetime-local', required: true,
      value: new Date(Date.now() + 4 * 3600_000 - new Date().getTimezoneOffset() * 60_000).toISOString().slice(0, 16) });
    const form = h('form', { class: 'row', 'aria-label': 'Post a donation at the map centre' },
      h('label', {}, 'Food', h('select', { name: 'foodType' }, FOODS.map((f) => h('option', { value: f }, f.toLowerCase())))),
      h('label', {}, 'Quantity (kg)', h('input', { name: 'quantityKg', type: 'number', step: 'any', min: 0.1, required: true, value: 10 })),
      h('label', { for: 'pickup' }, 'Pick up by', pickup),
      h('button', { type: 'submit' }, 'Post donation'));
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const f = new FormData(form);
      try {
        const { postDonation: d } = await gql(POST, { input: { foodType: f.get('foodType'), quantityKg: Number(f.get('quantityKg')),
          location: { lat: state.lat, lng: state.lng }, pickupBy: new Date(f.get('pickupBy')).toISOString() } });
        donations.set(d.id, { donation: d, matches: [] });
        myDonations.unshift(d);
        renderMyDonations();
        msg.set(`Posted: ${d.quantityKg} kg ${d.foodType.toLowerCase()} at the map centre; the matcher proposes charities shortly.`, 'ok');
        drawMap();
      } catch (err) {
        msg.set(errorText(err));
      }
    });
    return [h('section', { class: 'card', 'aria-labelledby': 'post-h' }, h('h2', { id: 'post-h' }, 'Post surplus food'), msg, form),
      h('section', { class: 'card', 'aria-labelledby': 'mine-h' }, h('h2', { id: 'mine-h' }, 'Your donations'), myList, older)];
  }

  search.addEventListener('submit', (e) => {
    e.preventDefault();
    state.lat = Number(lat.value);
    state.lng = Number(lng.value);
    state.radiusKm = Number(radius.value);
    state.foodType = food.value;
    runSearch();
  });
  map.addEventListener('click', (e) => {
    const box = map.getBoundingClientRect();
    const x = ((e.clientX - box.left) / box.width) * W;
    const y = ((e.clientY - box.top) / box.height) * H;
    const scale = (Math.min(W, H) / 2 - 24) / state.radiusKm;
    state.lat += (H / 2 - y) / scale / KM_PER_DEG;
    state.lng += (x - W / 2) / scale / KM_PER_DEG / Math.cos((state.lat * Math.PI) / 180);
    lat.value = state.lat.toFixed(5);
    lng.value = state.lng.toFixed(5);
    runSearch();
  });
  drawMap();
  runSearch();
  if (isManager) loadOwn();
  if (isDonor) loadMyDonations();
  return () => {
    closed = true;
    for (const stop of mine.values()) stop();
  };
}
