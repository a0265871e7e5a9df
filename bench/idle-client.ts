import { connect, type Socket } from 'node:net';

/**
 * Opens COUNT connections to HOST:PORT, sends one keep-alive HTTP request on each, reads the whole
 * answer, and then keeps every connection open and silent. The one exchange matters: it makes each
 * proxy open its upstream leg and pass bytes both ways (HAProxy and nginx allocate their buffers on
 * first data), so what stays behind is the memory of a real, idle, proxied connection such as a
 * kubelet's watch between events.
 *
 *   node dist/bench/idle-client.js HOST PORT COUNT PATH
 *
 * Prints "ready N" once all N connections have had their answer, then holds them until SIGTERM, on
 * which it closes everything and exits. A connection that fails is reported as "failed ..."
 * and ends the run with exit code 1: a partial figure would be silently wrong.
 */

const [host, portText, countText, reqPath] = process.argv.slice(2);
const port = Number(portText);
const count = Number(countText);
if (!host || !Number.isInteger(port) || !Number.isInteger(count) || count < 1 || !reqPath) {
  process.stderr.write('usage: idle-client HOST PORT COUNT PATH\n');
  process.exit(2);
}

/** Connects in flight at once: below every listener's backlog (Node's default is 511), so no SYN is dropped. */
const IN_FLIGHT = 200;
/** A connection that has not had its answer by then is counted as failed. */
const ANSWER_TIMEOUT_MS = 20_000;

const request = Buffer.from(`GET ${reqPath} HTTP/1.1\r\nHost: bench\r\n\r\n`);
const sockets: Socket[] = [];
let started = 0;
let answered = 0;
let failed = false;
/** Set on SIGTERM: from then on, closes are ours and not a failure. */
let shuttingDown = false;

function fail(why: string): void {
  if (failed) return;
  failed = true;
  process.stdout.write(`failed after ${answered} answered: ${why}\n`);
  for (const s of sockets) s.destroy();
  process.exit(1);
}

function openOne(): void {
  if (started >= count) return;
  started++;
  const socket = connect({ host, port });
  sockets.push(socket);
  let received = '';
  let needed = -1;
  const onData = (chunk: Buffer): void => {
    received += chunk.toString('latin1');
    if (needed < 0) {
      const headerEnd = received.indexOf('\r\n\r\n');
      if (headerEnd < 0) return;
      const m = /\r\ncontent-length:\s*(\d+)/i.exec(received.slice(0, headerEnd));
      if (!m) return fail(`answer without Content-Length: ${JSON.stringify(received.slice(0, 80))}`);
      needed = headerEnd + 4 + Number(m[1]);
    }
    if (received.length < needed) return;
    // Answered: drop the reader and the text so the client holds as little as possible per connection.
    socket.removeListener('data', onData);
    received = '';
    answered++;
    if (answered === count) process.stdout.write(`ready ${count}\n`);
    else openOne();
  };
  socket.on('data', onData);
  socket.on('connect', () => socket.write(request));
  socket.on('error', (err) => fail(`${(err as NodeJS.ErrnoException).code ?? err.message}`));
  socket.on('close', () => {
    if (!shuttingDown) fail('a connection was closed by the other side');
  });
}

function shutdown(): void {
  shuttingDown = true;
  for (const s of sockets) s.destroy();
  process.exit(0);
}

setTimeout(() => {
  if (answered < count) fail(`only ${answered} of ${count} answered within ${ANSWER_TIMEOUT_MS} ms`);
}, ANSWER_TIMEOUT_MS).unref();
process.on('SIGTERM', shutdown);
for (let i = 0; i < Math.min(IN_FLIGHT, count); i++) openOne();
