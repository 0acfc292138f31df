// The status page's script: look up a LINE user's jobs (or one job by message id), follow
// the unfinished ones live with job-status.js, and refresh the list for new jobs; or, in
// the Operations view, the stalled jobs, recent failures and statistics across users.
// Everything from the API is put in the page with textContent, never as HTML.
import {
  followJob,
  getJob,
  getJobStats,
  isTerminal,
  JobTraceError,
  listJobs,
  listUserJobs,
} from './job-status.js';

/** Same origin: the page is served by trace-api itself. */
const API = '';
/**
 * Browsers allow 6 HTTP/1.1 connections per origin and every event stream holds one, so
 * only this many jobs are followed at once; the list refresh catches up on the others.
 */
const MAX_LIVE = 4;
const REFRESH_MS = 10_000;
const PAGE_SIZE = 50;
const TOKEN_KEY = 'jobtrace.token';
/** The Operations view polls: its lists span every user, too many jobs to stream. */
const OPS_REFRESH_MS = 5_000;
const OPS_PAGE_SIZE = 20;

const LABELS = {
  queued: 'Queued',
  processing: 'Processing',
  success: 'Succeeded',
  failed: 'Failed',
  not_found: 'Not found',
};

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const form = /** @type {HTMLFormElement} */ ($('lookup'));
const queryInput = /** @type {HTMLInputElement} */ ($('query'));
const tokenInput = /** @type {HTMLInputElement} */ ($('token'));
const tokenBox = /** @type {HTMLDetailsElement} */ ($('token-box'));
const notice = $('notice');
const results = $('results');
const title = $('results-title');
const meta = $('results-meta');
const list = $('jobs');
const empty = $('empty');
const opsSection = $('ops');
const stalledSelect = /** @type {HTMLSelectElement} */ ($('stalled-for'));

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
const timeOnly = new Intl.DateTimeFormat(undefined, { timeStyle: 'medium' });

/** What is shown now; a new lookup replaces it whole. */
let view = newView('', 'none');

function newView(query, mode) {
  return {
    query,
    /** @type {'user' | 'job' | 'none'} */
    mode,
    /** @type {Map<string, object>} message id → trace */
    jobs: new Map(),
    /** @type {Map<string, AbortController>} jobs followed live */
    live: new Map(),
    /** @type {Map<string, string>} message id → why live updates stopped */
    broken: new Map(),
    total: 0,
    refreshedAt: null,
    timer: 0,
    closed: false,
  };
}

