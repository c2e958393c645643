// The live status page. It polls /api/v1/status for counters and follows
// /api/v1/events for state changes, so a backend going down shows at once. The event
// stream is read with fetch rather than EventSource because EventSource cannot send
// the bearer token that `admin.authReads` requires.
'use strict';

const POLL_MS = 2000;
// The server pings at least every second; three missed pings mean the stream is dead.
const SILENCE_MS = 3500;

const view = {
  status: null,
  /** pool/backend -> { requests, time } from the previous poll, for request rates. */
  previous: new Map(),
  rates: new Map(),
  /** pool/backend keys whose state just changed, to flash once. */
  changed: new Set(),
  pollTimer: 0,
  polling: false,
  /** Poll again soon: events came in while a poll was under way. */
  again: false,
  /** Counts state events, so a poll answer older than an event is not shown over it. */
  eventSeq: 0,
};

const $ = (id) => document.getElementById(id);
const key = (pool, backend) => `${pool}/${backend}`;

function token() {
  return sessionStorage.getItem('tandem-token') || '';
}

function authHeaders() {
  const t = token();
  return t ? { authorization: `Bearer ${t}` } : {};
}

function say(text) {
  $('message').textContent = text;
}

function showTokenForm() {
  $('token-form').hidden = false;
  $('token').focus();
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') node.className = v;
    else if (k.startsWith('data-')) node.setAttribute(k, v);
    else node[k] = v;
  }
  for (const c of children) node.append(c instanceof Node ? c : String(c));
  return node;
}

