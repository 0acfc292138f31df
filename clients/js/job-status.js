// job-status.js: follow a scraping job's trace through trace-api until it finishes.
//
// A plain ES module without dependencies or a build step: copy it into a frontend, import
// it in a browser (`<script type="module">`) or in Node 20+. trace-api serves this very
// file at `/job-status.js`.
//
//   import { followJob } from './job-status.js';
//   const trace = await followJob('https://trace-api.example.run.app', messageId, {
//     onUpdate: (trace) => render(trace),
//     headers: { Authorization: `Bearer ${idToken}` },
//   });
//
// Server-sent events are read with `fetch` and a streaming parser rather than
// `EventSource`, because `EventSource` cannot send an `Authorization` header and Node has
// none. Where the stream cannot be had (a proxy that buffers or rewrites it, an old
// browser, repeated failures) the same updates come by long-poll with `If-None-Match`.
//
// MIT licensed, like the project it comes from.

/** The statuses after which a trace changes no more (unless a new attempt reopens it). */
export const TERMINAL_STATUSES = Object.freeze(['success', 'failed', 'not_found']);

/**
 * Whether `status` is final.
 * @param {string | undefined | null} status
 * @returns {boolean}
 */
export function isTerminal(status) {
  return TERMINAL_STATUSES.includes(/** @type {string} */ (status));
}

/**
 * @typedef {object} HistoryEntry
 * @property {number} attempt
 * @property {string} status
 * @property {string} at RFC 3339 UTC
 * @property {string | null} [error]
 */

/**
 * A job's trace, exactly as trace-api renders it.
 * @typedef {object} JobProgress
 * @property {number} done
 * @property {number} total
 * @property {string | null} note
 * @property {string} at RFC 3339 UTC, when the worker reported it
 */

/**
 * @typedef {object} JobTrace
 * @property {string | null} id
 * @property {string} message_id
 * @property {'queued' | 'processing' | 'success' | 'failed' | 'not_found'} status
 * @property {string | null} url
 * @property {string | null} line_user_id
 * @property {boolean | null} check_only
 * @property {string | null} created_at
 * @property {string | null} updated_at
 * @property {string | null} started_at
 * @property {string | null} completed_at
 * @property {string | null} error
 * @property {object | null} result
 * @property {JobProgress} [progress] only while the current attempt runs and has reported
 * @property {string | null} [job_type] with `includeHistory` only
 * @property {number | null} [attempt] with `includeHistory` only
 * @property {string | null} [expire_at] with `includeHistory` only
 * @property {HistoryEntry[]} [history] with `includeHistory` only
 */

/**
 * Why following a job or a request failed.
 *
 * `code` is one of:
 * - `unauthorized` (401) or `forbidden` (403): fix the credentials, retrying will not help;
 * - `invalid` (400, 422): the id or a parameter was refused;
 * - `not_recorded`: trace-api still had no trace of the job when `notFoundTimeout` ran out;
 * - `http`: another unexpected status, repeatedly;
 * - `network`: the API could not be reached, repeatedly;
 * - `protocol`: an answer that is not what trace-api sends.
 */
export class JobTraceError extends Error {
  /**
   * @param {string} message
   * @param {{ code: string, status?: number, detail?: unknown, messageId?: string, cause?: unknown }} info
   */
  constructor(message, { code, status, detail, messageId, cause }) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'JobTraceError';
    /** @type {string} */
    this.code = code;
    /** @type {number | undefined} HTTP status, when there was an answer */
    this.status = status;
    /** @type {unknown} the server's `detail` (or `error`) */
    this.detail = detail;
    /** @type {string | undefined} */
    this.messageId = messageId;
  }
}

