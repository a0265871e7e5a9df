/**
 * The command line shared by the lab's client programs (test/lab/traffic.ts, test/fakes/long-flows-client.ts,
 * test/fakes/ecmp-flows-client.ts), which run inside the client namespace and print one JSON line.
 */

/** The value after `--<name>` on this process's command line, else `fallback`; without either, an error. */
export function cliArg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const value = i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
  if (value === undefined) throw new Error(`--${name} is required`);
  return value;
}

/** `--target host:port` (an IPv6 host in brackets: `[2001:db8::10]:2379`). */
export function cliTarget(fallback?: string): { host: string; port: number } {
  const target = cliArg('target', fallback);
  const colon = target.lastIndexOf(':');
  return { host: target.slice(0, colon).replace(/^\[|\]$/g, ''), port: Number(target.slice(colon + 1)) };
}

/** Prints the report as the one JSON line the lab tests parse. */
export function printReport(report: Promise<unknown>): void {
  void report.then((r) => process.stdout.write(JSON.stringify(r) + '\n'));
}

/** An HTTP/1.1 GET of `path` (etcd answers /health); `close` asks for one request per connection. */
export function httpGet(path: string, host: string, close = false): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${close ? 'Connection: close\r\n' : ''}\r\n`;
}
