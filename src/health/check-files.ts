import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { delimiter, join } from 'node:path';
import { VipdError } from '../lib/errors';

/**
 * The files a check reads (TLS material, an exec command), checked once at load so that a missing file
 * or a key that does not belong to its certificate is a config error with its key named, never a stream
 * of probe failures. The config schema reports `problems`; the probes load through `loadTlsMaterial`.
 */

export interface TlsFiles {
  readonly caFile?: string | undefined;
  readonly certFile?: string | undefined;
  readonly keyFile?: string | undefined;
}

export interface TlsMaterial {
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

/** A problem with one key of a check: `key` is relative to the check (`tls.keyFile`, `command`). */
export interface CheckFileProblem {
  readonly key: string;
  readonly message: string;
}

/** Every problem with the TLS files, each naming its key; empty when the material loads. */
export function tlsFileProblems(files: TlsFiles): CheckFileProblem[] {
  return readTls(files).problems;
}

/** Reads the TLS files once. Throws VipdError VIPD_ERR_CONFIG_IO naming the key on any problem. */
export function loadTlsMaterial(files: TlsFiles): TlsMaterial {
  const { material, problems } = readTls(files);
  if (problems.length > 0) {
    throw new VipdError('VIPD_ERR_CONFIG_IO', `health check ${problems.map((p) => `tls.${p.key}: ${p.message}`).join('; ')}`);
  }
  return material;
}

function readTls(files: TlsFiles): { material: TlsMaterial; problems: CheckFileProblem[] } {
  const problems: CheckFileProblem[] = [];
  const read = (key: keyof TlsFiles): Buffer | undefined => {
    const path = files[key];
    if (path === undefined) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      problems.push({ key, message: `${path}: cannot read (${(err as NodeJS.ErrnoException).code ?? String(err)})` });
      return undefined;
    }
  };
  const ca = read('caFile');
  const cert = read('certFile');
  const key = read('keyFile');
  if ((files.certFile === undefined) !== (files.keyFile === undefined)) {
    problems.push({ key: files.certFile === undefined ? 'certFile' : 'keyFile', message: 'certFile and keyFile go together (a client certificate needs its key)' });
  }
  if (ca !== undefined) {
    try {
      new X509Certificate(ca);
    } catch (err) {
      problems.push({ key: 'caFile', message: `${files.caFile}: not a PEM certificate (${(err as Error).message})` });
    }
  }
  if (cert !== undefined && key !== undefined) {
    let certificate: X509Certificate | undefined;
    try {
      certificate = new X509Certificate(cert);
    } catch (err) {
      problems.push({ key: 'certFile', message: `${files.certFile}: not a PEM certificate (${(err as Error).message})` });
    }
    let privateKey: ReturnType<typeof createPrivateKey> | undefined;
    try {
      privateKey = createPrivateKey(key);
    } catch (err) {
      problems.push({ key: 'keyFile', message: `${files.keyFile}: not a PEM private key (${(err as Error).message})` });
    }
    if (certificate && privateKey && !certificate.checkPrivateKey(privateKey)) {
      problems.push({ key: 'keyFile', message: `${files.keyFile} is not the key of ${files.certFile}` });
    }
  }
  const material: TlsMaterial = { ...(ca ? { ca } : {}), ...(cert ? { cert } : {}), ...(key ? { key } : {}) };
  return { material, problems };
}

/**
 * Why argv[0] of a command vipd runs (an exec check, a hook) cannot run, or undefined when it can: a path must be an executable file;
 * a bare name must be one on PATH (looked up as execvp would).
 */
export function commandProblem(command: string, pathEnv = process.env['PATH'] ?? ''): string | undefined {
  const candidates = command.includes('/') ? [command] : pathEnv.split(delimiter).filter((d) => d !== '').map((d) => join(d, command));
  for (const candidate of candidates) {
    try {
      if (!statSync(candidate).isFile()) continue;
      accessSync(candidate, constants.X_OK);
      return undefined;
    } catch {
      continue;
    }
  }
  if (command.includes('/')) {
    try {
      const stat = statSync(command);
      return stat.isFile() ? `${command} is not executable` : `${command} is not a file`;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      return code === 'ENOENT' ? `${command} does not exist` : `${command}: ${code ?? String(err)}`;
    }
  }
  return `"${command}" is not an executable file in PATH`;
}

/** tcp send/expect text: UTF-8, or `hex:` then pairs of hex digits (spaces allowed). Undefined when the hex is bad. */
export function parseProbeBytes(text: string): Buffer | undefined {
  if (!text.startsWith('hex:')) return Buffer.from(text, 'utf8');
  const hex = text.slice(4).replace(/\s+/g, '');
  if (hex === '' || hex.length % 2 !== 0 || !/^[0-9a-fA-F]+$/.test(hex)) return undefined;
  return Buffer.from(hex, 'hex');
}