/**
 * @typedef {object} FollowOptions
 * @property {(trace: JobTrace, info: { transport: 'sse' | 'poll' }) => void} [onUpdate]
 *   Called with each new state of the trace (the first one included), never twice with
 *   the same state.
 * @property {(transport: 'sse' | 'poll', reason: string) => void} [onTransport]
 *   Called when following starts or switches transport, e.g. to show "live" or to log
 *   why the stream was given up.
 * @property {(info: { reason: 'not_recorded' | 'error', delayMs: number, error?: Error }) => void} [onRetry]
 *   Called before each wait caused by a job not recorded yet or a transient failure.
 * @property {AbortSignal} [signal] Stops following; the promise rejects with the reason.
 * @property {Record<string, string> | (() => Record<string, string>)} [headers]
 *   Extra request headers, e.g. `{ Authorization: 'Bearer …' }`; a function is called
 *   for every request, so that a refreshed token is picked up.
 * @property {'auto' | 'sse' | 'poll'} [transport] `auto` (default): events, and long-poll
 *   when events are unavailable or keep failing.
 * @property {number} [wait] Long-poll hold in seconds (1–30, default 25).
 * @property {boolean} [includeHistory] Ask for `job_type`, `attempt`, `expire_at` and
 *   `history` too (default false).
 * @property {number} [notFoundTimeout] How long a job that trace-api does not know yet
 *   (404) is waited for, in ms (default 120000): the frontend may ask before the first
 *   Pub/Sub push is recorded.
 * @property {number} [maxFailures] Consecutive transient failures (network, 5xx) before
 *   giving up; in `auto`, the stream's failures before switching to long-poll (default 5).
 * @property {typeof fetch} [fetch] The fetch to use (default `globalThis.fetch`).
 */

const DEFAULT_WAIT_SECONDS = 25;
const DEFAULT_NOT_FOUND_TIMEOUT_MS = 120_000;
const DEFAULT_MAX_FAILURES = 5;
const FIRST_DELAY_MS = 500;
const MAX_DELAY_MS = 10_000;
/** After this many stream failures in a row, `auto` switches to long-poll. */
const SSE_FAILURES_BEFORE_FALLBACK = 3;

/**
 * Follows a job until its status is terminal (`success`, `failed` or `not_found`), and
 * resolves with that final trace.
 *
 * A job that trace-api does not know yet (404) is waited for, with a growing pause, for
 * `notFoundTimeout`. Refusals (401, 403, 400/422) reject at once; network errors and 5xx
 * are retried `maxFailures` times in a row before the promise rejects. Every rejection
 * is a {@link JobTraceError}, except an abort, which rejects with the signal's reason.
 *
 * @param {string} apiBase trace-api's origin, e.g. `https://…run.app` ('' for the page's own)
 * @param {string} messageId the Pub/Sub message id the API returned for the job
 * @param {FollowOptions} [options]
 * @returns {Promise<JobTrace>}
 */
export async function followJob(apiBase, messageId, options = {}) {
  if (typeof messageId !== 'string' || messageId.length === 0) {
    throw new TypeError('followJob: messageId must be a non-empty string');
  }
  const transport = options.transport ?? 'auto';
  if (!['auto', 'sse', 'poll'].includes(transport)) {
    throw new TypeError(`followJob: unknown transport ${JSON.stringify(transport)}`);
  }
  const state = new FollowState(apiBase, messageId, options);
  state.signal?.throwIfAborted();
  if (transport !== 'poll') {
    const outcome = await followEvents(state, transport === 'auto');
    if (outcome.done) return outcome.trace;
    options.onTransport?.('poll', outcome.reason);
  } else {
    options.onTransport?.('poll', 'requested');
  }
  return followPolling(state);
}

/** What both transports share: the last state seen, the deadlines and the callbacks. */
class FollowState {
  /**
   * @param {string} apiBase
   * @param {string} messageId
   * @param {FollowOptions} options
   */
  constructor(apiBase, messageId, options) {
    this.base = trimBase(apiBase);
    this.messageId = messageId;
    this.options = options;
    this.signal = options.signal;
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    const wait = options.wait ?? DEFAULT_WAIT_SECONDS;
    this.wait = Math.min(30, Math.max(1, Math.round(wait)));
    this.maxFailures = Math.max(1, options.maxFailures ?? DEFAULT_MAX_FAILURES);
    this.notFoundTimeout = options.notFoundTimeout ?? DEFAULT_NOT_FOUND_TIMEOUT_MS;
    /** @type {number | null} when the first 404 in a row was seen */
    this.notFoundSince = null;
    this.notFoundDelay = FIRST_DELAY_MS;
    /** @type {string | null} the ETag of the last state handed to onUpdate (= SSE id) */
    this.etag = null;
    /** @type {JobTrace | null} */
    this.trace = null;
  }

