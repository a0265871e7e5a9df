import { readFileSync } from 'node:fs';
import { LineCounter, isMap, isPair, isScalar, parseDocument, type Document, type Node as YamlNode } from 'yaml';
import { z } from 'zod';
import { ConfigError, VipdError, type ConfigIssue } from '../lib/errors';
import { checkFileProblems, configSchema, type Config } from './schema';

/**
 * Contract of the config module: YAML text in, a validated, deeply frozen Config out, or a ConfigError
 * whose every issue names the key path and line:col. Nothing else in vipd parses config.
 */
export type { Config, VipConfig, PoolConfig, PeerConfig, BackendConfig } from './schema';

/** `checkFiles: false` skips reading the files a config names (TLS, exec commands): for configs of another machine. */
export interface LoadOptions {
  readonly checkFiles?: boolean;
}

export function loadConfigFile(file: string, options: LoadOptions = {}): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new VipdError('VIPD_ERR_CONFIG_IO', `${file}: cannot read config: ${(err as NodeJS.ErrnoException).code ?? err}`, { cause: err });
  }
  return parseConfig(text, file, options);
}

export function parseConfig(text: string, file = '<config>', options: LoadOptions = {}): Config {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  const syntaxIssues = [...doc.errors, ...doc.warnings].map((e): ConfigIssue => {
    const pos = lineCounter.linePos(e.pos[0]);
    return { path: '(yaml)', line: pos.line, col: pos.col, message: e.message.split('\n')[0]! };
  });
  if (syntaxIssues.length > 0) throw new ConfigError(file, syntaxIssues);

  const raw: unknown = doc.toJS({ maxAliasCount: 100 });
  const result = configSchema.safeParse(raw ?? {});
  if (!result.success) {
    throw new ConfigError(file, result.error.issues.flatMap((issue) => locateIssue(issue, doc, lineCounter)));
  }
  if (options.checkFiles !== false) {
    const problems = checkFileProblems(result.data);
    if (problems.length > 0) {
      throw new ConfigError(file, problems.flatMap((p) => locateIssue({ code: z.ZodIssueCode.custom, path: p.path, message: p.message }, doc, lineCounter)));
    }
  }
  return deepFreeze(result.data);
}

function locateIssue(issue: z.ZodIssue, doc: Document, lineCounter: LineCounter): ConfigIssue[] {
  if (issue.code === z.ZodIssueCode.unrecognized_keys) {
    return issue.keys.map((key) => {
      const keyNode = findKeyNode(doc, issue.path, key);
      const pos = position(keyNode ?? nearestNode(doc, issue.path), lineCounter);
      return { path: formatPath([...issue.path, key]), ...pos, message: 'unknown key' };
    });
  }
  if (issue.code === z.ZodIssueCode.invalid_union) {
    // Report the branch the user evidently meant: the one whose value had the right shape at this path.
    const branches = issue.unionErrors.map((e) => e.issues);
    const meant = branches.find((issues) => !issues.some((i) => i.code === z.ZodIssueCode.invalid_type && i.path.length === issue.path.length)) ?? branches[0] ?? [];
    if (meant.length > 0) return meant.flatMap((i) => locateIssue(i, doc, lineCounter));
  }
  const node = nearestNode(doc, issue.path);
  const exact = doc.getIn(issue.path, true) !== undefined;
  let message = issue.message;
  if (issue.code === z.ZodIssueCode.invalid_type) {
    message = issue.received === 'undefined' ? 'required key is missing' : `expected ${issue.expected}, got ${issue.received}`;
  } else if (issue.code === z.ZodIssueCode.invalid_enum_value) {
    message = `"${String(issue.received)}" is not one of ${issue.options.join(' | ')}`;
  }
  if (!exact && issue.code !== z.ZodIssueCode.invalid_type) message += ' (key missing)';
  return [{ path: formatPath(issue.path), ...position(node, lineCounter), message }];
}

/** The node at `path`, or the deepest existing ancestor (a missing key is reported at its parent). */
function nearestNode(doc: Document, path: ReadonlyArray<string | number>): YamlNode | undefined {
  for (let n = path.length; n >= 0; n--) {
    const node = doc.getIn(path.slice(0, n), true);
    if (node && typeof node === 'object' && 'range' in (node as object)) return node as YamlNode;
  }
  return doc.contents ?? undefined;
}

function findKeyNode(doc: Document, mapPath: ReadonlyArray<string | number>, key: string): YamlNode | undefined {
  const map = mapPath.length === 0 ? doc.contents : doc.getIn(mapPath, true);
  if (!isMap(map)) return undefined;
  for (const item of map.items) {
    if (isPair(item) && isScalar(item.key) && String(item.key.value) === key) return item.key;
  }
  return undefined;
}

function position(node: YamlNode | undefined, lineCounter: LineCounter): { line: number; col: number } {
  const offset = node?.range?.[0];
  if (offset === undefined) return { line: 1, col: 1 };
  return lineCounter.linePos(offset);
}

function formatPath(path: ReadonlyArray<string | number>): string {
  if (path.length === 0) return '(root)';
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? p : `.${p}`)).join('');
}

function deepFreeze<T>(value: T): T {
  if (value && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const v of Object.values(value as object)) deepFreeze(v);
  }
  return value;
}

/**
 * Line and column of the key at `path` in `text` (or of its nearest existing ancestor): reload names
 * the line of a key it refuses, as check-config does for the keys it refuses.
 */
export function keyPosition(text: string, path: ReadonlyArray<string | number>): { line: number; col: number } {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: false });
  const parent = path.slice(0, -1);
  const last = path[path.length - 1];
  const keyNode = typeof last === 'string' ? findKeyNode(doc, parent, last) : undefined;
  return position(keyNode ?? nearestNode(doc, path), lineCounter);
}
