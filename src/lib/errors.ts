/**
 * Errors with stable codes (undici style): callers branch on `code`, never on message text.
 * Platform errors are wrapped at the edge with the original kept as `cause`.
 */
export type ErrorCode =
  | 'VIPD_ERR_CONFIG'
  | 'VIPD_ERR_CONFIG_IO'
  | 'VIPD_ERR_NET'
  | 'VIPD_ERR_GOBGP_API'
  | 'VIPD_ERR_GOBGP_PROCESS'
  | 'VIPD_ERR_CODEC'
  | 'VIPD_ERR_ADMIN'
  | 'VIPD_ERR_CLOSED'
  | 'VIPD_ERR_CONNECT_TIMEOUT'
  | 'VIPD_ERR_NO_BACKEND'
  | 'VIPD_ERR_STATE'
  | 'VIPD_ERR_KERNEL';

export class VipdError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = 'VipdError';
  }
}

/** One config problem: where it is (key path, line:col) and what is wrong. */
export interface ConfigIssue {
  path: string;
  line: number;
  col: number;
  message: string;
}

export class ConfigError extends VipdError {
  readonly issues: readonly ConfigIssue[];
  readonly file: string;
  constructor(file: string, issues: readonly ConfigIssue[]) {
    super('VIPD_ERR_CONFIG', issues.map((i) => formatConfigIssue(file, i)).join('\n'));
    this.issues = issues;
    this.file = file;
    this.name = 'ConfigError';
  }
}

export function formatConfigIssue(file: string, issue: ConfigIssue): string {
  return `${file}:${issue.line}:${issue.col}: ${issue.path}: ${issue.message}`;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
