import type { Logger } from './logger';
import { ListenerSet } from './listener-set';

/** What a StateMachine tells its listeners, and logs as `{event: 'state', machine, from, to, reason}`. */
export interface StateChange<S extends string> {
  readonly from: S;
  readonly to: S;
  readonly reason: string;
}

export interface StateMachineOptions {
  /** Names the machine in the log line (`session`, `listener`, `supervisor`, ...). */
  readonly machine: string;
  readonly logger?: Logger;
  /** Log level of a legal change; the default `debug` keeps per-connection machines quiet. */
  readonly level?: 'debug' | 'info';
}

/**
 * A guarded state (grpc-js's transitionToState): the only way to change the state is
 * `transition(allowedFrom, to, reason)`, which does nothing and returns false when the current state is
 * not in `allowedFrom`, so an illegal edge cannot happen. A legal change is logged with its reason, then
 * listeners are told (a throwing listener is logged, never propagated).
 */
export class StateMachine<S extends string> {
  private current: S;
  /** Made at the first onChange: a machine per connection (the proxy's sessions) mostly has none. */
  private listeners: ListenerSet<StateChange<S>> | undefined;

  constructor(initial: S, private readonly options: StateMachineOptions) {
    this.current = initial;
  }

  get state(): S {
    return this.current;
  }

  is(...states: readonly S[]): boolean {
    return states.includes(this.current);
  }

  /**
   * Moves to `to` if the current state is one of `allowedFrom`. Returns whether it moved. A move to the
   * state it is already in is not a change and returns false.
   */
  transition(allowedFrom: readonly S[], to: S, reason: string): boolean {
    const from = this.current;
    if (from === to || !allowedFrom.includes(from)) return false;
    this.current = to;
    const { logger, machine, level = 'debug' } = this.options;
    logger?.[level]({ event: 'state', machine, from, to, reason }, `${machine} ${from} -> ${to}: ${reason}`);
    this.listeners?.emit({ from, to, reason });
    return true;
  }

  onChange(listener: (change: StateChange<S>) => void): () => void {
    const { logger, machine } = this.options;
    this.listeners ??= new ListenerSet((err) =>
      logger?.error({ event: 'listenerError', machine, err: err instanceof Error ? err.stack ?? err.message : String(err) }, 'state listener threw'),
    );
    return this.listeners.add(listener);
  }
}
