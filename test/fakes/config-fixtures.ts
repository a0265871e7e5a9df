import assert from 'node:assert/strict';
import { parseConfig } from '../../src/config/config';
import { ConfigError, type ConfigIssue } from '../../src/lib/errors';

/**
 * Config texts and "load this YAML, expect this issue" checks shared by the config unit tests.
 * The texts are spelled out line by line on purpose: tests assert the line numbers of issues.
 */

/**
 * The tail most test configs share: one VIP with one listener on 2379 in front of pool `etcd`.
 * Nine lines, starting with `vips:`.
 */
export function oneVipOnePool(o: { vipName?: string; backends?: readonly string[] } = {}): string {
  const backends = (o.backends ?? ['198.18.21.2:2379']).map((b) => `"${b}"`).join(', ');
  return `vips:
  - name: ${o.vipName ?? 'control-plane'}
    address: 198.19.0.10
    listeners:
      - port: 2379
        pool: etcd
pools:
  etcd:
    backends: [${backends}]
`;
}

/**
 * Loads `text` expecting a ConfigError with an issue at `path`; returns that issue and the error
 * (whose message is every issue formatted as `<file>:<line>:<col>: <path>: <message>`).
 */
export function configIssue(text: string, path: string, file = 'bad.yaml'): { issue: ConfigIssue; error: ConfigError } {
  try {
    parseConfig(text, file);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected ConfigError, got ${String(err)}`);
    const issue = err.issues.find((i) => i.path === path);
    assert.ok(issue, `no issue names ${path}; got:\n${err.message}`);
    return { issue, error: err };
  }
  assert.fail(`config was accepted; expected an issue at ${path}`);
}

/** Loading `text` is refused with an issue at `path`, on `line`, whose message matches `message`. */
export function assertConfigRefused(text: string, path: string, line: number, message: RegExp, file = 'bad.yaml'): void {
  const { issue, error } = configIssue(text, path, file);
  assert.equal(issue.line, line, `wrong line for ${path}: ${error.message}`);
  assert.match(issue.message, message);
}