  /** @param {Record<string, string>} extra */
  headers(extra) {
    const given = this.options.headers;
    const base = typeof given === 'function' ? given() : given;
    return { ...(base ?? {}), ...extra };
  }

  /** @param {string} suffix */
  url(suffix) {
    const path = `${this.base}/api/v1/jobs/status/${encodeURIComponent(this.messageId)}${suffix}`;
    const query = new URLSearchParams();
    if (this.options.includeHistory) query.set('include', 'history');
    return { path, query };
  }

  /**
   * Hands a new state to onUpdate unless it was handed before.
   * @param {JobTrace} trace
   * @param {string | null} etag
   * @param {'sse' | 'poll'} transport
   */
  update(trace, etag, transport) {
    this.notFoundSince = null;
    this.notFoundDelay = FIRST_DELAY_MS;
    if (etag !== null && sameTag(etag, this.etag)) return;
    this.etag = etag;
    this.trace = trace;
    this.options.onUpdate?.(trace, { transport });
  }

  /** A 404: wait a little longer each time, until `notFoundTimeout` runs out. */
  async notRecorded() {
    const now = Date.now();
    this.notFoundSince ??= now;
    if (now - this.notFoundSince >= this.notFoundTimeout) {
      throw new JobTraceError(
        `job ${this.messageId} was not recorded within ${Math.round(this.notFoundTimeout / 1000)} s`,
        { code: 'not_recorded', status: 404, messageId: this.messageId },
      );
    }
    const delayMs = Math.min(this.notFoundDelay, this.notFoundTimeout - (now - this.notFoundSince));
    this.notFoundDelay = Math.min(this.notFoundDelay * 2, MAX_DELAY_MS);
    this.options.onRetry?.({ reason: 'not_recorded', delayMs });
    await sleep(delayMs, this.signal);
  }

  /**
   * A transient failure number `failures` in a row: wait, or give up past `maxFailures`.
   * @param {JobTraceError} error
   * @param {number} failures
   */
  async transient(error, failures) {
    if (failures >= this.maxFailures) throw error;
    const delayMs = backoff(failures);
    this.options.onRetry?.({ reason: 'error', delayMs, error });
    await sleep(delayMs, this.signal);
  }
}

/**
 * Follows by server-sent events. Returns `{done: true, trace}` at a terminal status, or
 * `{done: false, reason}` when `fallback` is allowed and events cannot be had.
 * @param {FollowState} state
 * @param {boolean} fallback
 * @returns {Promise<{ done: true, trace: JobTrace } | { done: false, reason: string }>}
 */
