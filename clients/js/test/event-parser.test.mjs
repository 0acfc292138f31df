// Unit tests of the event-stream parser of job-status.js: `node --test clients/js/test/`.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { EventParser, readEvents } from '../job-status.js';

/** Feeds `chunks` one by one and returns every event completed. */
function parse(chunks) {
  const parser = new EventParser();
  return chunks.flatMap((chunk) => parser.push(chunk));
}

/** Every way to cut `text` in two, so that no boundary breaks the parser. */
function everySplit(text) {
  const cuts = [];
  for (let i = 0; i <= text.length; i++) cuts.push([text.slice(0, i), text.slice(i)]);
  return cuts;
}

const STREAM =
  ': heartbeat\n\nevent: status\nid: "a1"\nretry: 2000\ndata: {"status":"queued"}\n\n' +
  'event: status\r\nid: "b2"\r\ndata: {"status":\r\ndata: "success"}\r\n\r\n';

test('events, ids and retry as trace-api sends them, whatever the chunking', () => {
  for (const chunks of everySplit(STREAM)) {
    const events = parse(chunks);
    assert.deepEqual(
      events,
      [
        { event: 'status', data: '{"status":"queued"}', id: '"a1"', retry: 2000 },
        { event: 'status', data: '{"status":\n"success"}', id: '"b2"', retry: undefined },
      ],
      JSON.stringify(chunks),
    );
  }
});

test('a lone CR ends a line, also at the end of a chunk', () => {
  assert.deepEqual(parse(['data: x\r', '\r']), [{ event: 'message', data: 'x', id: undefined, retry: undefined }]);
  assert.deepEqual(parse(['data: x\r', '\n\n']), [{ event: 'message', data: 'x', id: undefined, retry: undefined }]);
  assert.deepEqual(parse(['data: a\rdata: b\r\r']), [{ event: 'message', data: 'a\nb', id: undefined, retry: undefined }]);
});

test('the id sticks to later events; comments, unknown fields and bad retries are ignored', () => {
  const events = parse(['\uFEFFid: 7\ndata: one\n\n: c\nfoo: bar\nretry: soon\ndata: two\n\ndata\n\n']);
  assert.deepEqual(events, [
    { event: 'message', data: 'one', id: '7', retry: undefined },
    { event: 'message', data: 'two', id: '7', retry: undefined },
    { event: 'message', data: '', id: '7', retry: undefined },
  ]);
});

test('an unterminated last block is not an event', () => {
  assert.deepEqual(parse(['event: status\ndata: {}\n']), []);
});

test('readEvents decodes UTF-8 split inside a character', async () => {
  const bytes = new TextEncoder().encode('event: status\ndata: {"error":"物件が見つかりません"}\n\n');
  const body = new ReadableStream({
    start(controller) {
      for (const byte of bytes) controller.enqueue(Uint8Array.of(byte));
      controller.close();
    },
  });
  const events = [];
  for await (const event of readEvents(body)) events.push(event);
  assert.equal(events.length, 1);
  assert.deepEqual(JSON.parse(events[0].data), { error: '物件が見つかりません' });
});
