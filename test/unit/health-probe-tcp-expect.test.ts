import assert from 'node:assert/strict';
import { once } from 'node:events';
import { createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { parseProbeBytes } from '../../src/health/check-files';
import { TcpProbe } from '../../src/health/probe-tcp';
import { endpoint, type Endpoint } from '../../src/net/endpoint';

describe('tcp check with send/expect against a loopback server', () => {
  let behaviour: (socket: Socket) => void = () => {};
  const received: Buffer[] = [];
  let server: Server;
  let target: Endpoint;

  before(async () => {
    server = createServer((socket) => {
      socket.on('data', (chunk) => received.push(chunk));
      socket.on('error', () => {});
      behaviour(socket);
    });
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    target = endpoint('127.0.0.1', (server.address() as AddressInfo).port);
  });
  after(() => server.close());

  it('sends, then passes on the expected bytes (a PING/PONG exchange)', async () => {
    behaviour = (socket) => socket.once('data', () => {
      socket.write('+PO');
      setTimeout(() => socket.write('NG\r\n'), 20);
    });
    const result = await new TcpProbe({ send: parseProbeBytes('PING\r\n'), expect: parseProbeBytes('hex:504f4e47') }).check(target, 1000);
    assert.deepEqual([result.ok, result.detail], [true, 'expect matched after 7 bytes']);
    assert.equal(Buffer.concat(received).toString(), 'PING\r\n');
  });

  it('fails when the reply lacks it and the peer closes', async () => {
    behaviour = (socket) => socket.end('-ERR loading\r\n');
    const result = await new TcpProbe({ expect: Buffer.from('PONG') }).check(target, 1000);
    assert.deepEqual([result.ok, result.detail], [false, 'expect not found: connection closed after 14 bytes']);
  });

  it('fails at the timeout when nothing matching arrives, saying what was read', async () => {
    behaviour = (socket) => socket.write('hello');
    const result = await new TcpProbe({ expect: Buffer.from('PONG') }).check(target, 200);
    assert.deepEqual([result.ok, result.detail], [false, 'timeout after 200ms (expect; 5 bytes read, no match)']);
  });

  it('stops reading at 64 KiB of a reply that never matches', async () => {
    behaviour = (socket) => {
      const chunk = Buffer.alloc(16 * 1024, 'z');
      const pump = () => {
        while (!socket.destroyed && socket.write(chunk));
        if (!socket.destroyed) socket.once('drain', pump);
      };
      pump();
    };
    const result = await new TcpProbe({ expect: Buffer.from('PONG') }).check(target, 2000);
    console.log(`tcp expect, endless reply: "${result.detail}" in ${result.durationMs}ms`);
    assert.deepEqual([result.ok, result.detail], [false, 'expect not found in the first 65536 bytes; not read further']);
  });

  it('without expect, a send passes once connected and written', async () => {
    behaviour = () => {};
    const result = await new TcpProbe({ send: Buffer.from('x') }).check(target, 1000);
    assert.deepEqual([result.ok, result.detail], [true, 'connected, sent 1 bytes']);
  });

  it('parseProbeBytes: text, hex with spaces, bad hex', () => {
    assert.deepEqual(parseProbeBytes('hex:0a 1B'), Buffer.from([0x0a, 0x1b]));
    assert.deepEqual(parseProbeBytes('PING'), Buffer.from('PING'));
    for (const bad of ['hex:', 'hex:0', 'hex:zz']) assert.equal(parseProbeBytes(bad), undefined, bad);
  });
});
