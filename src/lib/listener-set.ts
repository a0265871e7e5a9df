/**
 * One set of listeners, told in order of subscription. A listener that throws is reported to `onError`
 * and never stops the others (or the emitter's caller) from running: one bad subscriber must not leave
 * the rest of the daemon with a stale view.
 */
export class ListenerSet<T> {
  private readonly listeners = new Set<(value: T) => void>();

  constructor(private readonly onError: (err: unknown) => void = () => {}) {}

  /** Subscribes; the returned function unsubscribes (idempotent). */
  add(listener: (value: T) => void): () => void {
    // A wrapper, so the same function subscribed twice is told twice and unsubscribes once per add.
    const entry = (value: T) => listener(value);
    this.listeners.add(entry);
    return () => {
      this.listeners.delete(entry);
    };
  }

  emit(value: T): void {
    for (const listener of [...this.listeners]) {
      try {
        listener(value);
      } catch (err) {
        this.onError(err);
      }
    }
  }

  get size(): number {
    return this.listeners.size;
  }

  clear(): void {
    this.listeners.clear();
  }
}
