// Auctions: the open auctions with countdowns; one auction with its price, leaderboard and a
// live bid feed, and an optimistic bid button.
import { gql, live, session } from '../lib/gql.js';
import { h, money, when, countdown, announce, notice, nowMs, errorText } from '../lib/ui.js';

const LIST = `query { auctions(status: OPEN, first: 50) { nodes {
  id title endsAt status bidCount minimumNextBidCents highestBid { amountCents bidderId } } } }`;

export function listPage(main) {
  const body = h('tbody');
  const status = notice('auctions-error');
  main.append(
    h('h1', {}, 'Open auctions'),
    status,
    h('div', { class: 'card table-wrap' },
      h('table', { 'data-testid': 'auction-list' },
        h('caption', { class: 'visually-hidden' }, 'Open auctions, ending soonest first'),
        h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Vehicle'), h('th', { scope: 'col' }, 'Current price'),
          h('th', { scope: 'col' }, 'Bids'), h('th', { scope: 'col' }, 'Ends in'))),
        body)));
  const timers = [];
  gql(LIST).then((data) => {
    const nodes = [...data.auctions.nodes].sort((a, b) => a.endsAt.localeCompare(b.endsAt));
    if (!nodes.length) body.append(h('tr', {}, h('td', { colspan: 4 }, 'No open auctions.')));
    for (const a of nodes) {
      const ends = h('time', { datetime: a.endsAt, title: when(a.endsAt) }, countdown(a.endsAt));
      body.append(h('tr', { 'data-testid': 'auction-row', 'data-id': a.id },
        h('td', {}, h('a', { href: `#/auction/${encodeURIComponent(a.id)}` }, a.title)),
        h('td', {}, a.highestBid ? money(a.highestBid.amountCents) : `${money(a.minimumNextBidCents)} (start)`),
        h('td', {}, a.bidCount),
        h('td', {}, ends)));
      timers.push(() => { ends.textContent = countdown(a.endsAt); });
    }
  }).catch((err) => status.set(errorText(err)));
  const tick = setInterval(() => timers.forEach((t) => t()), 1000);
  return () => clearInterval(tick);
}

const AUCTION = `query($id: ID!) { auction(id: $id) {
  id title sellerId status startingPriceCents minIncrementCents minimumNextBidCents reserveMet
  endsAt bidCount version winnerId highestBid { amountCents bidderId placedAt }
  leaderboard(top: 10) { rank bidderId amountCents bidCount } } }`;

const PLACE_BID = `mutation($input: PlaceBidInput!) { placeBid(input: $input) {
  accepted duplicate auction { id status version endsAt bidCount minimumNextBidCents
  highestBid { amountCents bidderId placedAt } } } }`;

const BIDS = `subscription($id: ID!, $after: Int) { bidPlaced(auctionId: $id, after: $after) {
  auctionId amountCents bidderId position placedAt endsAt version } }`;

const REASONS = {
  BID_TOO_LOW: 'too low: it must beat the highest bid by the minimum increment',
  AUCTION_CLOSED: 'the auction has closed',
  OWN_AUCTION: 'you cannot bid on your own auction',
  FORBIDDEN: 'only dealers may bid',
  UNAUTHENTICATED: 'your sign-in is no longer valid',
  INVALID_INPUT: 'the amount is not valid',
  NETWORK: 'the server did not answer',
  CONFLICT: 'too many bids at once; try again',
};

function bidId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  // crypto.randomUUID needs a secure context; plain http on a LAN address is not one.
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, '0')).join('');
}