async function followEvents(state, fallback) {
  let failures = 0;
  let announced = false;
  const fallbackAfter = Math.min(SSE_FAILURES_BEFORE_FALLBACK, state.maxFailures);
  let retryMs = 2000;
  for (;;) {
    state.signal?.throwIfAborted();
    const { path, query } = state.url('/events');
    const extra = { Accept: 'text/event-stream' };
    if (state.etag !== null) extra['Last-Event-ID'] = state.etag;
    const { response, error: unreachable } = await send(state, withQuery(path, query), extra);
    if (unreachable) {
      failures += 1;
      if (fallback && failures >= fallbackAfter) {
        return { done: false, reason: `event stream unreachable: ${unreachable.message}` };
      }
      await state.transient(unreachable, failures);
      continue;
    }
    if (await notRecordedYet(state, response)) continue;
    if (response.status === 204) {
      // Our Last-Event-ID is the final state: the trace we already have is the answer.
      await discard(response);
      if (state.trace && isTerminal(state.trace.status)) return { done: true, trace: state.trace };
      return fallback ? { done: false, reason: 'unexpected 204' } : { done: true, trace: await fetchFinal(state) };
    }
    if (isRefusal(response.status)) throw await httpError(response, state.messageId);
    const type = response.headers.get('content-type') ?? '';
    const streamable = response.ok && type.startsWith('text/event-stream') && response.body?.getReader;
    if (!streamable) {
      const why = response.ok ? `content type ${JSON.stringify(type)}` : `HTTP ${response.status}`;
      // Something between us and trace-api does not pass the stream (or this runtime
      // cannot read one): long-poll goes through where a stream does not.
      if (fallback && (response.ok || !isRetryable(response.status) || failures + 1 >= fallbackAfter)) {
        await discard(response);
        return { done: false, reason: `event stream unavailable (${why})` };
      }
      let error;
      if (response.ok) {
        await discard(response);
        error = new JobTraceError(`event stream unavailable (${why})`, { code: 'protocol', status: response.status, messageId: state.messageId });
      } else {
        error = await httpError(response, state.messageId);
      }
      if (response.ok || !isRetryable(response.status)) throw error;
      failures += 1;
      await state.transient(error, failures);
      continue;
    }
    if (!announced) {
      state.options.onTransport?.('sse', 'connected');
      announced = true;
    }
    let received = false;
    // An exception of onUpdate is the caller's, not a broken stream: it must not be retried.
    let inCallback = false;
    try {
      for await (const event of readEvents(response.body, state.signal)) {
        if (event.retry !== undefined) retryMs = event.retry;
        if (event.event !== 'status') continue;
        let trace;
        try {
          trace = JSON.parse(event.data);
        } catch (cause) {
          throw new JobTraceError('an event of the stream is not JSON', { code: 'protocol', messageId: state.messageId, cause });
        }
        received = true;
        failures = 0;
        inCallback = true;
        state.update(trace, event.id ?? null, 'sse');
        inCallback = false;
        if (isTerminal(trace.status)) return { done: true, trace };
      }
    } catch (cause) {
      if (state.signal?.aborted) throw state.signal.reason;
      if (inCallback || cause instanceof JobTraceError) throw cause;
      failures += 1;
      const error = networkError(state.messageId, cause);
      if (fallback && failures >= fallbackAfter) {
        return { done: false, reason: `event stream keeps failing: ${error.message}` };
      }
      await state.transient(error, failures);
      continue;
    }
    // The server closes a stream after a few minutes (or when a proxy cuts it): reconnect
    // with Last-Event-ID, after the pause the server asked for. A stream that closes
    // without an event is a failure, or a buffering proxy would make this spin.
    if (!received) {
      failures += 1;
      const error = new JobTraceError('the event stream closed without an event', { code: 'protocol', messageId: state.messageId });
      if (fallback && failures >= fallbackAfter) {
        return { done: false, reason: error.message };
      }
      await state.transient(error, failures);
      continue;
    }
    await sleep(retryMs, state.signal);
  }
}

/**
 * Follows by long-poll: `?wait=N` with `If-None-Match`, answered 304 when nothing changed
 * in N seconds and 200 as soon as something did.
 * @param {FollowState} state
 * @returns {Promise<JobTrace>}
 */
async function followPolling(state) {
  let failures = 0;
  for (;;) {
    state.signal?.throwIfAborted();
    const { path, query } = state.url('');
    query.set('wait', String(state.wait));
    const extra = {};
    if (state.etag !== null) extra['If-None-Match'] = quoteTag(state.etag);
    const { response, error: unreachable } = await send(state, withQuery(path, query), extra);
    if (unreachable) {
      failures += 1;
      await state.transient(unreachable, failures);
      continue;
    }
    if (response.status === 304) {
      await discard(response);
      failures = 0;
      continue;
    }
    if (await notRecordedYet(state, response)) continue;
    if (!response.ok) {
      const error = await httpError(response, state.messageId);
      if (!isRetryable(response.status)) throw error;
      failures += 1;
      await state.transient(error, failures);
      continue;
    }
    const trace = await readJson(response, state.messageId);
    failures = 0;
    state.update(trace, response.headers.get('etag'), 'poll');
    if (isTerminal(trace.status)) return trace;
  }
}

/**
 * One request of a follow loop: the response, or the network error that kept it from
 * coming, for the loop to count (an abort is thrown, as everywhere).
 * @param {FollowState} state
 * @param {string} url
 * @param {Record<string, string>} extra headers
 * @returns {Promise<{ response: Response, error?: undefined } | { response?: undefined, error: JobTraceError }>}
 */
async function send(state, url, extra) {
  try {
    const response = await state.fetch(url, {
      headers: state.headers(extra),
      signal: state.signal,
      // With If-None-Match or Last-Event-ID set by hand, a browser passes the 304 or 204
      // through to us.
      cache: 'no-store',
    });
    return { response };
  } catch (cause) {
    if (state.signal?.aborted) throw state.signal.reason;
    return { error: networkError(state.messageId, cause) };
  }
}

