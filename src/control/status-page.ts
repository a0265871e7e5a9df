import type { DaemonStatus } from './control';
import type { JournalEvent } from './event-journal';

/**
 * The read-only status page served at `/`: one server-side renderer, used for the whole page and for
 * the fragment that `/events` pushes, so there is one place that escapes names. The browser script
 * only swaps the fragment in; with JavaScript off, the meta refresh reloads the page every 2 s.
 */

/** Escapes text for an HTML text node or a double-quoted attribute. Every name a page shows goes through it. */
export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => HTML_ESCAPES[c]!);
}

const HTML_ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' };

/** Whole page: header, styles, the fragment, and the script that keeps the fragment live. */
export function renderStatusPage(status: DaemonStatus, events: readonly JournalEvent[], now: Date = new Date()): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="2" id="norefresh-if-live">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vipd ${escapeHtml(status.node)}</title>
<style>${STYLE}</style></head>
<body><main id="live">${renderStatusFragment(status, events, now)}</main>
<p class="foot" id="feed">updates: page refresh every 2 s (JavaScript off or live feed unavailable)</p>
<script>${SCRIPT}</script></body></html>
`;
}

/** The live part of the page (what `/events` pushes). */
export function renderStatusFragment(status: DaemonStatus, events: readonly JournalEvent[], now: Date = new Date()): string {
  const e = escapeHtml;
  const flags = [status.drained ? badge('DRAINED', 'warn') : '', status.shuttingDown ? badge('SHUTTING DOWN', 'bad') : ''].join(' ');
  const drainLine = status.drain ? `<p class="drain">node drained by ${e(status.drain.drainedBy)} at ${e(status.drain.drainedAt)}${status.drain.restoredFrom ? ` (restored from ${e(status.drain.restoredFrom)})` : ''}</p>` : '';
  const parts: string[] = [];
  parts.push(`<header><h1>vipd <span id="node">${e(status.node)}</span></h1> <span class="dim">version ${e(status.version)} · ${e(now.toISOString().replace(/\.\d+Z$/, 'Z'))}</span> ${flags}</header>${drainLine}`);

  parts.push(
    section(
      'VIPs',
      ['VIP', 'prefix', 'state', 'reason', 'since', 'drain', 'peers', 'listeners'],
      status.vips.map((v) => [
        `<b>${e(v.name)}</b>`,
        e(v.prefix),
        badge(v.state, v.state === 'announced' ? 'ok' : v.state === 'withdrawn' ? 'bad' : 'warn'),
        `${e(v.reason)}${v.detail ? `<div class="dim">${e(v.detail)}</div>` : ''}`,
        ago(v.since, now),
        status.drained ? badge(v.state === 'announced' ? 'draining' : 'drained', 'warn') : '<span class="dim">-</span>',
        v.peers.length
          ? v.peers.map((p) => `<div>${e(p.peer)} ${badge(p.state, p.state === 'announced' ? 'ok' : 'bad')}${p.reason ? ` <span class="dim">${e(p.reason)}</span>` : ''}</div>`).join('')
          : '<span class="dim">no peers</span>',
        v.listeners.map((l) => `<div>:${l.port} → ${e(l.pool)} ${l.bound ? '' : badge('not bound', 'bad')} <span class="dim">${l.activeSessions} sessions</span></div>`).join(''),
      ]),
      'vips',
    ),
  );

  for (const pool of status.pools) {
    parts.push(
      section(
        `pool ${e(pool.name)} <span class="dim">(${pool.healthy} of ${pool.backends.length} healthy)</span>`,
        ['backend', 'health', 'since', 'last check', 'active', 'total', 'connect errors', 'ejected', 'drained'],
        pool.backends.map((b) => [
          `<b>${e(b.address)}</b>`,
          badge(b.health, b.health === 'healthy' ? 'ok' : b.health === 'unhealthy' ? 'bad' : 'dim'),
          ago(b.since, now),
          b.lastCheck
            ? `${badge(b.lastCheck.ok ? 'ok' : 'fail', b.lastCheck.ok ? 'ok' : 'bad')} <span class="detail">${e(b.lastCheck.detail)}</span> <span class="dim">${b.lastCheck.durationMs} ms, ${ago(b.lastCheck.at, now)}</span>`
            : '<span class="dim">no check yet</span>',
          String(b.activeConnections),
          String(b.totalConnections),
          String(b.connectErrors),
          b.ejectedUntil ? badge(`until ${b.ejectedUntil.slice(11, 19)}`, 'warn') : '<span class="dim">no</span>',
          b.drained ? `${badge('drained', 'warn')}${b.drain ? ` <span class="dim">by ${e(b.drain.drainedBy)}</span>` : ''}` : '<span class="dim">no</span>',
        ]),
        `pool-${pool.name}`,
      ),
    );
  }

  parts.push(
    section(
      'BGP peers',
      ['peer', 'ASN', 'state', 'uptime', 'families', 'advertised'],
      status.peers.map((p) => [
        `<b>${e(p.address)}</b>`,
        String(p.asn),
        badge(p.state, p.state === 'established' ? 'ok' : 'bad'),
        p.state === 'established' ? duration(now.getTime() - Date.parse(p.since)) : `<span class="dim">down ${ago(p.since, now)}</span>`,
        e((p.negotiated ?? p.families).join(', ')),
        p.advertised.length ? e(p.advertised.join(', ')) : '<span class="dim">nothing</span>',
      ]),
      'peers',
    ),
  );

  parts.push(
    section(
      `timeline <span class="dim">(last ${events.length}, newest first)</span>`,
      ['time', 'kind', 'subject', 'change', 'reason'],
      [...events].reverse().map((ev) => [
        `<span class="dim">${e(ev.at.replace('T', ' ').replace('Z', ''))}</span>`,
        badge(ev.kind, KIND_TONE[ev.kind]),
        e(ev.subject),
        `${ev.from ? `${e(ev.from)} → ` : ''}<b>${e(ev.to)}</b>`,
        ev.reason ? e(ev.reason) : '',
      ]),
      'timeline',
    ),
  );
  return parts.join('\n');
}

const KIND_TONE: Record<JournalEvent['kind'], string> = { announce: 'ok', withdraw: 'bad', health: 'dim', drain: 'warn', peer: 'dim', reload: 'dim' };

/** `title` and `head` are markup made here: any name inside them is escaped by the caller. Cells likewise. */
function section(title: string, head: readonly string[], rows: readonly (readonly string[])[], id: string): string {
  const body = rows.length ? rows.map((r) => `<tr>${r.map((c) => `<td>${c}</td>`).join('')}</tr>`).join('') : `<tr><td colspan="${head.length}" class="dim">none</td></tr>`;
  return `<section id="${escapeHtml(id)}"><h2>${title}</h2><table><thead><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr></thead><tbody>${body}</tbody></table></section>`;
}

function badge(text: string, tone: string): string {
  return `<span class="b ${tone}">${escapeHtml(text)}</span>`;
}

function ago(iso: string, now: Date): string {
  const ms = now.getTime() - Date.parse(iso);
  if (!Number.isFinite(ms)) return escapeHtml(iso);
  return `<span title="${escapeHtml(iso)}">${duration(ms)} ago</span>`;
}

function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.floor(s / 60)} min`;
  if (s < 172_800) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86_400)} d`;
}

const STYLE = `
body{font:14px/1.35 system-ui,sans-serif;margin:12px 18px;color:#1b1b1b;background:#fafafa}
header h1{display:inline;font-size:20px;margin:0 8px 0 0}
h2{font-size:15px;margin:16px 0 4px}
table{border-collapse:collapse;background:#fff;min-width:60%}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#eee;font-weight:600}
.b{display:inline-block;padding:0 6px;border-radius:3px;font-weight:600;font-size:12px}
.b.ok{background:#d4f4d4;color:#145214}.b.bad{background:#fbd5d5;color:#8a1010}
.b.warn{background:#fde9b8;color:#6b4a00}.b.dim{background:#e6e6e6;color:#444}
.dim{color:#777}.detail{font-family:ui-monospace,monospace;font-size:12px}
.drain{background:#fde9b8;padding:4px 8px;display:inline-block}
.foot{color:#777;font-size:12px}
`;

/**
 * The only script: swap in the fragments `/events` sends, and drop the meta refresh while it works.
 * If the feed fails, the page reloads itself (the server may have been restarted).
 */
const SCRIPT = `
(function(){
  if(!window.EventSource)return;
  var live=document.getElementById('live'),feed=document.getElementById('feed');
  var es=new EventSource('/events');
  es.addEventListener('status',function(m){
    var r=document.getElementById('norefresh-if-live');if(r)r.remove();
    live.innerHTML=m.data;feed.textContent='updates: live (server-sent events)';
  });
  es.onerror=function(){feed.textContent='updates: live feed lost, reloading';setTimeout(function(){location.reload();},2000);es.close();};
})();
`;