export function auctionPage(main, id) {
  const me = session.claims();
  const canBid = me?.role === 'dealer';
  // The confirmed state (from the query, mutation answers and the stream; highest version
  // wins), and our bids awaiting their answer.
  let auction = null;
  const mine = []; // our bids not yet seen on the stream: { amount, row, status }
  const early = []; // stream events that arrive before the query answers
  let leaderboard = [];
  let boardVersion = 0; // the auction version the leaderboard includes

  const title = h('h1', {}, 'Auction');
  const errors = notice('auction-error');
  const price = h('div', { class: 'price', 'data-testid': 'current-price', 'aria-live': 'polite' }, '…');
  const leader = h('div', { class: 'muted', 'data-testid': 'leader' });
  const ends = h('time', { 'data-testid': 'countdown' });
  const facts = h('p', { class: 'muted' });
  const feed = h('ol', { class: 'feed', 'data-testid': 'bid-feed', 'aria-label': 'Bids, newest first' });
  const board = h('tbody');
  const rollback = notice('bid-message');
  const amount = h('input', { id: 'bid-amount', name: 'amount', type: 'number', inputmode: 'decimal', step: '0.01', required: true, 'data-testid': 'bid-amount' });
  const hint = h('p', { class: 'muted', id: 'bid-hint', 'data-testid': 'bid-hint' });
  amount.setAttribute('aria-describedby', 'bid-hint');
  const button = h('button', { type: 'submit', 'data-testid': 'place-bid' }, 'Place bid');
  const form = h('form', { class: 'row', 'aria-label': 'Place a bid' },
    h('label', { for: 'bid-amount' }, 'Your bid (EUR)', amount), button);

  main.append(title, errors,
    h('div', { class: 'grid' },
      h('section', { class: 'card', 'aria-labelledby': 'price-h' },
        h('h2', { id: 'price-h' }, 'Current price'), price, leader,
        h('p', {}, 'Ends in ', ends), facts,
        canBid ? [form, hint, rollback]
          : h('p', { class: 'muted' }, me ? `Signed in as ${me.role}: only dealers bid.` : h('span', {}, h('a', { href: '#/signin' }, 'Sign in'), ' as a dealer to bid.'))),
      h('section', { class: 'card', 'aria-labelledby': 'board-h' },
        h('h2', { id: 'board-h' }, 'Leaderboard'),
        h('div', { class: 'table-wrap' }, h('table', { 'data-testid': 'leaderboard' },
          h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, '#'), h('th', { scope: 'col' }, 'Dealer'),
            h('th', { scope: 'col' }, 'Highest bid'), h('th', { scope: 'col' }, 'Bids'))), board)))),
    h('section', { class: 'card', 'aria-labelledby': 'feed-h' }, h('h2', { id: 'feed-h' }, 'Live bids'), feed));

  function highestPending() {
    let best = null;
    for (const p of mine) if (p.status === 'pending' && (!best || p.amount > best.amount)) best = p;
    return best;
  }

  function renderPrice() {
    if (!auction) return;
    const top = auction.highestBid;
    const ours = highestPending();
    const showPending = ours && (!top || ours.amount > top.amountCents);
    if (showPending) {
      price.dataset.state = 'pending';
      price.replaceChildren(money(ours.amount), h('span', { class: 'badge pending' }, 'pending'));
      leader.textContent = 'Your bid, waiting for the server';
    } else {
      price.dataset.state = 'confirmed';
      price.replaceChildren(top ? money(top.amountCents) : money(auction.startingPriceCents));
      leader.textContent = top ? `Highest bidder: ${top.bidderId}${me && top.bidderId === me.sub ? ' (you)' : ''}` : 'No bids yet: starting price';
    }
    price.dataset.amount = String(showPending ? ours.amount : top ? top.amountCents : auction.startingPriceCents);
    facts.textContent = `${auction.status} · ${auction.bidCount} bids · minimum increment ${money(auction.minIncrementCents)}${auction.reserveMet ? ' · reserve met' : ''}`;
    hint.textContent = `Minimum next bid: ${money(auction.minimumNextBidCents)}`;
    title.textContent = auction.title;
    ends.setAttribute('datetime', auction.endsAt);
    ends.title = when(auction.endsAt);
    ends.textContent = countdown(auction.endsAt);
    if (auction.status !== 'OPEN') button.disabled = true;
  }

  function renderBoard() {
    board.replaceChildren(...leaderboard.map((e, i) => h('tr', { 'data-bidder': e.bidderId },
      h('td', {}, i + 1), h('td', {}, e.bidderId, me && e.bidderId === me.sub ? ' (you)' : ''),
      h('td', {}, money(e.amountCents)), h('td', {}, e.bidCount))));
  }

  function feedRow({ amount: cents, bidder, status, at, clientBidId }) {
    const badge = h('span', { class: `badge ${status}` }, status.replace('-', ' '));
    const row = h('li', { 'data-testid': 'bid-row', 'data-status': status, 'data-amount': cents, 'data-bidder': bidder },
      h('span', { class: 'amount' }, money(cents)),
      h('span', {}, bidder, me && bidder === me.sub ? ' (you)' : ''),
      h('time', { class: 'muted', datetime: at || '' }, at ? when(at) : 'now'),
      badge, h('span', { class: 'reason muted' }));
    if (clientBidId) row.dataset.clientBidId = clientBidId;
    row.setStatus = (next, reason) => {
      row.dataset.status = next;
      badge.className = `badge ${next}`;
      badge.textContent = next.replace('-', ' ');
      if (reason) row.querySelector('.reason').textContent = reason;
    };
    feed.prepend(row);
    while (feed.children.length > 100) feed.lastElementChild.remove();
    return row;
  }

  // Folds a newer state in; older answers (a lower version) change nothing.
  function adopt(next) {
    if (!auction || next.version <= auction.version) return false;
    auction = { ...auction, ...next };
    return true;
  }

  function onBid(ev) {
    if (!auction) { early.push(ev); return; }
    adopt({
      version: ev.version, endsAt: ev.endsAt, bidCount: auction.bidCount + 1,
      highestBid: { amountCents: ev.amountCents, bidderId: ev.bidderId, placedAt: ev.placedAt },
      minimumNextBidCents: ev.amountCents + auction.minIncrementCents,
    });
    if (ev.version > boardVersion) {
      boardVersion = ev.version;
      const entry = leaderboard.find((e) => e.bidderId === ev.bidderId);
      if (entry) { entry.amountCents = Math.max(entry.amountCents, ev.amountCents); entry.bidCount += 1; }
      else leaderboard.push({ bidderId: ev.bidderId, amountCents: ev.amountCents, bidCount: 1 });
      leaderboard.sort((a, b) => b.amountCents - a.amountCents);
      renderBoard();
    }
    // Our own bid coming back on the stream: the same row, confirmed, never a second one.
    // (A dealer's accepted bids have distinct amounts: each must beat the last.)
    let row = null;
    const own = me && ev.bidderId === me.sub
      ? mine.findIndex((p) => p.amount === ev.amountCents && p.status !== 'rolled-back') : -1;
    if (own >= 0) {
      row = mine[own].row;
      mine[own].status = 'confirmed';
      mine.splice(own, 1);
      row.setStatus('confirmed');
    } else {
      row = feedRow({ amount: ev.amountCents, bidder: ev.bidderId, status: 'confirmed', at: ev.placedAt });
      const recent = Date.now() - new Date(ev.placedAt).getTime() < 10_000;
      if (recent && (!me || ev.bidderId !== me.sub)) announce(`New bid: ${money(ev.amountCents)} by ${ev.bidderId}`);
    }
    row.dataset.position = String(ev.position);
    row.dataset.renderedAt = nowMs().toFixed(1);
    renderPrice();
  }

  async function placeBid(cents) {
    const clientBidId = bidId();
    const row = feedRow({ amount: cents, bidder: me.sub, status: 'pending', clientBidId });
    const entry = { amount: cents, row, status: 'pending' };
    mine.push(entry);
    rollback.set('');
    renderPrice();
    try {
      const data = await gql(PLACE_BID, { input: { auctionId: id, amountCents: cents, clientBidId } });
      const result = data.placeBid;
      adopt(result.auction);
      if (result.accepted) {
        entry.status = 'confirmed';
        row.setStatus('confirmed');
        announce(`Your bid of ${money(cents)} is confirmed`);
      } else {
        entry.status = 'rolled-back';
        row.setStatus('rolled-back', 'not the highest bid');
        rollback.set(`Your bid of ${money(cents)} was rolled back: it is not the highest bid.`);
      }
    } catch (err) {
      entry.status = 'rolled-back';
      const reason = REASONS[err.code] || err.message;
      row.setStatus('rolled-back', `${reason} (${err.code})`);
      row.dataset.reason = err.code;
      rollback.set(`Your bid of ${money(cents)} was rolled back: ${reason}. ${err.message} (${err.code})`);
      announce(`Bid rolled back: ${reason}`);
      // The refusal often means the state moved on (someone outbid us): fetch it.
      refresh();
    } finally {
      if (entry.status === 'rolled-back') mine.splice(mine.indexOf(entry), 1);
      renderPrice();
      if (auction) amount.value = (auction.minimumNextBidCents / 100).toFixed(2);
    }
  }

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const cents = Math.round(Number(amount.value) * 100);
    if (!Number.isFinite(cents) || cents <= 0) {
      rollback.set('Enter an amount in euros, e.g. 12500.00');
      return;
    }
    placeBid(cents);
  });

  async function refresh() {
    try {
      const data = await gql(AUCTION, { id });
      if (!data.auction) { errors.set(`There is no auction ${id}.`); return; }
      const fresh = data.auction;
      if (!auction || fresh.version >= auction.version) {
        const first = !auction;
        auction = fresh;
        leaderboard = fresh.leaderboard.map((e) => ({ ...e }));
        boardVersion = fresh.version;
        renderBoard();
        if (first) amount.value = (fresh.minimumNextBidCents / 100).toFixed(2);
      }
      early.splice(0).forEach(onBid);
      renderPrice();
    } catch (err) {
      errors.set(errorText(err));
    }
  }

  // The stream starts at the beginning of this auction's bids (after: 0) so the feed is the
  // whole history, then goes on live; on a reconnect it resumes after the last one seen.
  const stop = live(BIDS, { id, after: 0 }, 'bidPlaced', {
    onEvent: onBid,
    onError: (err) => errors.set(`Live bids stopped: ${errorText(err)}`),
  });
  refresh();
  const tick = setInterval(() => { if (auction) ends.textContent = countdown(auction.endsAt); }, 1000);
  return () => { stop(); clearInterval(tick); };
}
