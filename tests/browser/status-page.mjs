// Drives trace-api's status page in Debian's headless Chromium; run by
// tests/tests/status_page.rs, which starts trace-api and trace-writer on a real database.
//
// Environment: PAGE_URL (trace-api), WRITER_URL (trace-writer), LINE_USER, JOBS (the
// message ids of the user's processing jobs, comma-separated), PUSHES (a JSON object:
// message id → the Pub/Sub push body of its terminal status event), EXPECT (message id
// → the status that push leads to), PROGRESS (message id → `{push, count, note}`: the
// push of a progress report and what its bar must say), SCREENSHOT (where to save the
// picture), CHROMIUM.
//
// It looks the user up, sees the jobs processing and followed live, publishes progress
// reports and then the status events through trace-writer, and sees each job's bar and
// then its change without a reload. Prints
// `ok <what>` lines; any failed check exits non-zero.
//
// With VIEW=operations it checks the Operations view instead: STALLED (the id of a job
// stalled for hours) and STALLED_USER, FAILED and FAILED_ERROR (a failed job of another
// user), COUNTS (status → how many jobs the statistics count), and PUSH (the push of the
// stalled job's late success): the view shows the stalled job with its user, the failure
// with its error and history, the counts, and then, without a reload, the stalled job
// gone and the success counted. SCREENSHOT_STALLED, when set, is where to save the view
// before that success.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';

import { chromium } from 'playwright-core';

const env = process.env;
const say = (line) => process.stdout.write(`${line}\n`);

const profile = mkdtempSync(join(tmpdir(), 'jobtrace-chromium-'));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: env.CHROMIUM ?? '/usr/bin/chromium',
  headless: true,
  args: [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-quic',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
  ],
  viewport: { width: 1000, height: 900 },
  deviceScaleFactor: 1,
  colorScheme: 'light',
  locale: 'en-US',
  timezoneId: 'UTC',
});

let failed = false;
try {
  const page = context.pages()[0] ?? (await context.newPage());
  const problems = [];
  page.on('pageerror', (error) => problems.push(`page error: ${error.message}`));
  page.on('console', (message) => {
    // A CSP violation is reported as a console error: it must not happen.
    if (message.type() === 'error') problems.push(`console: ${message.text()}`);
  });
  const documents = [];
  page.on('request', (request) => {
    if (request.resourceType() === 'document') documents.push(request.url());
  });
  const failedRequests = [];
  page.on('requestfailed', (request) => {
    // Streams closed by the page itself (a finished job) end as aborted requests.
    if (!request.url().includes('/events')) failedRequests.push(`${request.url()} ${request.failure()?.errorText}`);
  });

  const response = await page.goto(env.PAGE_URL, { waitUntil: 'load' });
  assert.equal(response.status(), 200);
  assert.match(response.headers()['content-security-policy'] ?? '', /default-src 'self'/);
  assert.equal(await page.title(), 'Job status · job trace');
  say('ok loaded');

  // Proof against a reload: a value that only this document has.
  await page.evaluate(() => {
    window.__sameDocument = 'still here';
  });

  if (env.VIEW === 'operations') await operationsView(page);
  else await userView(page);

  assert.equal(await page.evaluate(() => window.__sameDocument), 'still here', 'the page was reloaded');
  assert.deepEqual(documents, [env.PAGE_URL], 'exactly one document request');
  say('ok no navigation');

  assert.deepEqual(problems, [], 'no page errors, console errors or CSP violations');
  assert.deepEqual(failedRequests, [], 'no failed requests');
  say('ok no errors');

  mkdirSync(dirname(env.SCREENSHOT), { recursive: true });
  await page.screenshot({ path: env.SCREENSHOT, fullPage: true });
  say(`ok screenshot ${env.SCREENSHOT}`);
} catch (error) {
  failed = true;
  console.error(error);
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);

/** Posts a Pub/Sub push body to trace-writer, as Pub/Sub would. */
async function publish(push) {
  const answer = await fetch(env.WRITER_URL, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(push),
  });
  assert.ok(answer.ok, `trace-writer answered ${answer.status}: ${await answer.text()}`);
}

/** The Operations view: stalled jobs, failures and statistics across users, live. */
async function operationsView(page) {
  await page.click('#nav-ops');
  const stalled = page.locator(`#stalled li.job[data-message-id="${env.STALLED}"]`);
  const failure = page.locator(`#failures li.job[data-message-id="${env.FAILED}"]`);
  await stalled.waitFor({ timeout: 10_000 });
  await failure.waitFor({ timeout: 10_000 });
  assert.equal(new URL(page.url()).searchParams.get('view'), 'ops', 'the view is in the address');
  assert.equal((await stalled.locator('.badge').first().textContent()).trim(), 'Processing');
  assert.equal(await stalled.locator('.who').textContent(), env.STALLED_USER);
  assert.match(await stalled.locator('.silent').textContent(), /^silent for \d+ h \d+ min$/);
  say('ok stalled job shown with its user');

  assert.equal(await failure.locator('.error-text').textContent(), env.FAILED_ERROR);
  assert.ok(await failure.locator('details.history').evaluate((d) => d.open), 'the history is open');
  assert.deepEqual(await failure.locator('details.history li .badge').allTextContents(), ['Queued', 'Processing', 'Failed']);
  say('ok failure shown with its error and history');

  const count = (status) => page.locator(`#stats-status div[data-name="${status}"] dd`).textContent();
  const counts = JSON.parse(env.COUNTS);
  for (const [status, n] of Object.entries(counts)) assert.equal(await count(status), String(n), status);
  assert.match(await page.locator('#stats-errors').textContent(), new RegExp(`1 ×${escape(env.FAILED_ERROR)}`));
  assert.match(await page.textContent('#stats-durations'), /^Created to finished: median /);
  say('ok statistics');

  if (env.SCREENSHOT_STALLED) {
    mkdirSync(dirname(env.SCREENSHOT_STALLED), { recursive: true });
    await page.screenshot({ path: env.SCREENSHOT_STALLED, fullPage: true });
    say(`ok screenshot of the stalled job ${env.SCREENSHOT_STALLED}`);
  }

  await publish(JSON.parse(env.PUSH));
  const published = Date.now();
  await page.waitForFunction(
    ([id, done]) =>
      !document.querySelector(`#stalled li.job[data-message-id="${id}"]`) &&
      document.querySelector('#stats-status div[data-name="success"] dd')?.textContent === done,
    [env.STALLED, String(counts.success + 1)],
    // The view polls every 5 s.
    { timeout: 12_000 },
  );
  assert.ok(await page.locator('#stalled-empty').isVisible(), 'the empty note shows');
  say(`ok live: the late success left the stalled list in ${Date.now() - published} ms`);
}