/**
 * A 404 while following: the job message may not be recorded yet (events can arrive
 * first), so the loop waits as the options say and asks again.
 * @param {FollowState} state
 * @param {Response} response
 */
async function notRecordedYet(state, response) {
  if (response.status !== 404) return false;
  await discard(response);
  await state.notRecorded();
  return true;
}

/** After a 204 without a trace in hand: one plain read. */
async function fetchFinal(state) {
  const trace = await getJob(state.base, state.messageId, {
    headers: state.headers({}),
    signal: state.signal,
    includeHistory: state.options.includeHistory,
    fetch: state.fetch,
  });
  if (!trace) throw new JobTraceError(`job ${state.messageId} disappeared`, { code: 'not_recorded', status: 404, messageId: state.messageId });
  return trace;
}

/**
 * @typedef {object} RequestOptions
 * @property {Record<string, string>} [headers] e.g. `{ Authorization: 'Bearer …' }`
 * @property {AbortSignal} [signal]
 * @property {boolean} [includeHistory] add `job_type`, `attempt`, `expire_at`, `history`
 * @property {typeof fetch} [fetch]
 */

/**
 * One job's current trace, or `null` when trace-api has none (yet).
 * @param {string} apiBase
 * @param {string} messageId
 * @param {RequestOptions} [options]
 * @returns {Promise<JobTrace | null>}
 */
export async function getJob(apiBase, messageId, options = {}) {
  const query = new URLSearchParams();
  if (options.includeHistory) query.set('include', 'history');
  const url = withQuery(`${trimBase(apiBase)}/api/v1/jobs/status/${encodeURIComponent(messageId)}`, query);
  const response = await request(url, options, messageId);
  if (response.status === 404) {
    await discard(response);
    return null;
  }
  if (!response.ok) throw await httpError(response, messageId);
  return readJson(response, messageId);
}

/**
 * @typedef {object} JobList
 * @property {JobTrace[]} jobs newest first
 * @property {number} total_count all the user's jobs matching the filters
 * @property {number} limit
 * @property {number} skip
 */

/**
 * A page of a LINE user's jobs, newest first.
 * @param {string} apiBase
 * @param {string} lineUserId
 * @param {RequestOptions & { limit?: number, skip?: number, status?: string | string[], jobType?: 'property_scrape' | 'batch_check' }} [options]
 *   `status`: one or several of queued, processing, success, failed, not_found
 * @returns {Promise<JobList>}
 */
export async function listUserJobs(apiBase, lineUserId, options = {}) {
  const query = new URLSearchParams();
  if (options.limit !== undefined) query.set('limit', String(options.limit));
  if (options.skip !== undefined) query.set('skip', String(options.skip));
  if (options.status !== undefined) {
    query.set('status', Array.isArray(options.status) ? options.status.join(',') : options.status);
  }
  if (options.jobType !== undefined) query.set('job_type', options.jobType);
  if (options.includeHistory) query.set('include', 'history');
  const url = withQuery(`${trimBase(apiBase)}/api/v1/jobs/user/${encodeURIComponent(lineUserId)}`, query);
  const response = await request(url, options, undefined);
  if (!response.ok) throw await httpError(response, undefined);
  return readJson(response, undefined);
}

/**
 * A page of jobs across users (an operator view: with `API_AUTH=token` it needs the
 * token; every LINE user gets 403). With `stalledFor` (seconds): the jobs queued or
 * processing with nothing recorded for longer, oldest first; without: the most recently
 * changed first.
 * @param {string} apiBase
 * @param {RequestOptions & { stalledFor?: number, limit?: number, skip?: number, status?: string | string[], jobType?: 'property_scrape' | 'batch_check' }} [options]
 * @returns {Promise<JobList>}
 */
