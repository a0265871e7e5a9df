import type { DaemonStatus, DrainOrigin } from '../control/control';
import type { JournalEvent } from '../control/event-journal';

/** Renders `vipd status` for a person: one table per section, reasons spelled out. */
export function renderStatus(s: DaemonStatus): string {
  const lines: string[] = [];
  const flags = [s.drained ? 'DRAINED' : '', s.shuttingDown ? 'SHUTTING DOWN' : ''].filter(Boolean).join(' ');
  lines.push(`node ${s.node}  vipd ${s.version}${flags ? '  ' + flags : ''}`, '');
  const drains = [
    ...(s.drain ? [['node', drainText(s.drain)]] : []),
    ...s.pools.flatMap((p) => p.backends.flatMap((b) => (b.drain ? [[`backend ${p.name} ${b.address}`, drainText(b.drain)]] : []))),
  ];
  if (drains.length) lines.push(table(['DRAINED', 'BY'], drains), '');
  // Drains of the node and of single VIPs: where each is in GRACEFUL_SHUTDOWN -> withdraw -> close.
  if (s.drains?.length) {
    lines.push(
      table(
        ['DRAIN', 'PHASE', 'GRACE UNTIL', 'CLOSE AT', 'BY'],
        s.drains.map((d) => [d.target, d.phase, d.graceUntil ?? '-', d.closeAt ?? '-', `${d.drainedBy} at ${d.drainedAt}`]),
      ),
      '',
    );
  }
  lines.push(
    table(
      ['VIP', 'PREFIX', 'STATE', 'REASON', 'SINCE', 'PENALTY', 'DETAIL'],
      s.vips.map((v) => [v.name, v.prefix, v.state, v.reason, v.since, v.suppressedUntil ? `${v.penalty ?? 0} (until ${v.suppressedUntil})` : String(v.penalty ?? 0), v.detail]),
    ),
    '',
  );
  lines.push(
    table(
      ['LISTENER', 'POOL', 'BOUND', 'SESSIONS'],
      s.vips.flatMap((v) => v.listeners.map((l) => [l.id, l.pool, l.bound ? 'yes' : 'NO', String(l.activeSessions)])),
    ),
    '',
  );
  lines.push(
    table(
      ['POOL', 'BACKEND', 'HEALTH', 'SINCE', 'LAST CHECK', 'ACTIVE', 'TOTAL', 'CONNECT ERR'],
      s.pools.flatMap((p) =>
        p.backends.map((b) => [
          p.name,
          b.address,
          b.drained ? `${b.health} (drained)` : b.health,
          b.since,
          b.lastCheck ? `${b.lastCheck.ok ? 'ok' : 'fail'} ${b.lastCheck.detail} (${b.lastCheck.durationMs}ms)` : '-',
          String(b.activeConnections),
          String(b.totalConnections),
          String(b.connectErrors),
        ]),
      ),
    ),
    '',
  );
  if (s.peers.length === 0) {
    lines.push('no BGP peers (speaker driver none)');
    return lines.join('\n');
  }
  lines.push(
    table(
      ['PEER', 'ASN', 'STATE', 'SINCE', 'FAMILIES', 'NEGOTIATED', 'PATHS SENT', 'WANTED', 'DRIFT'],
      s.peers.map((p) => [
        p.address,
        String(p.asn),
        p.state,
        p.since,
        (p.families ?? []).join(','),
        p.negotiated?.join(',') ?? '-',
        String(p.advertised?.length ?? 0),
        p.desired === undefined ? '-' : String(p.desired.length),
        driftText(p.drift),
      ]),
    ),
    '',
  );
  // Per peer, what gobgpd really sent it (its adj-RIB-out) and from which source: beside a local
  // FRR/BIRD, this shows the local router's session up and taking the VIP (docs/beside-frr.md).
  lines.push(
    table(
      ['PEER', 'FROM', 'SESSION', 'SENT (ADJ-RIB-OUT)'],
      s.peers.flatMap((p) => (p.advertised.length > 0 ? p.advertised : ['-']).map((prefix) => [p.address, p.localAddress ?? '-', p.state, prefix])),
    ),
    '',
  );
  // Read-back: gobgpd refused or did not finish what vipd asked; say what is not applied.
  const sync = s.speakerSync;
  if (sync && sync.state !== 'in-sync') {
    const pending = [...sync.pendingAdd.map((x) => `+${x}`), ...sync.pendingDelete.map((x) => `-${x}`)].join(' ') || 'nothing';
    lines.push(`speaker ${sync.state} since ${sync.since}: not applied: ${pending}${sync.lastError ? `; last refused: ${sync.lastError.call}: ${sync.lastError.reply}` : ''}`, '');
  }
  // What each router really gets: a VIP can be announced to one peer and not to another.
  lines.push(
    table(
      ['VIP', 'PEER', 'STATE', 'REASON'],
      s.vips.flatMap((v) => (v.peers ?? []).map((p) => [v.name, p.peer, p.state, p.reason ?? ''])),
    ),
  );
  return lines.join('\n');
}

function driftText(d: { readonly missing: readonly string[]; readonly extra: readonly string[] } | undefined): string {
  if (!d) return '-';
  return [...d.missing.map((x) => `missing ${x}`), ...d.extra.map((x) => `extra ${x}`)].join(', ');
}

function drainText(d: DrainOrigin): string {
  return `${d.drainedBy} at ${d.drainedAt}${d.restoredFrom !== undefined ? ` (restored from ${d.restoredFrom})` : ''}`;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const fmt = (r: string[]) => r.map((c, i) => (c ?? '').padEnd(widths[i]!)).join('  ').trimEnd();
  return [fmt(header), ...rows.map(fmt)].join('\n');
}

/** Transitions shown by `vipd status --watch` (the page shows all of the journal). */
export const WATCH_TIMELINE_ROWS = 15;

/** The last `rows` transitions, newest first; control characters in names are shown as `?` (no terminal escapes). */
export function renderTimeline(events: readonly JournalEvent[], rows: number): string {
  const clean = (text: string) => text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');
  const shown = [...events].reverse().slice(0, rows);
  return table(
    [`LAST TRANSITIONS (${shown.length} of ${events.length})`, 'KIND', 'SUBJECT', 'CHANGE', 'REASON'],
    shown.map((e) => [e.at, e.kind, clean(e.subject), clean(`${e.from !== undefined ? `${e.from} -> ` : ''}${e.to}`), clean(e.reason ?? '')]),
  );
}
