import * as fs from 'node:fs';
import * as path from 'node:path';
import { sleep, VIPD_BIN, type ExecResult, type Lab } from '../lab';

/**
 * Times an admin action from the moment the CLI connects to vipd, not from its spawn: Node's own
 * start-up (up to a second on a loaded machine) is not part of what vipd is asked to bound. A preload
 * script stamps the wall time of the CLI's first socket connect (TCP or unix socket alike) on stderr.
 */
const STAMP = 'VIPD_TEST_CONNECT_AT=';
const PRELOAD = `
const net = require('node:net');
const connect = net.Socket.prototype.connect;
let stamped = false;
net.Socket.prototype.connect = function (...args) {
  if (!stamped) {
    stamped = true;
    process.stderr.write('${STAMP}' + Date.now() + '\\n');
  }
  return connect.apply(this, args);
};
`;

export interface TimedCliResult extends ExecResult {
  /** Date.now() when the CLI opened its connection to vipd. */
  readonly connectWall: number;
}

export async function timedVipdCli(lab: Lab, lb: string, args: readonly string[]): Promise<TimedCliResult> {
  const preload = path.join(lab.dir, 'connect-stamp.js');
  if (!fs.existsSync(preload)) fs.writeFileSync(preload, PRELOAD);
  const r = await lab.exec(lb, [process.execPath, '-r', preload, VIPD_BIN, ...args]);
  const line = r.stderr.split('\n').find((l) => l.startsWith(STAMP));
  if (line === undefined) throw new Error(`vipd ${args.join(' ')}: never connected (exit ${r.code}): ${r.stderr}`);
  return { ...r, stderr: r.stderr.replace(/^VIPD_TEST_CONNECT_AT=\d+\n/m, ''), connectWall: Number(line.slice(STAMP.length)) };
}

/**
 * Polls the ToR's kernel table every 10 ms until `prefix` has `count` next hops; resolves with the
 * Date.now() of the first poll that saw it. Start it before the action it times.
 */
export async function watchNexthops(lab: Lab, prefix: string, count: number, timeoutMs = 10_000): Promise<number> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    if (((await lab.tor.torRoute(prefix))?.nexthops.length ?? 0) === count) return Date.now();
    if (Date.now() > until) throw new Error(`${prefix} never had ${count} next hops at the ToR within ${timeoutMs} ms`);
    await sleep(10);
  }
}
