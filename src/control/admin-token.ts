import { createHash, timingSafeEqual } from 'node:crypto';
import * as fs from 'node:fs';
import { VipdError } from '../lib/errors';

/** Shorter tokens are guessable; 16 characters of `openssl rand -hex 16` are 64 bits and more. */
const MIN_TOKEN_LENGTH = 16;

/**
 * Reads `admin.tokenFile` at start. The token allows draining the node over TCP, so a file any user
 * can read is refused rather than trusted; so is an empty or short token. Errors name the key.
 */
export function readAdminToken(file: string): string {
  let stat: fs.Stats;
  let text: string;
  try {
    stat = fs.statSync(file);
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new VipdError('VIPD_ERR_ADMIN', `admin.tokenFile: cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`, { cause: err });
  }
  if (!stat.isFile()) throw new VipdError('VIPD_ERR_ADMIN', `admin.tokenFile: ${file} is not a regular file`);
  if (stat.mode & 0o004) {
    throw new VipdError('VIPD_ERR_ADMIN', `admin.tokenFile: ${file} is readable by every user (mode ${(stat.mode & 0o777).toString(8).padStart(4, '0')}); chmod o-rwx ${file}`);
  }
  const token = text.trim();
  if (token.length < MIN_TOKEN_LENGTH) throw new VipdError('VIPD_ERR_ADMIN', `admin.tokenFile: the token in ${file} is shorter than ${MIN_TOKEN_LENGTH} characters`);
  if (!/^[!-~]+$/.test(token)) throw new VipdError('VIPD_ERR_ADMIN', `admin.tokenFile: the token in ${file} must be one word of printable ASCII (it travels in an Authorization header)`);
  return token;
}

/** Constant-time comparison: both sides are hashed first, so neither content nor length leaks through timing. */
export function tokenMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}