function authHeaders() {
  const token = tokenInput.value.trim();
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function showNotice(text, isError = false) {
  notice.textContent = text;
  notice.classList.toggle('error', isError);
  notice.hidden = !text;
}

function explain(error) {
  if (error instanceof JobTraceError) {
    if (error.code === 'unauthorized') return 'trace-api wants a valid access token: enter one under “Access token”.';
    if (error.code === 'forbidden' && !opsSection.hidden) {
      return 'The Operations view needs the API token (API_AUTH=token); a LINE user’s token cannot see it.';
    }
    if (error.code === 'forbidden') return 'This token may not see that user’s jobs.';
    return error.message;
  }
  return String(error?.message ?? error);
}

/** Ends everything the current view runs: its streams and its refresh timer. */
function close(current) {
  current.closed = true;
  clearTimeout(current.timer);
  for (const controller of current.live.values()) controller.abort();
  current.live.clear();
}

async function lookup(query) {
  closeOps();
  close(view);
  const current = (view = newView(query, 'none'));
  showNotice('');
  history.replaceState(null, '', `?q=${encodeURIComponent(query)}`);
  list.replaceChildren();
  results.hidden = true;
  try {
    const page = await listUserJobs(API, query, { limit: PAGE_SIZE, includeHistory: true, headers: authHeaders() });
    if (current.closed) return;
    if (page.total_count > 0) {
      current.mode = 'user';
      merge(current, page.jobs, page.total_count);
      scheduleRefresh(current);
      return;
    }
  } catch (error) {
    if (current.closed) return;
    // 403 (another user's list under LINE auth) and 422 may still be a message id.
    if (!(error instanceof JobTraceError && (error.code === 'forbidden' || error.code === 'invalid'))) {
      showError(current, error);
      return;
    }
  }
  try {
    const job = await getJob(API, query, { includeHistory: true, headers: authHeaders() });
    if (current.closed) return;
    if (job) {
      current.mode = 'job';
      merge(current, [job], 1);
      return;
    }
  } catch (error) {
    if (!current.closed) showError(current, error);
    return;
  }
  // Nothing yet: a user whose first job is still on its way appears with the refresh.
  current.mode = 'user';
  merge(current, [], 0);
  scheduleRefresh(current);
}

function showError(current, error) {
  showNotice(explain(error), true);
  if (error instanceof JobTraceError && error.code === 'unauthorized') tokenBox.open = true;
  current.mode = 'none';
}

function scheduleRefresh(current) {
  clearTimeout(current.timer);
  current.timer = setTimeout(() => refresh(current), REFRESH_MS);
}

/** Picks up new jobs and catches up on the ones not followed live. */
async function refresh(current) {
  if (current.closed) return;
  if (document.hidden) {
    scheduleRefresh(current);
    return;
  }
  try {
    const page = await listUserJobs(API, current.query, { limit: PAGE_SIZE, includeHistory: true, headers: authHeaders() });
    if (current.closed) return;
    showNotice('');
    merge(current, page.jobs, page.total_count);
  } catch (error) {
    if (!current.closed) showNotice(`Could not refresh the list: ${explain(error)}`, true);
  }
  scheduleRefresh(current);
}

/** Takes in traces from the list or a stream, renders, and follows what is unfinished. */
function merge(current, traces, total) {
  for (const trace of traces) {
    const known = current.jobs.get(trace.message_id);
    // A list read older than what a stream already delivered must not move a job back.
    if (known && (known.updated_at ?? '') > (trace.updated_at ?? '')) continue;
    current.jobs.set(trace.message_id, trace);
  }
  current.total = Math.max(total, current.jobs.size);
  current.refreshedAt = new Date();
  render(current);
  followMore(current);
}

function followMore(current) {
  for (const trace of sorted(current)) {
    if (current.live.size >= MAX_LIVE) break;
    const id = trace.message_id;
    if (isTerminal(trace.status) || current.live.has(id) || current.broken.has(id)) continue;
    const controller = new AbortController();
    current.live.set(id, controller);
    followJob(API, id, {
      includeHistory: true,
      signal: controller.signal,
      headers: authHeaders,
      onTransport: (transport) => {
        const card = cardOf(id);
        if (card) setLive(card, transport);
      },
      onUpdate: (update) => {
        if (!current.closed) merge(current, [update], current.total);
      },
    })
      .catch((error) => {
        if (current.closed || controller.signal.aborted) return;
        current.broken.set(id, explain(error));
      })
      .finally(() => {
        if (current.closed) return;
        current.live.delete(id);
        render(current);
        followMore(current);
      });
  }
  renderMeta(current);
}

function sorted(current) {
  return [...current.jobs.values()].sort(
    (a, b) => (b.created_at ?? '').localeCompare(a.created_at ?? '') || a.message_id.localeCompare(b.message_id),
  );
}

function cardOf(id) {
  for (const card of list.children) {
    if (/** @type {HTMLElement} */ (card).dataset.messageId === id) return /** @type {HTMLElement} */ (card);
  }
  return null;
}

// ---- rendering ----

function render(current) {
  results.hidden = false;
  title.textContent = current.mode === 'job' ? `Job ${current.query}` : `Jobs of ${current.query}`;
  const traces = sorted(current);
  traces.forEach((trace, index) => {
    const card = cardOf(trace.message_id) ?? document.createElement('li');
    const signature = JSON.stringify(trace) + (current.broken.get(trace.message_id) ?? '');
    if (card.dataset.signature !== signature) fillCard(card, trace, current.broken.get(trace.message_id));
    card.dataset.signature = signature;
    setLive(card, current.live.has(trace.message_id) ? card.dataset.live || 'connecting' : '');
    if (list.children[index] !== card) list.insertBefore(card, list.children[index] ?? null);
  });
  empty.hidden = traces.length > 0;
  empty.textContent = traces.length ? '' : 'No jobs yet. New ones appear here by themselves.';
  renderMeta(current);
}

function renderMeta(current) {
  const parts = [];
  if (current.mode === 'user') parts.push(`${current.jobs.size} of ${current.total} shown`);
  if (current.live.size) parts.push(`${current.live.size} followed live`);
  if (current.refreshedAt) parts.push(`updated ${current.refreshedAt.toLocaleTimeString()}`);
  meta.textContent = parts.join(' · ');
}

function setLive(card, transport) {
  const badge = card.querySelector('.live');
  card.dataset.live = transport;
  if (!badge) return;
  badge.hidden = !transport;
  badge.textContent = transport === 'sse' ? 'live' : transport === 'poll' ? 'live (long-poll)' : 'connecting';
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function badge(status, small = false) {
  return el('span', `badge ${status}${small ? ' small' : ''}`, LABELS[status] ?? status);
}

function when(iso) {
  if (!iso) return null;
  const date = new Date(iso);
  // Today's times are the common case: the date would only be noise.
  const today = date.toDateString() === new Date().toDateString();
  const time = el('time', '', (today ? timeOnly : dateTime).format(date));
  time.dateTime = iso;
  time.title = iso;
  return time;
}

function duration(from, to) {
  if (!from || !to) return null;
  const seconds = Math.max(0, Math.round((Date.parse(to) - Date.parse(from)) / 1000));
  if (seconds < 60) return `${seconds} s`;
  const minutes = Math.floor(seconds / 60);
  return minutes < 60 ? `${minutes} min ${seconds % 60} s` : `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** The running attempt's progress: trace-api sends `progress` only while it is current. */
function progressBar(trace) {
  const progress = trace.progress;
  if (!progress || isTerminal(trace.status)) return null;
  const box = el('div', 'progress');
  const bar = /** @type {HTMLProgressElement} */ (el('progress'));
  // A total of 0 has nothing to count: show it as complete rather than as 0 of 0.
  bar.max = Math.max(progress.total, 1);
  bar.value = progress.total > 0 ? progress.done : 1;
  const percent = progress.total > 0 ? Math.floor((100 * progress.done) / progress.total) : 100;
  const label = el('span', 'progress-count', `${progress.done} / ${progress.total} (${percent} %)`);
  bar.setAttribute('aria-label', `Progress ${progress.done} of ${progress.total}`);
  box.append(bar, label);
  if (progress.note) box.append(el('span', 'progress-note', progress.note));
  return box;
}

function fillCard(card, trace, broken) {
  card.className = 'card job';
  card.dataset.messageId = trace.message_id;
  card.dataset.status = trace.status;

  const head = el('div', 'job-head');
  head.append(badge(trace.status), el('code', 'mid', trace.message_id));
  const live = el('span', 'live');
  live.hidden = true;
  head.append(live);

  const body = [head];
  if (trace.url && /^https?:\/\//i.test(trace.url)) {
    const link = el('a', 'target', trace.url);
    link.href = trace.url;
    link.target = '_blank';
    link.rel = 'noopener noreferrer';
    body.push(link);
  } else {
    body.push(el('p', 'what', trace.check_only ? 'Batch check of the user’s properties' : 'Property scrape'));
  }

  const times = el('dl', 'times');
  const rows = [
    ['Created', when(trace.created_at)],
    ['Started', when(trace.started_at)],
    ['Finished', when(trace.completed_at)],
    ['Took', duration(trace.started_at ?? trace.created_at, trace.completed_at)],
  ];
  for (const [label, value] of rows) {
    if (!value) continue;
    const row = el('div');
    const dd = el('dd');
    dd.append(value);
    row.append(el('dt', '', label), dd);
    times.append(row);
  }
  body.push(times);

  const bar = progressBar(trace);
  if (bar) body.push(bar);
  if (trace.error) body.push(el('p', 'error-text', trace.error));
  if (broken) body.push(el('p', 'stream-error', `Live updates stopped: ${broken}`));

  if (Array.isArray(trace.history) && trace.history.length) {
    const details = el('details', 'history');
    // A job that went wrong shows how it got there without a click.
    details.open = trace.status === 'failed' || trace.status === 'not_found';
    details.append(el('summary', '', `History (${trace.history.length})`));
    const steps = el('ol');
    for (const entry of trace.history) {
      const step = el('li');
      step.append(badge(entry.status, true), el('span', 'when', `attempt ${entry.attempt}`));
      const at = when(entry.at);
      if (at) step.append(at);
      if (entry.error) step.append(el('span', 'why', entry.error));
      steps.append(step);
    }
    details.append(steps);
    body.push(details);
  }
  card.replaceChildren(...body);
}

// ---- operations ----

let ops = { closed: true, timer: 0, signatures: new Map() };

function openOps() {
  close(view);
  view = newView('', 'none');
  results.hidden = true;
  showNotice('');
  history.replaceState(null, '', '?view=ops');
  closeOps();
  opsSection.hidden = false;
  ops = { closed: false, timer: 0, signatures: new Map() };
  refreshOps(ops);
}

function closeOps() {
  ops.closed = true;
  clearTimeout(ops.timer);
  opsSection.hidden = true;
}

/** The three reads at once, then again in a few seconds while the view is open. */
async function refreshOps(current) {
  clearTimeout(current.timer);
  if (current.closed) return;
  if (!document.hidden) {
    const headers = authHeaders();
    try {
      const [stats, stalled, failures] = await Promise.all([
        getJobStats(API, { headers }),
        listJobs(API, { stalledFor: Number(stalledSelect.value), includeHistory: true, limit: OPS_PAGE_SIZE, headers }),
        listJobs(API, { status: ['failed', 'not_found'], includeHistory: true, limit: OPS_PAGE_SIZE, headers }),
      ]);
      if (current.closed) return;
      showNotice('');
      renderStats(stats);
      renderOpsJobs(current, 'stalled', stalled, true);
      renderOpsJobs(current, 'failures', failures, false);
      $('ops-meta').textContent = `updated ${new Date().toLocaleTimeString()} · every ${OPS_REFRESH_MS / 1000} s`;
    } catch (error) {
      if (current.closed) return;
      showNotice(explain(error), true);
      if (error instanceof JobTraceError && error.code === 'unauthorized') tokenBox.open = true;
    }
  }
  current.timer = setTimeout(() => refreshOps(current), OPS_REFRESH_MS);
}

/** `counts` in `order` first (the lifecycle's), then any other name. */
function countRows(target, counts, label, order = []) {
  const names = [...order.filter((name) => name in counts), ...Object.keys(counts).filter((name) => !order.includes(name))];
  const rows = names.map((name) => [name, counts[name]]).map(([name, count]) => {
    const row = el('div');
    row.dataset.name = name;
    const dt = el('dt');
    dt.append(label(name));
    row.append(dt, el('dd', '', count));
    return row;
  });
  target.replaceChildren(...rows);
}

function seconds(ms) {
  if (ms === null || ms === undefined) return '–';
  return ms < 60_000 ? `${(ms / 1000).toFixed(1)} s` : duration(new Date(0).toISOString(), new Date(ms).toISOString());
}

function renderStats(stats) {
  $('stats-total').textContent = `${stats.jobs}${stats.truncated ? '+' : ''}`;
  countRows($('stats-status'), stats.by_status, (status) => badge(status, true), Object.keys(LABELS));
  countRows($('stats-types'), stats.by_job_type, (type) => el('span', 'type', type.replace('_', ' ')));
  const d = stats.durations;
  $('stats-durations').textContent = d.count
    ? `Created to finished: median ${seconds(d.median_ms)}, 95th percentile ${seconds(d.p95_ms)} (${d.count} finished jobs)`
    : 'No finished jobs in the window.';
  const errors = stats.top_errors.map(({ error, count }) => {
    const item = el('li');
    item.append(el('span', 'count', `${count} ×`), el('span', 'why', error));
    return item;
  });
  $('stats-errors').replaceChildren(...errors);
  if (!errors.length) $('stats-errors').append(el('li', 'none', 'None.'));
}

/** A list of jobs across users; cards are redrawn only when the page changed. */
function renderOpsJobs(current, name, page, stalled) {
  const target = $(name);
  const signature = JSON.stringify(page);
  $(`${name}-empty`).hidden = page.jobs.length > 0;
  $(`${name}-meta`).textContent = `${page.jobs.length} of ${page.total_count}`;
  if (current.signatures.get(name) === signature) return;
  current.signatures.set(name, signature);
  const now = new Date().toISOString();
  target.replaceChildren(
    ...page.jobs.map((trace) => {
      const card = el('li');
      fillCard(card, trace, undefined);
      const head = card.querySelector('.job-head');
      if (trace.line_user_id) head?.append(el('span', 'who', trace.line_user_id));
      if (stalled && trace.updated_at) head?.append(el('span', 'silent', `silent for ${duration(trace.updated_at, now)}`));
      return card;
    }),
  );
}

// ---- wiring ----

tokenInput.value = sessionStorage.getItem(TOKEN_KEY) ?? '';
if (tokenInput.value) tokenBox.open = true;
tokenInput.addEventListener('change', () => {
  const token = tokenInput.value.trim();
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
});

form.addEventListener('submit', (event) => {
  event.preventDefault();
  const query = queryInput.value.trim();
  if (query) lookup(query);
});

document.addEventListener('visibilitychange', () => {
  if (!document.hidden && view.mode === 'user' && !view.closed) refresh(view);
  if (!document.hidden && !ops.closed) refreshOps(ops);
});

$('nav-ops').addEventListener('click', (event) => {
  event.preventDefault();
  openOps();
});
$('nav-lookup').addEventListener('click', (event) => {
  event.preventDefault();
  closeOps();
  close(view);
  view = newView('', 'none');
  results.hidden = true;
  showNotice('');
  history.replaceState(null, '', '?');
  queryInput.focus();
});
stalledSelect.addEventListener('change', () => {
  if (!ops.closed) refreshOps(ops);
});

const params = new URLSearchParams(location.search);
const initial = params.get('q');
if (params.get('view') === 'ops') {
  openOps();
} else if (initial) {
  queryInput.value = initial;
  lookup(initial);
}
