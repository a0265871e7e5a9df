import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { HookRunner } from '../../src/announce/hooks';
import type { VipStateChange } from '../../src/announce/reconciler';
import { systemClock } from '../../src/lib/clock';
import { silentLogger } from '../../src/lib/logger';
import { createMetrics } from '../../src/lib/metrics';

const dir = mkdtempSync(path.join(tmpdir(), 'vipd-hooks-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function script(name: string, body: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, `#!/bin/sh\n${body}\n`);
  chmodSync(file, 0o755);
  return file;
}

const change = (state: VipStateChange['state'], previous: VipStateChange['previous'], reason: VipStateChange['reason'] = 'ready'): VipStateChange => ({ vip: 'api', state, previous, reason, detail: '' });

function runner(argv: string[], timeoutMs = 5000) {
  const metrics = createMetrics();
  return { metrics, hooks: new HookRunner({ hook: { argv, timeoutMs }, node: 'lb1', clock: systemClock, logger: silentLogger(), metrics }) };
}

test('hooks: the environment names the VIP, the state, the previous state, the reason and the node', async () => {
  const out = path.join(dir, 'env.txt');
  const { hooks } = runner([script('env.sh', `echo "$VIPD_VIP $VIPD_STATE $VIPD_PREVIOUS_STATE $VIPD_REASON $VIPD_NODE $1" >> ${out}`), 'arg1']);
  hooks.notify(change('announced', 'withdrawn'));
  await hooks.idle();
  assert.equal(readFileSync(out, 'utf8'), 'api announced withdrawn ready lb1 arg1\n');
});

test('hooks: notify never waits for the hook; one run per VIP at a time; changes during a run coalesce into the newest', async () => {
  const out = path.join(dir, 'coalesce.txt');
  const { hooks } = runner([script('slow.sh', `sleep 0.3; echo "$VIPD_PREVIOUS_STATE>$VIPD_STATE" >> ${out}`)]);
  const t0 = performance.now();
  hooks.notify(change('announced', 'withdrawn'));
  hooks.notify(change('pessimized', 'announced', 'belowMinHealthy'));
  hooks.notify(change('withdrawn', 'pessimized', 'noHealthyBackends'));
  hooks.notify(change('announced', 'withdrawn'));
  assert.ok(performance.now() - t0 < 50, 'notify returned at once');
  await hooks.idle();
  // Two runs, not four: the middle two changes coalesced into the newest. Its previous state is the one
  // the first run reported, so the hook sees a continuous history (announced, flapped, announced again).
  assert.equal(readFileSync(out, 'utf8'), 'withdrawn>announced\nannounced>announced\n');
});

test('hooks: a hanging hook is killed at its timeout and counted; a failing one is counted; a missing one is an error, not a crash', async () => {
  const hang = runner([script('hang.sh', 'sleep 30')], 300);
  const t0 = performance.now();
  hang.hooks.notify(change('announced', 'withdrawn'));
  await hang.hooks.idle();
  const ms = performance.now() - t0;
  assert.ok(ms < 2000, `killed after ${Math.round(ms)} ms`);
  assert.match(await hang.metrics.registry.metrics(), /vipd_announce_hook_runs_total\{vip="api",result="timeout"\} 1/);

  const fail = runner([script('fail.sh', 'exit 3')]);
  fail.hooks.notify(change('announced', 'withdrawn'));
  await fail.hooks.idle();
  assert.match(await fail.metrics.registry.metrics(), /vipd_announce_hook_runs_total\{vip="api",result="failed"\} 1/);

  const missing = runner([path.join(dir, 'does-not-exist')]);
  missing.hooks.notify(change('announced', 'withdrawn'));
  await missing.hooks.idle();
  assert.match(await missing.metrics.registry.metrics(), /vipd_announce_hook_runs_total\{vip="api",result="error"\} 1/);
});
