import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The package root: dist/src/lib -> repository root. */
export const packageRoot = join(__dirname, '..', '..', '..');

export const vipdVersion: string = (JSON.parse(readFileSync(join(packageRoot, 'package.json'), 'utf8')) as { version: string }).version;
