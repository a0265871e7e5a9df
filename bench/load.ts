import { request } from 'node:http';
import { run } from './util';

/**
 * The load generators: wrk for request rates and latency, curl for the bulk download, and a tiny HTTP
 * GET for readiness. Each runs pinned to the load core (taskset), as a child of the benchmark.
 */

export interface WrkResult {
  requests: number;
  durationUs: number;
  bytes: number;
  /** Connect, read, write and timeout errors, and non-2xx/3xx answers, added up. */
  errors: number;
  p50Us: number;
  p99Us: number;
  meanUs: number;
  /** requests / duration. */
  rate: number;
}

export interface WrkOptions {
  url: string;
  connections: number;
  durationS: number;
  /** Path of the Lua script (see wrkScript()): it prints the VBENCH result line. */
  script: string;
  cores: string;
}

/** `wrk -t 1`: one load thread, so the client needs one core whatever the path. */
export async function wrk(opts: WrkOptions): Promise<WrkResult> {
  const argv = ['taskset', '-c', opts.cores, 'wrk', '-t', '1', '-c', String(opts.connections), '-d', `${opts.durationS}s`, '-s', opts.script, opts.url];
  const r = await run(argv, { timeoutMs: (opts.durationS + 30) * 1000 });
  const line = /^VBENCH (\{.*\})$/m.exec(r.stdout);
  if (r.code !== 0 || !line) throw new Error(`wrk failed (exit ${r.code}): ${(r.stderr || r.stdout).trim().slice(0, 500)}`);
  const j = JSON.parse(line[1]!) as Record<string, number>;
  const requests = j.requests!;
  const durationUs = j.durationUs!;
  return {
    requests,
    durationUs,
    bytes: j.bytes!,
    errors: j.connectErrors! + j.readErrors! + j.writeErrors! + j.statusErrors! + j.timeouts!,
    p50Us: j.p50Us!,
    p99Us: j.p99Us!,
    meanUs: j.meanUs!,
    rate: durationUs > 0 ? requests / (durationUs / 1e6) : 0,
  };
}

/**
 * One download of the large file with curl into /dev/null. Returns bytes per second as curl measures
 * it (transfer start to end); the size is checked so that a cut transfer is an error, not a figure.
 */
export async function curlDownload(url: string, expectBytes: number, cores: string): Promise<number> {
  const r = await run(
    ['taskset', '-c', cores, 'curl', '-sS', '--max-time', '60', '-o', '/dev/null', '-w', '%{http_code} %{size_download} %{speed_download}', url],
    { timeoutMs: 70_000 },
  );
  const [status, size, speed] = r.stdout.trim().split(' ');
  if (r.code !== 0 || status !== '200' || Number(size) !== expectBytes) {
    throw new Error(`curl ${url}: exit ${r.code}, status ${status}, ${size} of ${expectBytes} bytes: ${r.stderr.trim()}`);
  }
  return Number(speed);
}

/** One GET; resolves with the status code. Used to wait until a path serves. */
export function httpGetStatus(host: string, port: number, path: string, timeoutMs = 1000): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, agent: false, timeout: timeoutMs }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}