function ago(ms) {
  const s = Math.max(0, Math.round((Date.now() - ms) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

/** 42s, 3m12s, 5h07m, 2d03h. */
function span(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(s / 86400)}d${String(Math.floor((s % 86400) / 3600)).padStart(2, '0')}h`;
}

// What the State cell says: `unchecked` is up but verified by no active health check
// (HAProxy's "no check"); `failing` is up, but most recent requests failed.
const SHOWN_TEXT = { unchecked: 'up (no check)' };

function shownOf(b) {
  return b.shown || b.state;
}

function weightCell(b) {
  if (b.runtimeWeight === null || b.runtimeWeight === undefined) return el('td', { class: 'num' }, b.weight);
  return el('td', { class: 'num runtime-weight', title: `set at runtime; the config says ${b.weight}; the next reload goes back to it` },
    `${b.runtimeWeight} (runtime; config ${b.weight})`);
}

function checkCell(check) {
  if (!check) return el('td', {}, '—');
  const verdict = check.ok ? 'ok' : `fail${check.detail ? `: ${check.detail}` : ''}`;
  return el('td', { class: check.ok ? 'check' : 'check check-fail', title: new Date(check.time).toISOString() },
    `${verdict}, ${Math.round(check.latencyMs)} ms, ${ago(check.time)}`);
}

function actionButton(pool, backend, action) {
  return el('button', { type: 'button', onclick: () => act(pool, backend, action) }, action);
}

function backendRow(pool, b) {
  const k = key(pool.name, b.name);
  const rate = view.rates.get(k);
  const shown = shownOf(b);
  const since = b.stateSince ? view.status.time - b.stateSince : null;
  const recent = b.recentRequests ? ` · ${b.recentFailures} of ${b.recentRequests} recent requests failed` : '';
  const row = el('tr', {
    class: `state-${shown}${b.backup ? ' backup' : ''}${view.changed.has(k) ? ' changed' : ''}`,
    'data-pool': pool.name,
    'data-backend': b.name,
    'data-state': b.state,
    'data-shown': shown,
  },
  el('td', { title: b.url }, b.name),
  el('td', {}, b.url),
  el('td', { class: 'state', title: `state ${b.state}${recent}` }, SHOWN_TEXT[shown] || shown),
  el('td', { class: 'num since', title: b.stateSince ? new Date(b.stateSince).toISOString() : '' }, since === null ? '—' : span(since)),
  el('td', { class: 'num downtime' }, b.downtimeMs === undefined ? '—' : span(b.downtimeMs)),
  weightCell(b),
  el('td', { class: 'num' }, b.effectiveWeight),
  el('td', { class: 'num' }, b.active),
  el('td', { class: 'num' }, rate === undefined ? '—' : rate.toFixed(1)),
  el('td', { class: 'num' }, b.requests),
  el('td', { class: 'num' }, b.failures),
  el('td', { class: 'num' }, `${b.checksOk}/${b.checksFailed}`),
  checkCell(b.lastCheck),
  el('td', { class: 'actions' },
    actionButton(pool.name, b.name, 'drain'),
    actionButton(pool.name, b.name, 'disable'),
    actionButton(pool.name, b.name, 'enable')));
  return row;
}

function poolTable(pool) {
  const shown = pool.backends.map(shownOf);
  const up = shown.filter((x) => x === 'up' || x === 'unchecked').length;
  const failing = shown.filter((x) => x === 'failing').length;
  const caption = el('caption', { class: pool.available && up > 0 ? '' : 'unavailable' }, pool.name,
    el('span', { class: 'meta' }, `${pool.balance} · ${up}/${pool.backends.length} up${failing ? ` · ${failing} failing` : ''} · ${pool.active} active`
      + `${pool.healthChecks === false ? ' · no health checks' : ''}${pool.available ? '' : ' · NO AVAILABLE BACKEND'}`));
  const head = el('thead', {}, el('tr', {},
    el('th', {}, 'Backend'), el('th', {}, 'URL'), el('th', {}, 'State'),
    el('th', { class: 'num', title: 'time in this state' }, 'Since'), el('th', { class: 'num', title: 'time unhealthy or ejected' }, 'Downtime'),
    el('th', { class: 'num' }, 'Weight'), el('th', { class: 'num' }, 'Eff. weight'),
    el('th', { class: 'num' }, 'Active'), el('th', { class: 'num' }, 'Req/s'),
    el('th', { class: 'num' }, 'Requests'), el('th', { class: 'num' }, 'Errors'),
    el('th', { class: 'num' }, 'Checks ok/fail'), el('th', {}, 'Last check'), el('th', {}, '')));
  const body = el('tbody', {}, ...pool.backends.map((b) => backendRow(pool, b)));
  return el('table', { class: 'grid pool', 'data-pool': pool.name }, caption, head, body);
}

function vipRow(v) {
  const lease = v.leaseRemainingMs > 0 ? `${(v.leaseRemainingMs / 1000).toFixed(1)} s` : '—';
  return el('tr', { class: `vip-${v.state}`, 'data-vip': v.name, 'data-state': v.state },
    el('td', {}, v.name), el('td', {}, v.address), el('td', {}, v.interface),
    el('td', { class: 'state' }, v.state), el('td', {}, v.holder ?? '—'),
    el('td', { class: 'num' }, v.epoch), el('td', { class: 'num' }, lease),
    el('td', { class: 'actions' }, el('button', { type: 'button', onclick: () => release(v.name) }, 'release')));
}

function render() {
  const s = view.status;
  if (!s) return;
  $('node').textContent = s.node ? `node ${s.node}` : '';
  $('updated').textContent = `updated ${new Date(s.time).toLocaleTimeString()}`;
  $('vips-section').hidden = s.vips.length === 0;
  $('vips').tBodies[0].replaceChildren(...s.vips.map(vipRow));
  $('listeners').tBodies[0].replaceChildren(...s.listeners.map((l) =>
    el('tr', { class: l.bound ? 'state-up' : 'state-down', 'data-listener': l.name },
      el('td', {}, l.name), el('td', {}, l.address), el('td', {}, l.bound ? 'yes' : 'no'),
      el('td', { class: 'num' }, l.connections))));
  $('pools').replaceChildren(...s.pools.map(poolTable));
  view.changed.clear();
}

function updateRates(status) {
  for (const pool of status.pools) {
    for (const b of pool.backends) {
      const k = key(pool.name, b.name);
      const prev = view.previous.get(k);
      if (prev && status.time > prev.time) {
        view.rates.set(k, Math.max(0, (b.requests - prev.requests) * 1000 / (status.time - prev.time)));
      }
      view.previous.set(k, { requests: b.requests, time: status.time });
    }
  }
}

async function poll() {
  view.polling = true;
  const seq = view.eventSeq;
  try {
    const res = await fetch('/api/v1/status', { headers: authHeaders(), cache: 'no-store' });
    if (res.status === 401) {
      say('This instance needs the admin token to show its status.');
      showTokenForm();
    } else if (!res.ok) {
      say(`status: HTTP ${res.status}`);
    } else {
      const status = await res.json();
      // An event that arrived while this answer was on its way may be newer than it:
      // keep the event's view and ask again instead.
      if (seq !== view.eventSeq) {
        view.again = true;
      } else {
        updateRates(status);
        view.status = status;
        render();
      }
    }
  } catch (err) {
    say(`status: ${err.message}`);
  }
  view.polling = false;
  clearTimeout(view.pollTimer);
  view.pollTimer = setTimeout(poll, view.again ? 200 : POLL_MS);
  view.again = false;
}

/** Polls shortly after a state change, for the counters and check results that came with it. */
function refreshSoon() {
  if (view.polling) {
    view.again = true;
    return;
  }
  clearTimeout(view.pollTimer);
  view.pollTimer = setTimeout(poll, 200);
}

// Events that repeat a state (slow start steps the weight many times a second, and
// every reconnect starts with a snapshot) change nothing here.
function applyBackendEvent(e) {
  const pool = view.status?.pools.find((p) => p.name === e.pool);
  const b = pool?.backends.find((x) => x.name === e.backend);
  if (!b) return;
  if (e.weight !== undefined && e.reason !== 'current state') {
    // An operator's weight, or a reload taking it back: the next poll shows it.
    refreshSoon();
  }
  if (b.state === e.state) return;
  view.eventSeq++;
  view.changed.add(key(e.pool, e.backend));
  b.state = e.state;
  // Until the poll this triggers: what the new state shows without the recent counts.
  b.shown = e.state === 'up' && pool.healthChecks === false ? 'unchecked' : e.state;
  b.stateSince = Date.now();
  pool.available = pool.backends.some((x) => x.state === 'up');
  render();
  refreshSoon();
}

function applyVipEvent(e) {
  const v = view.status?.vips.find((x) => x.name === e.vip);
  if (!v || (v.state === e.state && v.holder === e.holder && v.epoch === e.epoch)) return;
  view.eventSeq++;
  Object.assign(v, { state: e.state, holder: e.holder, epoch: e.epoch, leaseRemainingMs: e.leaseRemaining });
  render();
}

function dispatch(type, data) {
  if (type === 'backend') applyBackendEvent(JSON.parse(data));
  else if (type === 'vip') applyVipEvent(JSON.parse(data));
  else if (type === 'reload') {
    const e = JSON.parse(data);
    say(e.result === 'success' ? 'config reloaded' : `reload failed: ${e.errors.join('; ')}`);
    refreshSoon();
  }
}

function setLive(on, text) {
  const live = $('live');
  live.className = `live ${on ? 'on' : 'off'}`;
  live.textContent = text;
}

/** Follows the event stream for ever, resuming with Last-Event-ID after a break. */
async function follow() {
  let lastId = null;
  for (;;) {
    const abort = new AbortController();
    let watchdog = setTimeout(() => abort.abort(), SILENCE_MS);
    try {
      const headers = authHeaders();
      if (lastId !== null) headers['last-event-id'] = lastId;
      const res = await fetch('/api/v1/events', { headers, cache: 'no-store', signal: abort.signal });
      if (res.status === 401) {
        setLive(false, 'token needed');
        showTokenForm();
      } else if (res.ok && res.body) {
        setLive(true, 'live');
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          clearTimeout(watchdog);
          watchdog = setTimeout(() => abort.abort(), SILENCE_MS);
          buffer += value;
          let end;
          while ((end = buffer.indexOf('\n\n')) >= 0) {
            const block = buffer.slice(0, end);
            buffer = buffer.slice(end + 2);
            let type = 'message';
            let data = '';
            for (const line of block.split('\n')) {
              const colon = line.indexOf(':');
              const field = colon < 0 ? line : line.slice(0, colon);
              const value2 = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
              if (field === 'id') lastId = value2;
              else if (field === 'event') type = value2;
              else if (field === 'data') data += data ? `\n${value2}` : value2;
            }
            if (data) dispatch(type, data);
          }
        }
      }
    } catch {
      // Network error or the watchdog fired: reconnect below.
    }
    clearTimeout(watchdog);
    setLive(false, 'reconnecting');
    await new Promise((r) => setTimeout(r, 1000));
  }
}

async function post(path, what) {
  // Without a token the admin API takes changes only as JSON (no form can send that).
  const res = await fetch(path, { method: 'POST', headers: { ...authHeaders(), 'content-type': 'application/json' }, body: '{}' });
  if (res.status === 401) {
    say(`${what}: the admin token is missing or wrong.`);
    showTokenForm();
    return;
  }
  const body = await res.json().catch(() => ({}));
  say(res.ok ? `${what}: done` : `${what}: ${body.message || `HTTP ${res.status}`}`);
}

function act(pool, backend, action) {
  return post(`/api/v1/pools/${encodeURIComponent(pool)}/backends/${encodeURIComponent(backend)}/${action}`, `${action} ${pool}/${backend}`);
}

function release(vip) {
  return post(`/api/v1/vips/${encodeURIComponent(vip)}/release`, `release ${vip}`);
}

function start() {
  // `/status#token=…` hands the page a token without putting it in server logs.
  const m = /^#token=(.+)$/.exec(location.hash);
  if (m) {
    sessionStorage.setItem('tandem-token', decodeURIComponent(m[1]));
    history.replaceState(null, '', location.pathname);
  }
  $('token-toggle').onclick = () => { $('token-form').hidden = !$('token-form').hidden; };
  $('token-form').onsubmit = (ev) => {
    ev.preventDefault();
    sessionStorage.setItem('tandem-token', $('token').value);
    $('token-form').hidden = true;
    say('token saved for this tab');
  };
  poll();
  follow();
}

start();
