import type { PoolSnapshot } from '../health/health';
import type { Endpoint } from '../net/endpoint';
import type { BackendLoad, Picker } from './proxy';

/**
 * Hands out the healthy backends in configured order, one after the other. The cursor is an index
 * into whatever healthy list the current snapshot holds, so a snapshot change shifts the order
 * without resetting it to the first backend (which would pile every restart onto one backend).
 */
export class RoundRobinPicker implements Picker {
  private cursor = 0;

  pick(snapshot: PoolSnapshot, _load: BackendLoad, exclude: ReadonlySet<string>): Endpoint | undefined {
    const healthy = snapshot.healthy;
    const count = healthy.length;
    for (let step = 0; step < count; step++) {
      const index = (this.cursor + step) % count;
      const candidate = healthy[index]!;
      if (exclude.has(candidate.key)) continue;
      this.cursor = (index + 1) % count;
      return candidate;
    }
    return undefined;
  }
}