export async function listJobs(apiBase, options = {}) {
  const query = new URLSearchParams();
  if (options.stalledFor !== undefined) query.set('stalled_for', String(options.stalledFor));
  if (options.limit !== undefined) query.set('limit', String(options.limit));
  if (options.skip !== undefined) query.set('skip', String(options.skip));
  if (options.status !== undefined) {
    query.set('status', Array.isArray(options.status) ? options.status.join(',') : options.status);
  }
  if (options.jobType !== undefined) query.set('job_type', options.jobType);
  if (options.includeHistory) query.set('include', 'history');
  const response = await request(withQuery(`${trimBase(apiBase)}/api/v1/jobs`, query), options, undefined);
  if (!response.ok) throw await httpError(response, undefined);
  return readJson(response, undefined);
}

/**
 * @typedef {object} JobStats
 * @property {number} window seconds
 * @property {string} since
 * @property {number} jobs how many jobs the figures are of
 * @property {boolean} truncated the window held more jobs than were read
 * @property {Record<string, number>} by_status
 * @property {Record<string, number>} by_job_type
 * @property {{ error: string, count: number }[]} top_errors
 * @property {{ count: number, median_ms: number | null, p95_ms: number | null }} durations
 */

/**
 * The statistics of the jobs created in the last `window` seconds (an operator view).
 * @param {string} apiBase
 * @param {RequestOptions & { window?: number }} [options]
 * @returns {Promise<JobStats>}
 */
export async function getJobStats(apiBase, options = {}) {
  const query = new URLSearchParams();
  if (options.window !== undefined) query.set('window', String(options.window));
  const response = await request(withQuery(`${trimBase(apiBase)}/api/v1/jobs/stats`, query), options, undefined);
  if (!response.ok) throw await httpError(response, undefined);
  return readJson(response, undefined);
}

/**
 * @param {string} url
 * @param {RequestOptions} options
 * @param {string | undefined} messageId
 */
async function request(url, options, messageId) {
  const fetcher = options.fetch ?? globalThis.fetch.bind(globalThis);
  try {
    return await fetcher(url, { headers: { ...(options.headers ?? {}) }, signal: options.signal, cache: 'no-store' });
  } catch (cause) {
    if (options.signal?.aborted) throw options.signal.reason;
    throw networkError(messageId, cause);
  }
}

/**
 * One server-sent event.
 * @typedef {object} ServerSentEvent
 * @property {string} event `message` when the block named none
 * @property {string} data data lines joined with `\n`
 * @property {string | undefined} id the last event id in force
 * @property {number | undefined} retry reconnection delay the server asked for, in ms
 */

/**
 * Parses an `text/event-stream` body as the HTML standard says (any of CRLF, LF, CR
 * ends a line, `data` lines join with LF, comments skipped, `id` sticks until changed),
 * however the bytes are split into chunks.
 * @param {ReadableStream<Uint8Array>} body
 * @param {AbortSignal} [signal]
 * @returns {AsyncGenerator<ServerSentEvent>}
 */
export async function* readEvents(body, signal) {
  const reader = body.getReader();
  const decoder = new TextDecoder('utf-8');
  const parser = new EventParser();
  const onAbort = () => reader.cancel().catch(() => {});
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      const { value, done } = await reader.read();
      const text = done ? decoder.decode() : decoder.decode(value, { stream: true });
      yield* parser.push(text);
      if (done) return;
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
    // Ending early (a terminal status) must release the connection.
    reader.cancel().catch(() => {});
  }
}

/** The line-level state machine of an event stream. */
export class EventParser {
  constructor() {
    this.buffer = '';
    this.first = true;
    this.pendingCR = false;
    this.reset();
    /** @type {string | undefined} */
    this.lastId = undefined;
  }

  reset() {
    this.eventType = '';
    /** @type {string[]} */
    this.data = [];
    this.hasData = false;
    /** @type {number | undefined} */
    this.retry = undefined;
  }

