import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, it } from 'node:test';
import { parse } from 'yaml';
import { validateJsonSchema, type JsonSchema } from '../fakes/json-schema-check';

const root = path.join(__dirname, '..', '..', '..');
const schemaFile = path.join(root, 'config', 'vipd.schema.json');

describe('config/vipd.schema.json', () => {
  it('is what scripts/gen-schema.mjs makes from the zod schema now (run `npm run schema` after changing src/config/schema.ts)', () => {
    const run = spawnSync(process.execPath, [path.join(root, 'scripts', 'gen-schema.mjs'), '--check'], { encoding: 'utf8' });
    assert.equal(run.status, 0, run.stderr);
  });

  it('accepts the minimal config and refuses an unknown key, a wrong type and a missing required key, naming the path', () => {
    const schema = JSON.parse(fs.readFileSync(schemaFile, 'utf8')) as JsonSchema;
    const good = parse(fs.readFileSync(path.join(root, 'config', 'vipd.yaml'), 'utf8')) as Record<string, unknown>;
    assert.deepEqual(validateJsonSchema(schema, good), []);
    const cases: Array<[string, (c: Record<string, any>) => void, RegExp]> = [
      ['unknown key', (c) => (c.node.nmae = 'x'), /\/node: unknown key "nmae"/],
      ['wrong type', (c) => (c.speaker.asn = 'sixty-five'), /\/speaker\/asn: /],
      ['missing key', (c) => delete c.node, /: missing "node"/],
      ['bad enum', (c) => (c.pools.etcd.balance = 'fastest'), /\/pools\/etcd\/balance: not one of/],
    ];
    for (const [name, mutate, want] of cases) {
      const bad = structuredClone(good) as Record<string, any>;
      mutate(bad);
      const errors = validateJsonSchema(schema, bad);
      assert.ok(errors.some((e) => want.test(e)), `${name}: ${JSON.stringify(errors)}`);
    }
  });
});
