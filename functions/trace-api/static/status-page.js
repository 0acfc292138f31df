// The status page's script: look up a LINE user's jobs (or one job by message id), follow
// the unfinished ones live with job-status.js, and refresh the list for new jobs.
// Everything from the API is put in the page with textContent, never as HTML.
import { followJob, getJob, isTerminal, JobTraceError, listUserJobs } from './job-status.js';

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
});

const initial = new URLSearchParams(location.search).get('q');
if (initial) {
  queryInput.value = initial;
  lookup(initial);
}