  /**
   * Feeds decoded text; returns the events it completes.
   * @param {string} text
   * @returns {ServerSentEvent[]}
   */
  push(text) {
    if (this.first && text.length > 0) {
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1);
      this.first = false;
    }
    // A CR that ended the previous chunk already ended its line; an LF right after it
    // belongs to that CRLF.
    if (this.pendingCR && text.startsWith('\n')) text = text.slice(1);
    this.pendingCR = false;
    this.buffer += text;
    /** @type {ServerSentEvent[]} */
    const events = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (c !== '\n' && c !== '\r') continue;
      const line = this.buffer.slice(start, i);
      if (c === '\r') {
        if (i + 1 < this.buffer.length) {
          if (this.buffer[i + 1] === '\n') i++;
        } else {
          this.pendingCR = true;
        }
      }
      start = i + 1;
      const event = this.line(line);
      if (event) events.push(event);
    }
    this.buffer = this.buffer.slice(start);
    return events;
  }

  /** @param {string} line */
  line(line) {
    if (line === '') {
      const retry = this.retry;
      if (!this.hasData) {
        this.reset();
        return retry === undefined ? null : { event: '', data: '', id: this.lastId, retry };
      }
      const event = { event: this.eventType || 'message', data: this.data.join('\n'), id: this.lastId, retry };
      this.reset();
      return event;
    }
    if (line.startsWith(':')) return null;
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    switch (field) {
      case 'event':
        this.eventType = value;
        break;
      case 'data':
        this.data.push(value);
        this.hasData = true;
        break;
      case 'id':
        if (!value.includes('\0')) this.lastId = value;
        break;
      case 'retry':
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
      default:
        break;
    }
    return null;
  }
}

// ---- small helpers ----

/** @param {string} apiBase */
function trimBase(apiBase) {
  return String(apiBase ?? '').replace(/\/+$/, '');
}

/** @param {string} path @param {URLSearchParams} query */
function withQuery(path, query) {
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** 401, 403, 400 and 422 will not change by retrying. */
function isRefusal(status) {
  return status === 400 || status === 401 || status === 403 || status === 422;
}

/** Worth another try: rate limits and server or gateway faults. */
function isRetryable(status) {
  return status === 408 || status === 429 || status >= 500;
}

/** The event id and the ETag are the same tag; quotes may or may not survive proxies. */
function sameTag(a, b) {
  if (a === null || b === null) return false;
  return unquote(a) === unquote(b);
}

function unquote(tag) {
  return tag.replace(/^W\//, '').replace(/^"|"$/g, '');
}

function quoteTag(tag) {
  return tag.startsWith('"') || tag.startsWith('W/') ? tag : `"${tag}"`;
}

/** 0.5 s, 1 s, 2 s, … at most 10 s, with jitter so that many tabs do not retry in step. */
function backoff(failures) {
  const base = Math.min(FIRST_DELAY_MS * 2 ** (failures - 1), MAX_DELAY_MS);
  return Math.round(base * (0.75 + Math.random() * 0.5));
}

/**
 * @param {number} ms
 * @param {AbortSignal} [signal]
 */
function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(signal.reason);
      return;
    }
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve(undefined);
    }, ms);
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** Frees the connection of an answer whose body we do not need. */
async function discard(response) {
  try {
    await response.body?.cancel();
  } catch {
    // Nothing to free.
  }
}

/** @param {string | undefined} messageId @param {unknown} cause */
function networkError(messageId, cause) {
  const reason = cause instanceof Error ? cause.message : String(cause);
  return new JobTraceError(`trace-api unreachable: ${reason}`, { code: 'network', messageId, cause });
}

/**
 * An error answer as a JobTraceError, with the server's `detail` (FastAPI style) or
 * `error` (standalone style) in its message.
 * @param {Response} response
 * @param {string | undefined} messageId
 */
async function httpError(response, messageId) {
  let detail;
  try {
    const body = await response.json();
    detail = body?.detail ?? body?.error ?? body;
  } catch {
    detail = undefined;
  }
  const code =
    response.status === 401 ? 'unauthorized'
      : response.status === 403 ? 'forbidden'
        : response.status === 400 || response.status === 422 ? 'invalid'
          : 'http';
  const said = typeof detail === 'string' ? detail : Array.isArray(detail) ? detail.map((d) => d?.msg ?? JSON.stringify(d)).join('; ') : '';
  const what = messageId === undefined ? 'trace-api' : `trace-api (job ${messageId})`;
  return new JobTraceError(`${what} answered ${response.status}${said ? `: ${said}` : ''}`, {
    code,
    status: response.status,
    detail,
    messageId,
  });
}

/** @param {Response} response @param {string | undefined} messageId */
async function readJson(response, messageId) {
  try {
    return await response.json();
  } catch (cause) {
    throw new JobTraceError('trace-api answered with a body that is not JSON', { code: 'protocol', status: response.status, messageId, cause });
  }
}
