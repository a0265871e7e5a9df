import net from 'node:net';
import { canonicalAddress } from '../../net/address';
import type { Clock } from '../../lib/clock';
import type { Logger } from '../../lib/logger';
import type { Metrics } from '../../lib/metrics';
import type { AddressFamily, PeerState, PeerStatus, SpeakerEvent } from '../speaker';
import type { ApiPeerEvent, ApiSessionState } from './api-types';

/**
 * BGP session states as vipd last saw them. Every change goes through one transition that logs it,
 * counts it, moves the state gauge and tells listeners. Configured peers are listed from the start
 * (as 'unknown'); peers gobgpd reports that vipd did not configure (external gobgpd) are listed too.
 */

const PEER_STATES: readonly PeerState[] = ['unknown', 'idle', 'connect', 'active', 'opensent', 'openconfirm', 'established'];

const SESSION_STATES: Readonly<Record<ApiSessionState, PeerState>> = {
  UNKNOWN: 'unknown',
  IDLE: 'idle',
  CONNECT: 'connect',
  ACTIVE: 'active',
  OPENSENT: 'opensent',
  OPENCONFIRM: 'openconfirm',
  ESTABLISHED: 'established',
};

/** Same text for the same address, whatever the notation (gobgpd prints Go's canonical form). */
export function canonicalPeerAddress(address: string): string {
  return canonicalAddress(address) ?? address;
}

export interface PeerTableOptions {
  readonly configured: ReadonlyArray<{ readonly address: string; readonly asn: number; readonly families: readonly AddressFamily[] }>;
  readonly clock: Clock;
  readonly logger: Logger;
  readonly metrics: Metrics;
  readonly emit: (event: SpeakerEvent) => void;
}

export class PeerTable {
  private readonly peers = new Map<string, PeerStatus>();

  constructor(private readonly options: PeerTableOptions) {
    for (const p of options.configured) {
      const address = canonicalPeerAddress(p.address);
      this.peers.set(address, { address, asn: p.asn, state: 'unknown', since: options.clock.wallNow(), families: p.families });
      this.setGauge(address, 'unknown');
    }
  }

  list(): PeerStatus[] {
    return [...this.peers.values()];
  }

  /** Applies an INIT or STATE event of gobgpd's WatchEvent stream. */
  apply(event: ApiPeerEvent): void {
    if (event.type !== 'INIT' && event.type !== 'STATE') return;
    const state = event.peer?.state;
    const address = state?.neighbor_address || event.peer?.conf?.neighbor_address;
    if (!state || !address || net.isIP(address) === 0) return;
    this.transition(canonicalPeerAddress(address), state.peer_asn, SESSION_STATES[state.session_state] ?? 'unknown', `gobgpd ${event.type.toLowerCase()} event`);
  }

  /**
   * Reload: the configured peers become `configured`. A kept peer keeps its state; a new one is listed
   * as 'unknown' until gobgpd reports it; a removed one leaves the table and its gauges. Returns the
   * removed addresses.
   */
  setConfigured(configured: PeerTableOptions['configured']): string[] {
    const next = new Map(configured.map((p) => [canonicalPeerAddress(p.address), p]));
    const removed: string[] = [];
    for (const address of [...this.peers.keys()]) {
      if (next.has(address)) continue;
      this.peers.delete(address);
      removed.push(address);
      for (const s of PEER_STATES) this.options.metrics.peerState.remove({ peer: address, state: s });
      this.options.logger.info({ event: 'peer', op: 'removed', peer: address }, 'BGP peer removed by reload');
    }
    for (const [address, p] of next) {
      const current = this.peers.get(address);
      if (current) {
        this.peers.set(address, { ...current, asn: p.asn, families: p.families });
        continue;
      }
      this.peers.set(address, { address, asn: p.asn, state: 'unknown', since: this.options.clock.wallNow(), families: p.families });
      this.setGauge(address, 'unknown');
      this.options.logger.info({ event: 'peer', op: 'added', peer: address }, 'BGP peer added by reload');
    }
    return removed;
  }

  /** When gobgpd cannot be asked, vipd does not know any session's state. */
  forgetStates(reason: string): void {
    for (const p of this.peers.values()) this.transition(p.address, p.asn, 'unknown', reason);
  }

  private transition(address: string, asn: number, to: PeerState, reason: string): void {
    const { clock, logger, metrics, emit } = this.options;
    const current = this.peers.get(address);
    const from = current?.state ?? 'unknown';
    if (current && from === to) return;
    this.peers.set(address, { address, asn: asn || current?.asn || 0, state: to, since: clock.wallNow(), families: current?.families ?? [] });
    this.setGauge(address, to);
    if (!current && to === 'unknown') return;
    metrics.peerTransitions.inc({ peer: address, to });
    const fields = { event: 'peer', peer: address, from, to, reason };
    if (from === 'established') logger.warn(fields, 'BGP session left established');
    else if (to === 'established') logger.info(fields, 'BGP session established');
    else logger.info(fields, 'BGP session state changed');
    emit({ type: 'peer', peer: address, from, to });
  }

  private setGauge(address: string, current: PeerState): void {
    for (const s of PEER_STATES) this.options.metrics.peerState.set({ peer: address, state: s }, s === current ? 1 : 0);
  }
}
