import { spawnSync } from 'node:child_process';

/**
 * Fails an integration test that cannot run on this machine (not root, a program missing) with the
 * reason. Called from a before() hook: CI must never pass by skipping what it could not run.
 * Programs are looked up on PATH, or checked as files when given as absolute paths.
 */
export function requirePrerequisites(programs: readonly string[]): void {
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces)');
  for (const program of programs) {
    const found = program.startsWith('/') ? spawnSync('test', ['-x', program]) : spawnSync('sh', ['-c', `command -v ${program}`]);
    if (found.status !== 0) throw new Error(`${program} is not installed (scripts/setup.sh installs it)`);
  }
}
