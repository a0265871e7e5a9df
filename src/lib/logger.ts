import pino from 'pino';

/**
 * pino JSON logs. Child loggers carry `component` and, where they apply, `vip`, `backend` and `peer`.
 * Fixed vocabulary for the `event` key: see docs/operations.md.
 */
export type Logger = pino.Logger;

export function createLogger(level: string = process.env.VIPD_LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}

/** A logger that drops everything, for unit tests. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