function escape(text) {
  return text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** The user view: a user's jobs followed live through their progress to their end. */
async function userView(page) {
  const jobs = env.JOBS.split(',');
  const pushes = JSON.parse(env.PUSHES);
  const expect = JSON.parse(env.EXPECT);
  const progress = JSON.parse(env.PROGRESS);

  await page.fill('#query', env.LINE_USER);
  await page.click('button[type=submit]');
  for (const id of jobs) {
    const card = page.locator(`li.job[data-message-id="${id}"]`);
    await card.waitFor({ timeout: 10_000 });
    await page.waitForFunction(
      (id) => {
        const card = [...document.querySelectorAll('li.job')].find((li) => li.dataset.messageId === id);
        return card?.dataset.status === 'processing' && card.dataset.live === 'sse';
      },
      id,
      { timeout: 10_000 },
    );
    assert.equal((await card.locator('.badge').first().textContent()).trim(), 'Processing');
  }
  const shown = await page.$$eval('li.job', (cards) => cards.map((card) => card.dataset.messageId));
  assert.ok(jobs.every((id) => shown.includes(id)), `${shown}`);
  assert.match(await page.textContent('#results-title'), new RegExp(`Jobs of ${env.LINE_USER}`));
  assert.ok(new URL(page.url()).searchParams.get('q') === env.LINE_USER, 'the lookup is in the address');
  say(`ok processing ${jobs.length} jobs followed live`);

  for (const [id, report] of Object.entries(progress)) {
    await publish(report.push);
    await page.waitForFunction(
      ([id, count]) => {
        const card = [...document.querySelectorAll('li.job')].find((li) => li.dataset.messageId === id);
        return card?.querySelector('.progress-count')?.textContent === count;
      },
      [id, report.count],
      { timeout: 5_000 },
    );
    const card = page.locator(`li.job[data-message-id="${id}"]`);
    assert.equal(await card.locator('.progress-note').textContent(), report.note);
    assert.equal(await card.locator('.badge').first().textContent(), 'Processing');
    const [value, max] = await card.locator('progress').evaluate((bar) => [bar.value, bar.max]);
    assert.equal(`${value} / ${max}`, report.count.split(' (')[0]);
  }
  const withoutProgress = jobs.filter((id) => !(id in progress));
  for (const id of withoutProgress) {
    assert.equal(await page.locator(`li.job[data-message-id="${id}"] .progress`).count(), 0, `${id} has a bar`);
  }
  say(`ok progress shown live for ${Object.keys(progress).length} jobs`);

  for (const id of jobs) await publish(pushes[id]);
  const published = Date.now();
  say('ok published');

  for (const id of jobs) {
    await page.waitForFunction(
      ([id, status]) => {
        const card = [...document.querySelectorAll('li.job')].find((li) => li.dataset.messageId === id);
        return card?.dataset.status === status;
      },
      [id, expect[id]],
      // The list refresh runs every 10 s: a change within 5 s came by the stream.
      { timeout: 5_000 },
    );
  }
  const lag = Date.now() - published;
  say(`ok updated live in ${lag} ms`);

  for (const id of jobs) {
    const card = page.locator(`li.job[data-message-id="${id}"]`);
    const status = expect[id];
    const label = { success: 'Succeeded', failed: 'Failed', not_found: 'Not found' }[status];
    assert.equal((await card.locator('.badge').first().textContent()).trim(), label);
    if (status === 'failed' || status === 'not_found') {
      const error = await card.locator('.error-text').textContent();
      assert.ok(error.length > 0, 'the error is shown');
      assert.ok(await card.locator('details.history').evaluate((d) => d.open), 'the history is open');
      const steps = await card.locator('details.history li .badge').allTextContents();
      assert.deepEqual(steps, ['Queued', 'Processing', label]);
    } else {
      assert.equal(await card.locator('.error-text').count(), 0);
    }
    assert.equal(await card.locator('.progress').count(), 0, 'a finished job shows no progress bar');
    // Finished: no longer followed.
    await page.waitForFunction(
      (id) => [...document.querySelectorAll('li.job')].find((li) => li.dataset.messageId === id)?.dataset.live === '',
      id,
      { timeout: 5_000 },
    );
  }
  say('ok final states, errors and history');
}
