// Follows a job on a live trace-api with job-status.js; driven by tests/tests/client_js.rs.
//
// Environment: API_BASE, SCENARIO (`follow` or `errors`), and for `follow`: MESSAGE_ID,
// TRANSPORT (auto|sse|poll), EXPECT (the statuses onUpdate must see, in order; a
// progress report as `processing done/total`),
// EXPECT_TRANSPORT (the transport of every update), BREAK_SSE=1 (a proxy that turns the
// event stream into an HTML page), TOKEN (sent as a bearer token).
//
// Prints one line per thing that happened (`start`, `transport sse connected`,
// `retry not_recorded`, `update processing`, `done success`) so that the Rust side can
// act on them, and exits non-zero on any failed assertion.
import assert from 'node:assert/strict';

import { followJob, getJob, isTerminal, JobTraceError, listUserJobs } from '../job-status.js';

const env = process.env;
const base = env.API_BASE;
assert.ok(base, 'API_BASE is required');
const say = (line) => process.stdout.write(`${line}\n`);
const list = (text) => (text ? text.split(',') : []);
const headers = env.TOKEN ? { Authorization: `Bearer ${env.TOKEN}` } : {};

/** A proxy that does not pass event streams: a 200 HTML page instead. */
async function proxyWithoutStreams(url, init) {
  if (String(url).includes('/events')) {
    return new Response('<html>buffered</html>', { status: 200, headers: { 'content-type': 'text/html' } });
  }
  return fetch(url, init);
}

async function follow() {
  const id = env.MESSAGE_ID;
  const expect = list(env.EXPECT);
  const seen = [];
  const transports = new Set();
  say('start');
  const final = await followJob(base, id, {
    transport: env.TRANSPORT ?? 'auto',
    includeHistory: true,
    wait: 20,
    headers,
    fetch: env.BREAK_SSE === '1' ? proxyWithoutStreams : undefined,
    onTransport: (transport, reason) => say(`transport ${transport} ${reason}`),
    onRetry: ({ reason }) => say(`retry ${reason}`),
    onUpdate: (trace, info) => {
      assert.equal(trace.message_id, id);
      // A progress report is an update of its own: `processing 3/9`.
      const progress = trace.progress ? ` ${trace.progress.done}/${trace.progress.total}` : '';
      seen.push(`${trace.status}${progress}`);
      transports.add(info.transport);
      say(`update ${trace.status}${progress}`);
    },
  });
  assert.deepEqual(seen, expect, 'every status once, in order');
  assert.equal(final.status, expect.at(-1));
  assert.ok(isTerminal(final.status));
  assert.deepEqual([...transports], [env.EXPECT_TRANSPORT]);
  assert.ok(Array.isArray(final.history), 'includeHistory asks for the history');
  assert.deepEqual(
    final.history.map((entry) => entry.status),
    expect.filter((update) => !update.includes(' ')),
    'the history holds the same status changes, and no progress',
  );
  if (final.status === 'failed') {
    assert.ok(final.error && final.error.length > 0, 'a failed job says why');
  } else {
    assert.equal(final.error, null);
  }
  say(`done ${final.status}`);
}

/** Every refusal rejects clearly and promptly; nothing hangs. */
async function errors() {
  const known = env.MESSAGE_ID;
  const user = env.LINE_USER;
  for (const transport of ['sse', 'poll', 'auto']) {
    // A job nobody records: a growing wait, then a clear error.
    const retries = [];
    const started = Date.now();
    const error = await followJob(base, `never recorded/${transport}?#`, {
      transport,
      headers,
      notFoundTimeout: 1500,
      onRetry: (info) => retries.push(info),
      onUpdate: () => assert.fail('nothing to update'),
    }).then(() => assert.fail('a job never recorded must not resolve'), (e) => e);
    assert.ok(error instanceof JobTraceError, String(error));
    assert.equal(error.code, 'not_recorded');
    assert.match(error.message, /was not recorded within 2 s/);
    assert.ok(retries.length >= 2 && retries.every((r) => r.reason === 'not_recorded'), JSON.stringify(retries));
    assert.ok(retries[1].delayMs > retries[0].delayMs, 'the wait grows');
    assert.ok(Date.now() - started < 5000, 'gives up after notFoundTimeout');
    say(`checked not_recorded ${transport}`);

    // Without the token: 401 at once, never retried.
    const unauthorized = await followJob(base, known, { transport, onRetry: () => assert.fail('a 401 is not retried') }).then(
      () => assert.fail('no access without the token'),
      (e) => e,
    );
    assert.ok(unauthorized instanceof JobTraceError, String(unauthorized));
    assert.equal(unauthorized.code, 'unauthorized');
    assert.equal(unauthorized.status, 401);
    assert.match(unauthorized.message, /answered 401/);
    say(`checked unauthorized ${transport}`);

    // Aborting stops following with the signal's reason.
    const controller = new AbortController();
    const following = followJob(base, known, { transport, headers, signal: controller.signal });
    setTimeout(() => controller.abort(new Error('user left the page')), 300);
    await assert.rejects(following, /user left the page/);
    say(`checked abort ${transport}`);
  }

  // Nothing listens: a network error after maxFailures attempts in a row; `auto` first
  // gives the stream that many, then long-poll as many again.
  const closed = `http://127.0.0.1:${env.CLOSED_PORT}`;
  for (const [transport, expected] of [['poll', 1], ['auto', 2]]) {
    const retries = [];
    const switches = [];
    const unreachable = await followJob(closed, known, {
      transport,
      maxFailures: 2,
      onRetry: (info) => retries.push(info.reason),
      onTransport: (to, reason) => switches.push(`${to}: ${reason}`),
    }).then(() => assert.fail('nothing listens'), (e) => e);
    assert.ok(unreachable instanceof JobTraceError, String(unreachable));
    assert.equal(unreachable.code, 'network');
    assert.match(unreachable.message, /^trace-api unreachable: /);
    assert.deepEqual(retries, Array(expected).fill('error'));
    if (transport === 'auto') {
      assert.equal(switches.length, 1, `${switches}`);
      assert.match(switches[0], /^poll: event stream unreachable: /);
    }
  }
  say('checked network');

  // The helpers: encoded ids, the list, and errors carrying the server's detail.
  const trace = await getJob(base, known, { headers, includeHistory: true });
  assert.equal(trace.message_id, known);
  assert.ok(Array.isArray(trace.history));
  assert.equal(await getJob(base, 'no such job/ü', { headers }), null);
  const page = await listUserJobs(base, user, { headers, limit: 10, status: ['queued', 'processing'] });
  assert.deepEqual(page.jobs.map((job) => job.message_id), [known]);
  assert.equal(page.total_count, 1);
  assert.equal(page.limit, 10);
  const invalid = await listUserJobs(base, user, { headers, limit: 1000 }).then(() => assert.fail('limit 1000'), (e) => e);
  assert.equal(invalid.code, 'invalid');
  assert.equal(invalid.status, 422);
  say('checked helpers');
  say('done errors');
}

const scenario = env.SCENARIO ?? 'follow';
try {
  await (scenario === 'errors' ? errors() : follow());
} catch (error) {
  console.error(error);
  process.exit(1);
}
