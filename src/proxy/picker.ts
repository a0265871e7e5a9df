import { VipdError } from '../lib/errors';
import { LeastConnPicker } from './picker-least-conn';
import { RandomPicker } from './picker-random';
import { RandomTwoPicker, randomBitsFrom, seededRandomBits, type RandomBits } from './picker-random-two';
import { RoundRobinPicker } from './picker-round-robin';
import { SourceHashPicker } from './picker-source-hash';
import type { BalanceAlgorithm, Picker, PoolSpec } from './proxy';

export interface PickerOptions {
  /** Uniform [0, 1) for the pickers that draw at random; mulberry32 seeded from Math.random unless a test pins it. */
  readonly random?: () => number;
}

type PickerFactory = (pool: PoolSpec, randomBits: RandomBits) => Picker;

/** Every balancing algorithm vipd knows, registered in one place. */
const pickerFactories: { readonly [A in BalanceAlgorithm]: PickerFactory } = {
  'round-robin': (pool) => new RoundRobinPicker(pool),
  'least-conn': (pool) => new LeastConnPicker(pool),
  'random-two': (pool, randomBits) => new RandomTwoPicker(pool, randomBits),
  random: (pool, randomBits) => new RandomPicker(pool, randomBits),
  'source-hash': (pool) => new SourceHashPicker(pool),
};

/**
 * A fresh picker for one listener of `pool`, balancing by `pool.balance` with the pool's weights and
 * slow start. Pickers keep rotation state and per-snapshot tables, so listeners never share one;
 * least-conn and random-two still see the whole pool's load through the shared BackendLoad.
 * Throws VipdError VIPD_ERR_CONFIG for an algorithm that is not registered.
 */
export function createPicker(pool: PoolSpec, options: PickerOptions = {}): Picker {
  const algorithm = pool.balance;
  const factory = Object.hasOwn(pickerFactories, algorithm) ? pickerFactories[algorithm] : undefined;
  if (factory === undefined) {
    throw new VipdError('VIPD_ERR_CONFIG', `pool ${pool.name}: unknown balance algorithm "${String(algorithm)}"`);
  }
  const randomBits = options.random !== undefined ? randomBitsFrom(options.random) : seededRandomBits(Math.random() * 2 ** 32);
  return factory(pool, randomBits);
}
