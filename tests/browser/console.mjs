// Drives the Triad web console in headless Chromium through the scenarios of issue 7.
// Run by tests/tests/console.rs, which starts the server, seeds it and passes:
//   TRIAD_URL            http://127.0.0.1:PORT
//   CHROMIUM             the browser binary
//   SCREENSHOT_DIR       where to write PNGs
//   AUCTION_ID, MIN_INCREMENT, PATIENT_ID, LAT, LNG
//   TOKEN_DEALER1, TOKEN_DEALER2, TOKEN_SELLER, TOKEN_DOCTOR, TOKEN_PATIENT, TOKEN_CHARITY, TOKEN_DONOR, TOKEN_ADMIN
//   (dealer-1 signs in through the demo identities on the sign-in page)
// Prints what it checks and the latency measurements; exits non-zero on the first failure.
// Waits are for states (a row with a status), never fixed sleeps.
import { chromium } from 'playwright-core';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`missing env ${name}`);
  return v;
};
const BASE = env('TRIAD_URL');
const SHOTS = env('SCREENSHOT_DIR');
const AUCTION = env('AUCTION_ID');
const INC = Number(env('MIN_INCREMENT'));
const PATIENT = env('PATIENT_ID');
const WAIT = { timeout: 15_000 };
mkdirSync(SHOTS, { recursive: true });

const wall = () => performance.timeOrigin + performance.now();
const log = (...a) => console.log('console.mjs:', ...a);

async function graphql(token, query, variables = {}) {
  const res = await fetch(`${BASE}/graphql`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({ query, variables }),
  });
  const body = await res.json();
  if (body.errors) throw new Error(`${query.slice(0, 60)}: ${JSON.stringify(body.errors)}`);
  return body.data;
}

/** Polls `check` (a promise of a truthy value) until it holds, for at most WAIT.timeout. */
async function until(what, check) {
  const deadline = Date.now() + WAIT.timeout;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

function assert(cond, what) {
  if (!cond) throw new Error(`assertion failed: ${what}`);
  log('ok -', what);
}

const stats = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  const q = (p) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { n: s.length, min: s[0], median: q(0.5), p95: q(0.95), max: s[s.length - 1] };
};
const fmt = (st) => `n=${st.n} min=${st.min.toFixed(1)}ms median=${st.median.toFixed(1)}ms p95=${st.p95.toFixed(1)}ms max=${st.max.toFixed(1)}ms`;

const PLACE_BID = 'mutation($input: PlaceBidInput!) { placeBid(input: $input) { accepted auction { version } } }';

const browser = await chromium.launch({
  executablePath: env('CHROMIUM'),
  // Root in a container has no user namespaces for Chromium's sandbox.
  args: ['--no-sandbox', '--disable-dev-shm-usage'],
});
const pageErrors = [];

async function newPage(viewport = { width: 1100, height: 900 }) {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(e.message));
  return page;
}

async function signInWithToken(page, token) {
  await page.goto(`${BASE}/#/signin`);
  await page.getByLabel('Bearer token (JWT)').fill(token);
  await page.getByRole('button', { name: 'Sign in', exact: true }).click();
  await page.waitForFunction(() => !location.hash.startsWith('#/signin'));
}

const shot = async (page, name) => {
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage: true });
  log('screenshot', `${name}.png`);
};

const priceAmount = async (page) => Number(await page.getAttribute('[data-testid=current-price]', 'data-amount'));

