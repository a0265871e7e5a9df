import { randomBytes } from 'node:crypto';
import { promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { VipdError, errorMessage } from '../lib/errors';
import { EMPTY_DRAIN_STATE, type DrainState, type DrainStateStore } from './state';

/** Bumped when the format changes incompatibly; a file of another version is refused, never guessed at. */
const FORMAT_VERSION = 1;

const isoTime = z.string().refine((s) => !Number.isNaN(Date.parse(s)), 'not an ISO 8601 time');
const mark = { source: z.string().min(1).max(1000), at: isoTime };
const fileSchema = z
  .object({
    version: z.literal(FORMAT_VERSION),
    node: z.string().min(1),
    nodeDrain: z.object(mark).strict().nullable(),
    backendDrains: z.array(z.object({ pool: z.string().min(1), backend: z.string().min(1), ...mark }).strict()),
    /** Drains of single VIPs (issue 10); absent in files written before them. */
    vipDrains: z.array(z.object({ vip: z.string().min(1), ...mark }).strict()).optional(),
  })
  .strict();

type StateFile = z.infer<typeof fileSchema>;

/**
 * `<stateDir>/<node>.state.json`: the node's name keeps two vipd instances on one host apart. The name
 * is percent-encoded, so that no node name can point outside stateDir.
 */
export function drainStateFile(stateDir: string, node: string): string {
  return path.join(stateDir, `${encodeURIComponent(node)}.state.json`);
}

/**
 * The drain state as one JSON file, replaced atomically: the new content goes to a temporary file in the
 * same directory (so the rename cannot cross file systems), is fsynced, renamed over the old file, and
 * the directory is fsynced so the rename itself survives a power cut.
 */
export class DrainStateFile implements DrainStateStore {
  readonly file: string;
  private readonly dir: string;
  private chain: Promise<void> = Promise.resolve();

  constructor(
    stateDir: string,
    private readonly node: string,
  ) {
    this.dir = stateDir;
    this.file = drainStateFile(stateDir, node);
  }

  async load(): Promise<DrainState> {
    await this.removeStaleTemporaries();
    let text: string;
    try {
      text = await fsp.readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return EMPTY_DRAIN_STATE;
      throw new VipdError('VIPD_ERR_STATE', `drain state ${this.file} cannot be read: ${errorMessage(err)}`, { cause: err });
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (err) {
      throw new VipdError('VIPD_ERR_STATE', `drain state ${this.file} is not valid JSON: ${errorMessage(err)}`, { cause: err });
    }
    const parsed = fileSchema.safeParse(json);
    if (!parsed.success) {
      const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(top)'}: ${i.message}`).join('; ');
      throw new VipdError('VIPD_ERR_STATE', `drain state ${this.file} is invalid: ${issues}`);
    }
    if (parsed.data.node !== this.node) {
      throw new VipdError('VIPD_ERR_STATE', `drain state ${this.file} belongs to node "${parsed.data.node}", not "${this.node}"`);
    }
    const { nodeDrain, backendDrains, vipDrains } = parsed.data;
    return { ...(nodeDrain ? { node: nodeDrain } : {}), backends: backendDrains, ...(vipDrains && vipDrains.length > 0 ? { vips: vipDrains } : {}) };
  }

  /** A process killed between its write and its rename leaves a temporary behind; it never held the state. */
  private async removeStaleTemporaries(): Promise<void> {
    const prefix = `.${path.basename(this.file)}.`;
    const names = await fsp.readdir(this.dir).catch(() => [] as string[]);
    for (const name of names) {
      if (name.startsWith(prefix) && name.endsWith('.tmp')) await fsp.rm(path.join(this.dir, name), { force: true }).catch(() => undefined);
    }
  }

  save(state: DrainState): Promise<void> {
    const body: StateFile = {
      version: FORMAT_VERSION,
      node: this.node,
      nodeDrain: state.node ? { source: state.node.source, at: state.node.at } : null,
      backendDrains: state.backends.map((b) => ({ pool: b.pool, backend: b.backend, source: b.source, at: b.at })),
      ...(state.vips && state.vips.length > 0 ? { vipDrains: state.vips.map((v) => ({ vip: v.vip, source: v.source, at: v.at })) } : {}),
    };
    const text = `${JSON.stringify(body, null, 2)}\n`;
    const run = this.chain.then(() => writeAtomically(this.dir, this.file, text));
    // The next save waits for this one whatever its outcome; the caller sees this one's.
    this.chain = run.catch(() => undefined);
    return run;
  }
}

/** Write to a temporary sibling, fsync it, rename it over `file`, fsync the directory. */
export async function writeAtomically(dir: string, file: string, text: string): Promise<void> {
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  try {
    const handle = await fsp.open(tmp, 'wx', 0o600);
    try {
      await handle.writeFile(text, 'utf8');
      await handle.sync();
    } finally {
      await handle.close();
    }
    await fsp.rename(tmp, file);
  } catch (err) {
    await fsp.rm(tmp, { force: true }).catch(() => undefined);
    throw new VipdError('VIPD_ERR_STATE', `cannot write drain state ${file}: ${errorMessage(err)}`, { cause: err });
  }
  const dirHandle = await fsp.open(dir, 'r');
  try {
    await dirHandle.sync();
  } finally {
    await dirHandle.close();
  }
}
