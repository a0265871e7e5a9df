import { reapLab } from './netns';

/**
 * Per-lab watcher, started detached by NetnsLab.create() with a pipe from the test process on stdin.
 * "done" on the pipe means the lab was destroyed normally; end of file without it means the test
 * process died (even by SIGKILL), and the lab's processes, namespaces and temp dir are removed here.
 */
const [id, dir] = process.argv.slice(2);
let received = '';
process.stdin.setEncoding('utf8');
process.stdin.on('data', (chunk: string) => {
  received += chunk;
});
process.stdin.on('error', () => undefined);
process.stdin.on('close', () => {
  if (!id || !dir || /^done\b/m.test(received)) return;
  reapLab(id, [dir]).catch(() => {
    process.exitCode = 1;
  });
});
