// Writes config/vipd.schema.json from the zod schema the daemon validates with (src/config/schema.ts),
// through zod-to-json-schema. `npm run schema` regenerates it; `--check` exits 1 when the committed
// file differs (a unit test runs that), so the schema editors see can never drift from the loader.
import { readFileSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);
const { configSchema } = require(join(root, 'dist/src/config/schema.js'));
const { zodToJsonSchema } = require('zod-to-json-schema');

const generated = zodToJsonSchema(configSchema, {
  name: 'VipdConfig',
  // What a person writes (before defaults and transforms), which is what an editor checks.
  effectStrategy: 'input',
  $refStrategy: 'root',
  target: 'jsonSchema7',
});
const schema = {
  $schema: 'http://json-schema.org/draft-07/schema#',
  title: 'vipd configuration',
  description: 'Generated from src/config/schema.ts by scripts/gen-schema.mjs (npm run schema); do not edit. vipd check-config is the authority: it also checks what a schema cannot (cross-references, address families).',
  $ref: generated.$ref,
  definitions: generated.definitions,
};
const text = JSON.stringify(schema, null, 2) + '\n';
const target = join(root, 'config/vipd.schema.json');
if (process.argv.includes('--check')) {
  let committed = '';
  try {
    committed = readFileSync(target, 'utf8');
  } catch {
    // missing: out of date
  }
  if (committed !== text) {
    process.stderr.write('config/vipd.schema.json is out of date with src/config/schema.ts: run `npm run schema` and commit it\n');
    process.exit(1);
  }
  process.stdout.write('config/vipd.schema.json is up to date\n');
} else {
  writeFileSync(target, text);
  process.stdout.write(`wrote ${target}\n`);
}
