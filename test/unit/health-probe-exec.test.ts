import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, chmodSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { commandProblem } from '../../src/health/check-files';
import { MAX_EXEC_OUTPUT_BYTES } from '../../src/health/health';
import { ExecProbe } from '../../src/health/probe-exec';
import { endpoint } from '../../src/net/endpoint';

const target = endpoint('198.18.21.2', 2379);

/** Running or sleeping; a zombie (killed, waiting for a reaper that this container's pid 1 may never be) is not. */
function alive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
}

describe('exec check: argv without a shell, exit 0 = up', () => {
  let dir: string;
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'vipd-exec-'));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('exit 0 passes, exit 3 fails, each with its output and the backend in the environment', async () => {
    const script = 'echo "checking $VIPD_BACKEND_HOST:$VIPD_BACKEND_PORT"; echo oops >&2; exit "$1"';
    const up = await new ExecProbe({ command: ['/bin/sh', '-c', script, 'sh', '0'] }).check(target, 2000);
    const down = await new ExecProbe({ command: ['/bin/sh', '-c', script, 'sh', '3'] }).check(target, 2000);
    console.log(`exec probe: up "${up.detail}", down "${down.detail}"`);
    assert.deepEqual([up.ok, up.detail], [true, 'exit 0: checking 198.18.21.2:2379\noops']);
    assert.deepEqual([down.ok, down.detail], [false, 'exit 3: checking 198.18.21.2:2379\noops']);
  });

  it('no shell: metacharacters in arguments are plain bytes', async () => {
    const result = await new ExecProbe({ command: ['/bin/echo', '$(id)', ';', 'rm', '-rf'] }).check(target, 2000);
    assert.deepEqual([result.ok, result.detail], [true, 'exit 0: $(id) ; rm -rf']);
  });

  it('at the timeout the whole process group gets SIGKILL, grandchildren too', async () => {
    const pidFile = join(dir, 'grandchild.pid');
    // The grandchild ignores SIGTERM and holds the pipes: only a group SIGKILL ends it.
    const script = `trap "" TERM; sleep 30 & echo $! > ${pidFile}; echo started; wait`;
    const result = await new ExecProbe({ command: ['/bin/sh', '-c', script] }).check(target, 300);
    console.log(`exec probe at timeout: "${result.detail}" after ${result.durationMs}ms`);
    assert.equal(result.ok, false);
    assert.equal(result.detail, 'timeout after 300ms (exec, killed): started');
    assert.ok(result.durationMs < 600, `answered after ${result.durationMs}ms`);
    const grandchild = Number(readFileSync(pidFile, 'utf8'));
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(alive(grandchild), false, `grandchild ${grandchild} still alive`);
  });

  it('output is capped at 4 KiB and says so', async () => {
    const result = await new ExecProbe({ command: ['/bin/sh', '-c', 'head -c 100000 /dev/zero | tr "\\0" a; exit 1'] }).check(target, 2000);
    assert.equal(result.ok, false);
    assert.ok(result.detail.startsWith(`exit 1: ${'a'.repeat(100)}`));
    assert.ok(result.detail.endsWith(`…(output cut at ${MAX_EXEC_OUTPUT_BYTES} bytes)`));
    assert.ok(result.detail.length < MAX_EXEC_OUTPUT_BYTES + 100);
  });

  it('a command killed by a signal says which', async () => {
    const result = await new ExecProbe({ command: ['/bin/sh', '-c', 'kill -9 $$'] }).check(target, 2000);
    assert.deepEqual([result.ok, result.detail], [false, 'killed by SIGKILL']);
  });

  it('a command that vanished after load fails with the spawn error, never throws', async () => {
    const result = await new ExecProbe({ command: [join(dir, 'gone')] }).check(target, 1000);
    assert.deepEqual([result.ok, result.detail], [false, 'exec ENOENT']);
  });

  it('commandProblem: PATH lookup, not executable, missing, a directory', () => {
    const plain = join(dir, 'plain.sh');
    writeFileSync(plain, '#!/bin/sh\nexit 0\n');
    chmodSync(plain, 0o644);
    assert.equal(commandProblem('sh'), undefined);
    assert.equal(commandProblem('/bin/sh'), undefined);
    assert.equal(commandProblem(plain), `${plain} is not executable`);
    assert.equal(commandProblem(join(dir, 'missing')), `${join(dir, 'missing')} does not exist`);
    assert.equal(commandProblem(dir), `${dir} is not a file`);
    assert.equal(commandProblem('vipd-no-such-program'), '"vipd-no-such-program" is not an executable file in PATH');
    assert.ok(existsSync(plain));
  });
});
