import { readdirSync, readFileSync } from 'node:fs';

/**
 * This process's soft RLIMIT_NOFILE, from /proc/self/limits (Node raises the soft limit to the hard
 * one at start-up, so this is what vipd really has). Undefined when unlimited or not readable (not Linux).
 */
export function openFileLimit(limitsText?: string): number | undefined {
  let text = limitsText;
  if (text === undefined) {
    try {
      text = readFileSync('/proc/self/limits', 'utf8');
    } catch {
      return undefined;
    }
  }
  const line = text.split('\n').find((l) => l.startsWith('Max open files'));
  const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0];
  if (soft === undefined || !/^\d+$/.test(soft)) return undefined;
  return Number(soft);
}

/** Descriptors this process has open now; undefined when /proc is not there. */
export function openFileCount(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length;
  } catch {
    return undefined;
  }
}
