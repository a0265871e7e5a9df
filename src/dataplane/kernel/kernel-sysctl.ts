import { readFile } from 'node:fs/promises';

/**
 * Sysctls the kernel data path depends on, checked before it writes anything. A rewritten packet is
 * forwarded, so forwarding must be on for each family it serves; every connection through it holds a
 * conntrack entry, so a table smaller than a busy control plane needs refuses new connections silently.
 */
export interface SysctlNeed {
  readonly key: string;
  /** Why vipd needs it, said in the error. */
  readonly why: string;
  readonly ok: (value: number) => boolean;
  readonly want: string;
  /** Missing file is no error (e.g. nf_conntrack not loaded yet: the first nat rule loads it). */
  readonly optional?: boolean;
}

/** Below this many conntrack entries, a few seconds of a reconnect storm fill the table. */
export const MIN_CONNTRACK_MAX = 32_768;

export function sysctlNeeds(families: { readonly ipv4: boolean; readonly ipv6: boolean }): SysctlNeed[] {
  const needs: SysctlNeed[] = [];
  if (families.ipv4) {
    needs.push({ key: 'net.ipv4.ip_forward', why: 'IPv4 kernel listeners forward each rewritten packet to its backend', ok: (v) => v === 1, want: '1' });
  }
  if (families.ipv6) {
    needs.push({ key: 'net.ipv6.conf.all.forwarding', why: 'IPv6 kernel listeners forward each rewritten packet to its backend', ok: (v) => v === 1, want: '1' });
  }
  needs.push({
    key: 'net.netfilter.nf_conntrack_max',
    why: 'each connection through a kernel listener holds one conntrack entry, and a full table drops new connections',
    ok: (v) => v >= MIN_CONNTRACK_MAX,
    want: `>= ${MIN_CONNTRACK_MAX}`,
    optional: true,
  });
  return needs;
}

/** Each unmet need as one sentence naming the sysctl, its value and the value wanted. Pure. */
export function sysctlProblems(needs: readonly SysctlNeed[], values: ReadonlyMap<string, string | undefined>): string[] {
  const problems: string[] = [];
  for (const need of needs) {
    const raw = values.get(need.key);
    if (raw === undefined) {
      if (!need.optional) problems.push(`sysctl ${need.key} cannot be read; it must be ${need.want}: ${need.why}`);
      continue;
    }
    const value = Number(raw.trim());
    if (!Number.isFinite(value) || !need.ok(value)) {
      problems.push(`sysctl ${need.key} is ${raw.trim()}, it must be ${need.want}: ${need.why} (sysctl -w ${need.key}=${need.want.replace(/^>= /, '')})`);
    }
  }
  return problems;
}

export async function readSysctls(keys: readonly string[]): Promise<Map<string, string | undefined>> {
  const values = new Map<string, string | undefined>();
  for (const key of keys) {
    values.set(
      key,
      await readFile(`/proc/sys/${key.replace(/\./g, '/')}`, 'utf8').catch(() => undefined),
    );
  }
  return values;
}
