import { readFileSync } from 'node:fs';
import { GrpcHealthServer, type ServingStatus } from './grpc-health-server';

/**
 * A grpc.health.v1 server to run in a lab namespace: `node grpc-health-backend.js HOST PORT STATUS_FILE`.
 * Each Check answers what STATUS_FILE says (SERVING, NOT_SERVING), so a test flips the backend from
 * outside by writing the file. Prints "listening HOST:PORT" once bound.
 */
async function main(): Promise<void> {
  const [host, portText, statusFile] = process.argv.slice(2);
  if (host === undefined || portText === undefined || statusFile === undefined) throw new Error('usage: grpc-health-backend HOST PORT STATUS_FILE');
  const server = new GrpcHealthServer((service) => (service === '' ? ((readFileSync(statusFile, 'utf8').trim() as ServingStatus) || 'UNKNOWN') : undefined));
  const port = await server.listen(host, Number(portText));
  process.stdout.write(`listening ${host}:${port}\n`);
  const stop = (): void => {
    server.close();
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