const summary = {};
try {
  // --- sign-in: the demo identities (this server was told it is a demo) ----------------
  const page = await newPage();
  await page.goto(`${BASE}/`);
  await page.waitForSelector('[data-testid=demo-identity]', WAIT);
  assert(await page.getByLabel('Bearer token (JWT)').isVisible(), 'the sign-in page offers "paste a token"');
  await shot(page, '01-sign-in');
  await page.click('[data-testid=demo-identity][data-sub="dealer-1"]');
  await page.waitForFunction(() => location.hash === '#/auctions');
  await page.waitForSelector(`[data-testid=auction-row][data-id="${AUCTION}"]`, WAIT);
  assert((await page.textContent('[data-testid=who]')).includes('dealer-1'), 'signed in as dealer-1 (dealer) through the demo');
  await shot(page, '02-auctions');

  // --- the auction page, live -------------------------------------------------------------
  await page.click(`[data-testid=auction-row][data-id="${AUCTION}"] a`);
  await page.waitForSelector('[data-testid=current-price][data-state=confirmed]', WAIT);
  await page.waitForSelector('[data-testid=connection-status][data-state=live]', WAIT);
  // The seeded bid has come through the stream (history from the start of the auction).
  await page.waitForSelector('[data-testid=bid-row][data-position]', WAIT);

  // --- 1. an optimistic bid: pending at once, then confirmed by the mutation's answer -------
  let release;
  const gate = new Promise((r) => { release = r; });
  await page.route('**/graphql', async (route) => {
    if ((route.request().postData() || '').includes('placeBid')) await gate;
    await route.continue();
  });
  const mine = (await priceAmount(page)) + INC;
  await page.getByLabel('Your bid (EUR)').fill((mine / 100).toFixed(2));
  await page.getByRole('button', { name: 'Place bid' }).click();
  const pendingRow = `[data-testid=bid-row][data-amount="${mine}"]`;
  await page.waitForSelector(`${pendingRow}[data-status=pending]`, WAIT);
  await page.waitForSelector(`[data-testid=current-price][data-state=pending][data-amount="${mine}"]`, WAIT);
  assert(true, `bid of ${mine} cents shows at once as pending (row and price) while the server has not answered`);
  await shot(page, '03-bid-pending');
  release();
  await page.waitForSelector(`${pendingRow}[data-status=confirmed]`, WAIT);
  await page.waitForSelector(`[data-testid=current-price][data-state=confirmed][data-amount="${mine}"]`, WAIT);
  assert(true, 'the mutation answer confirms it: row confirmed, price confirmed');
  await page.waitForSelector(`${pendingRow}[data-position]`, WAIT);
  assert((await page.locator(pendingRow).count()) === 1, 'the same bid arriving on the subscription is reconciled into the same row (no duplicate)');
  await page.unroute('**/graphql');
  await shot(page, '04-bid-confirmed');

  // --- 2. a bid too low: rolled back with the reason ------------------------------------------
  const low = mine - INC;
  await page.getByLabel('Your bid (EUR)').fill((low / 100).toFixed(2));
  await page.getByRole('button', { name: 'Place bid' }).click();
  await page.waitForSelector(`[data-testid=bid-row][data-amount="${low}"][data-status=rolled-back][data-reason=BID_TOO_LOW]`, WAIT);
  const message = await page.textContent('[data-testid=bid-message]');
  assert(message.includes('rolled back') && message.includes('BID_TOO_LOW'), `the too-low bid is rolled back with its reason: "${message.trim()}"`);
  assert(await priceAmount(page) === mine, 'the price is back to the confirmed highest bid');
  await shot(page, '05-bid-rolled-back');

  // --- 3. another client's bids appear live; time from its request to the page --------------
  const latencies = [];
  const answers = [];
  let top = mine;
  for (let i = 0; i < 20; i++) {
    top += INC;
    const t0 = wall();
    const data = await graphql(env('TOKEN_DEALER2'), PLACE_BID, { input: { auctionId: AUCTION, amountCents: top, clientBidId: `other-${i}` } });
    answers.push(wall() - t0);
    assert(data.placeBid.accepted, `dealer-2 bid ${top} accepted`);
    const row = `[data-testid=bid-row][data-bidder="dealer-2"][data-amount="${top}"]`;
    await page.waitForSelector(row, WAIT);
    latencies.push(Number(await page.getAttribute(row, 'data-rendered-at')) - t0);
  }
  assert(await priceAmount(page) === top, 'the price follows the other client\'s bids');
  summary.bidToPage = stats(latencies);
  summary.mutationAnswer = stats(answers);
  log(`bid by another client -> on the page: ${fmt(summary.bidToPage)}`);
  log(`(placeBid HTTP answer to that client: ${fmt(summary.mutationAnswer)})`);
  await shot(page, '06-other-client-bids');

  // --- 4. a lost connection shows as such and resumes from the last position, no gaps -------
  const p2 = await newPage({ width: 390, height: 844 }); // a phone
  const sockets = [];
  let connect = true;
  await p2.routeWebSocket(/\/graphql\/ws$/, (ws) => {
    if (connect) ws.connectToServer();
    sockets.push(ws);
  });
  await signInWithToken(p2, env('TOKEN_DEALER2'));
  await p2.goto(`${BASE}/#/auction/${AUCTION}`);
  await p2.waitForSelector(`[data-testid=bid-row][data-amount="${top}"]`, WAIT);
  await p2.waitForSelector('[data-testid=connection-status][data-state=live]', WAIT);
  connect = false; // the next connection attempts hang, like a dead network
  await sockets.at(-1).close({ code: 1001, reason: 'network lost (test)' });
  await p2.waitForSelector('[data-testid=connection-status][data-state=reconnecting]', WAIT);
  assert(true, 'the lost connection shows as such');
  await shot(p2, '07-phone-connection-lost');
  const missed = [top + INC, top + 2 * INC];
  for (const [i, amount] of missed.entries()) {
    // Placed by dealer-1 from another client while this page is offline.
    await graphql(env('TOKEN_DEALER1'), PLACE_BID, { input: { auctionId: AUCTION, amountCents: amount, clientBidId: `offline-${i}` } });
  }
  top = missed[1];
  connect = true;
  await sockets.at(-1).close({ code: 1001, reason: 'retry' }); // the hanging attempt gives up
  for (const amount of missed) await p2.waitForSelector(`[data-testid=bid-row][data-amount="${amount}"]`, WAIT);
  await p2.waitForSelector('[data-testid=connection-status][data-state=live]', WAIT);
  for (const amount of missed) {
    assert((await p2.locator(`[data-testid=bid-row][data-amount="${amount}"]`).count()) === 1, `bid ${amount} missed while offline arrives once after the reconnect`);
  }
  const positions = await p2.$$eval('[data-testid=bid-row][data-position]', (rows) => rows.map((r) => Number(r.dataset.position)));
  assert(positions.every((p, i) => i === 0 || positions[i - 1] > p), 'the feed is in log order, newest first');
  assert(await p2.getAttribute('[data-testid=current-price]', 'data-amount') === String(top), 'the price caught up');
  await shot(p2, '08-phone-resumed');

  // --- 5. AUCTION_CLOSED: the seller closes, a bid is rolled back with that reason ----------
  await graphql(env('TOKEN_SELLER'), 'mutation($id: ID!) { closeAuction(auctionId: $id) { status } }', { id: AUCTION });
  const late = top + INC;
  await page.getByLabel('Your bid (EUR)').fill((late / 100).toFixed(2));
  await page.getByRole('button', { name: 'Place bid' }).click();
  await page.waitForSelector(`[data-testid=bid-row][data-amount="${late}"][data-status=rolled-back][data-reason=AUCTION_CLOSED]`, WAIT);
  assert((await page.textContent('[data-testid=bid-message]')).includes('AUCTION_CLOSED'), 'a bid on a closed auction is rolled back with AUCTION_CLOSED');

  // --- 6. patients: a chart with data, and a live alert ----------------------------------------
  const doc = await newPage();
  await signInWithToken(doc, env('TOKEN_DOCTOR'));
  await doc.goto(`${BASE}/#/patients/${PATIENT}`);
  await doc.waitForSelector('[data-testid=chart-HEART_RATE] canvas', WAIT);
  const points = Number(await doc.getAttribute('[data-testid=chart-HEART_RATE]', 'data-points'));
  assert(points >= 10, `the heart-rate chart renders ${points} points (a uPlot canvas)`);
  await doc.selectOption('[data-testid=bucket]', 'RAW');
  await doc.waitForFunction(() => Number(document.querySelector('[data-testid=chart-HEART_RATE]')?.dataset.points) > 24);
  assert(true, 'choosing the RAW bucket redraws the chart with every reading');
  await doc.waitForSelector('[data-testid=connection-status][data-state=live]', WAIT);
  await shot(doc, '09-patient-charts');
  const now = Date.now();
  const readings = [15, 10, 5, 0].map((m) => ({ kind: 'SPO2', value: 85, at: new Date(now - m * 60_000).toISOString() }));
  const t0 = wall();
  await graphql(env('TOKEN_PATIENT'), 'mutation($input: RecordVitalsInput!) { recordVitals(input: $input) { recorded } }', { input: { patientId: PATIENT, readings } });
  await doc.waitForSelector('[data-testid=alert][data-live=true][data-kind=SPO2]', WAIT);
  summary.alertToPage = Number(await doc.getAttribute('[data-testid=alert][data-live=true]', 'data-rendered-at')) - t0;
  assert(true, `an alert raised by readings sent from outside arrives live (${summary.alertToPage.toFixed(0)} ms after the readings were sent)`);
  // The alert means new readings: the page reloads its charts, and the dip is drawn.
  await doc.waitForFunction((n) => Number(document.querySelector('[data-testid=chart-SPO2]')?.dataset.points) >= n, 70 + readings.length);
  assert(true, 'the SpO2 chart is redrawn with the readings behind the alert');
  await shot(doc, '10-patient-live-alert');

  // --- 7. donations: radius search, a match arriving live, claim -------------------------------
  const ch = await newPage();
  await signInWithToken(ch, env('TOKEN_CHARITY'));
  await ch.goto(`${BASE}/#/donations`);
  // myCharities: all three are listed (and watched) before any search finds them.
  await ch.waitForFunction(() => document.querySelectorAll('[data-testid=my-charity][data-remaining-kg="100"]').length === 3);
  assert(true, 'the charity user\'s three charities are listed with today\'s remaining capacity before any search');
  await ch.getByLabel('Latitude').fill(env('LAT'));
  await ch.getByLabel('Longitude').fill(env('LNG'));
  await ch.getByLabel('Radius (km)').fill('5');
  await ch.getByRole('button', { name: 'Search' }).click();
  await ch.waitForFunction(() => document.querySelector('[data-testid=search-summary]')?.textContent.includes('within 5 km'));
  const names = await ch.$$eval('[data-testid=charity-row]', (rows) => rows.map((r) => r.textContent));
  assert(names.length === 2 && names[0].includes('Near Kitchen') && names[1].includes('Mid Pantry'), `the 5 km search lists the two charities inside, nearest first (${names.length})`);
  assert((await ch.locator('[data-testid=map-charity]').count()) === 2, 'both are drawn on the map, with a scale bar');
  await ch.getByLabel('Radius (km)').fill('50');
  await ch.getByRole('button', { name: 'Search' }).click();
  await ch.waitForFunction(() => document.querySelectorAll('[data-testid=charity-row]').length === 3);
  assert(true, 'a 50 km search adds the far one');
  await ch.waitForSelector('[data-testid=connection-status][data-state=live]', WAIT);
  const pickupBy = new Date(Date.now() + 3 * 3600_000).toISOString();
  const posted = await graphql(env('TOKEN_DONOR'), 'mutation($input: PostDonationInput!) { postDonation(input: $input) { id } }', {
    input: { foodType: 'BAKERY', quantityKg: 6, location: { lat: Number(env('LAT')) + 0.004, lng: Number(env('LNG')) }, pickupBy },
  });
  const donation = posted.postDonation.id;
  const match = `[data-testid=match][data-donation-id="${donation}"]`;
  await ch.waitForSelector(`${match} [data-testid=claim]`, WAIT);
  assert(true, 'the donation posted by the donor arrives live as a match');
  await ch.waitForSelector('[data-testid=map-donation]', WAIT);
  await shot(ch, '11-donations-map');
  const claimer = await ch.getAttribute(`${match} [data-testid=claim] >> nth=0`, 'data-charity-id');
  await ch.click(`${match} [data-testid=claim] >> nth=0`);
  await ch.waitForSelector(`${match}[data-status=CLAIMED]`, WAIT);
  assert((await ch.textContent('[data-testid=claim-message]')).includes('Claimed'), 'claimed: the donation shows as claimed');
  const check = await graphql(env('TOKEN_DONOR'), 'query($id: ID!) { donation(id: $id) { status claimedBy } }', { id: donation });
  assert(check.donation.status === 'CLAIMED', 'and the server agrees');
  // Capacity is per pickup day (UTC): the 6 kg count against today only if picked up today.
  const left = pickupBy.slice(0, 10) === new Date().toISOString().slice(0, 10) ? 94 : 100;
  await ch.waitForSelector(`[data-testid=my-charity][data-id="${claimer}"][data-remaining-kg="${left}"]`, WAIT);
  assert(true, `the claiming charity shows ${left} kg left today`);
  await shot(ch, '12-donation-claimed');

  // --- 7b. a donor's donations survive a reload (myDonations) ---------------------------------
  // myDonations reads the read model, a few milliseconds behind the aggregate: load the page
  // once it has the states this checks.
  const myDonations = async () => (await graphql(env('TOKEN_DONOR'), '{ myDonations(first: 10) { nodes { id status } } }')).myDonations.nodes;
  await until('the claim in the read model', async () => (await myDonations()).some((d) => d.id === donation && d.status === 'CLAIMED'));
  const dn = await newPage();
  await signInWithToken(dn, env('TOKEN_DONOR'));
  await dn.goto(`${BASE}/#/donations`);
  await dn.waitForSelector(`[data-testid=my-donation][data-id="${donation}"][data-status=CLAIMED]`, WAIT);
  assert(true, 'the donor sees the donation posted earlier, claimed');
  await dn.getByLabel('Quantity (kg)').fill('7.5');
  await dn.getByRole('button', { name: 'Post donation' }).click();
  await dn.waitForFunction(() => document.querySelectorAll('[data-testid=my-donation]').length === 2);
  const fresh = await dn.getAttribute('[data-testid=my-donation] >> nth=0', 'data-id');
  assert(fresh !== donation, 'the posted donation is listed first');
  await until('the new donation in the read model', async () => (await myDonations()).some((d) => d.id === fresh));
  await dn.reload();
  await dn.waitForSelector(`[data-testid=my-donation][data-id="${fresh}"][data-status=OPEN]`, WAIT);
  const listed = await dn.$$eval('[data-testid=my-donation]', (rows) => rows.map((r) => r.dataset.id));
  assert(listed.length === 2 && listed[0] === fresh && listed[1] === donation, 'after a reload both are still listed, newest first');
  await shot(dn, '12b-donor-donations');

  // --- 8. admin: the reads of the patient, and a history with a time slider ------------------
  const adm = await newPage();
  await signInWithToken(adm, env('TOKEN_ADMIN'));
  await adm.goto(`${BASE}/#/admin`);
  await adm.getByLabel('Patient id').fill(PATIENT);
  await adm.getByRole('button', { name: 'Show reads' }).click();
  await adm.waitForSelector('[data-testid=audit-row]', WAIT);
  assert((await adm.textContent('[data-testid=audit-log]')).includes('doc-1'), 'the audit log lists the doctor\'s reads');
  await adm.getByLabel('Id', { exact: true }).fill(AUCTION);
  await adm.getByRole('button', { name: 'Load history' }).click();
  await adm.waitForSelector('[data-testid=history-state][data-events]', WAIT);
  const all = Number(await adm.getAttribute('[data-testid=history-slider]', 'max')) + 1;
  await adm.locator('[data-testid=history-slider]').press('Home'); // keyboard: the first event
  await adm.waitForSelector('[data-testid=history-state][data-events="1"]', WAIT);
  const first = JSON.parse(await adm.textContent('[data-testid=history-state]'));
  assert(all > 20 && first.highest == null && first.status === 'OPEN', `the time slider shows the state as of the first of ${all} events (open, no bid)`);
  await shot(adm, '13-admin-history');

  assert(pageErrors.length === 0, `no uncaught errors in the pages (${pageErrors.join('; ')})`);
  console.log(`CONSOLE-SUMMARY ${JSON.stringify(summary)}`);
} catch (err) {
  console.error('console.mjs: FAILED:', err.stack || err);
  if (pageErrors.length) console.error('page errors:', pageErrors);
  await browser.close();
  process.exit(1);
}
await browser.close();
