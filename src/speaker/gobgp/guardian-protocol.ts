/** What vipd and its guardian say over their pipes (guardian.ts, guardian-main.ts). */

/** vipd -> guardian, before it closes the pipe: the paths are already withdrawn; do nothing. */
export const GUARDIAN_RELEASE = 'withdrawn\n';
/** guardian -> vipd on fd 3: watching. */
export const GUARDIAN_READY = 'armed\n';
