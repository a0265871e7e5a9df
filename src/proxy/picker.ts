import { VipdError } from '../lib/errors';
import { LeastConnPicker } from './picker-least-conn';
import { RoundRobinPicker } from './picker-round-robin';
import type { BalanceAlgorithm, Picker } from './proxy';

/** Every balancing algorithm vipd knows, registered in one place. */
const pickerFactories: { readonly [A in BalanceAlgorithm]: () => Picker } = {
  'round-robin': () => new RoundRobinPicker(),
  'least-conn': () => new LeastConnPicker(),
};

/**
 * A fresh picker for one listener. Pickers keep a rotation cursor, so listeners never share one;
 * least-conn still sees the whole pool's load through the shared BackendLoad.
 */
export function createPicker(algorithm: BalanceAlgorithm): Picker {
  const factory = Object.hasOwn(pickerFactories, algorithm) ? pickerFactories[algorithm] : undefined;
  if (factory === undefined) {
    throw new VipdError('VIPD_ERR_CONFIG', `unknown balance algorithm "${String(algorithm)}"`);
  }
  return factory();
}
