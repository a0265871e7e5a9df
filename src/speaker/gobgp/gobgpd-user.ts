import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { VipdError } from '../../lib/errors';

/**
 * The unprivileged identity of a managed gobgpd. gobgpd needs no privilege at all (BGP port -1 dials
 * out; it never touches the kernel's routes), so it runs as `speaker.gobgp.user` with no capabilities,
 * under setpriv, which also gives it its parent-death signal (measured: setpriv sets PR_SET_PDEATHSIG
 * after it changes the uid, so the signal survives the switch and gobgpd still dies with vipd).
 */

export interface GobgpdIdentity {
  readonly user: string;
  readonly uid: number;
  /** The user's primary group. */
  readonly gid: number;
}

function userError(message: string, cause?: unknown): VipdError {
  return new VipdError('VIPD_ERR_GOBGP_PROCESS', message, cause === undefined ? undefined : { cause });
}

/** Parses one `getent passwd` line (name:x:uid:gid:gecos:home:shell). */
export function parsePasswdLine(user: string, line: string): GobgpdIdentity {
  const fields = line.trim().split(':');
  const uid = Number(fields[2]);
  const gid = Number(fields[3]);
  if (fields[0] !== user || fields.length < 4 || !Number.isInteger(uid) || !Number.isInteger(gid) || uid < 0 || gid < 0) {
    throw userError(`speaker.gobgp.user "${user}": unexpected passwd entry ${JSON.stringify(line.trim())}`);
  }
  return { user, uid, gid };
}

/**
 * Looks the user up through NSS (`getent passwd`), as setpriv would. A user that does not exist is a
 * clear error: vipd creates none.
 */
export function lookupGobgpdUser(user: string, getentPath = 'getent'): Promise<GobgpdIdentity> {
  return new Promise((resolve, reject) => {
    execFile(getentPath, ['passwd', user], { timeout: 5000 }, (err, stdout) => {
      const code = (err as (Error & { code?: unknown }) | null)?.code;
      if (code === 2) return reject(userError(`speaker.gobgp.user "${user}" does not exist on this host (getent passwd found no such user); create it or name an existing unprivileged user`));
      if (err) return reject(userError(`speaker.gobgp.user "${user}": cannot look it up with ${getentPath}: ${err.message}`, err));
      try {
        resolve(parsePasswdLine(user, stdout.split('\n')[0] ?? ''));
      } catch (e) {
        reject(e);
      }
    });
  });
}

export interface SetprivOptions {
  readonly identity: GobgpdIdentity;
  /** vipd's effective uid: only root (or a holder of CAP_SETUID/SETGID/SETPCAP) can switch users and drop the bounding set. */
  readonly vipdUid: number;
  /** gobgpd listens on a BGP port below 1024: it keeps CAP_NET_BIND_SERVICE (ambient), nothing else. */
  readonly bindPrivilegedPort: boolean;
}

/**
 * setpriv's options, before `--`: the user switch, no supplementary groups, no capabilities (or only
 * CAP_NET_BIND_SERVICE), and the parent-death signal. Throws when vipd cannot switch to that user.
 */
export function setprivArgs(o: SetprivOptions): string[] {
  const caps = o.bindPrivilegedPort ? '-all,+net_bind_service' : '-all';
  const args: string[] = [];
  // Root asked to run gobgpd as root (a container holding only CAP_NET_ADMIN, which could not switch
  // users anyway: setgroups needs CAP_SETGID): no switch, the rest of the lockdown applies.
  if (o.vipdUid === 0 && o.identity.uid !== 0) {
    args.push(`--reuid=${o.identity.uid}`, `--regid=${o.identity.gid}`, '--clear-groups', `--bounding-set=${caps}`);
  } else if (o.vipdUid !== o.identity.uid) {
    throw userError(
      `speaker.gobgp.user "${o.identity.user}" (uid ${o.identity.uid}): vipd runs as uid ${o.vipdUid} and cannot switch users; ` +
        `run vipd as root, or set speaker.gobgp.user to vipd's own user`,
    );
  }
  // no_new_privs: gobgpd can never gain a privilege back by exec'ing a setuid or file-capability binary.
  args.push(`--inh-caps=${caps}`, `--ambient-caps=${caps}`, '--no-new-privs', '--pdeathsig', 'TERM');
  return args;
}

/**
 * gobgpd, as its own user, must be able to walk down to its private directory: a runtimeDir (or a parent)
 * closed to it (say a 0700 /run/vipd owned by root) would let vipd write the config and gobgpd never read
 * it. Checked before anything is spawned, with the key to change.
 */
export async function checkSearchableBy(dir: string, identity: GobgpdIdentity): Promise<void> {
  if (identity.uid === 0) return;
  for (let d = path.resolve(dir); ; d = path.dirname(d)) {
    const st = await fs.promises.stat(d);
    const bit = st.uid === identity.uid ? 0o100 : st.gid === identity.gid ? 0o010 : 0o001;
    if ((st.mode & bit) === 0) {
      throw userError(
        `speaker.gobgp.runtimeDir: ${d} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}, uid ${st.uid}) cannot be entered by gobgpd's user ` +
          `"${identity.user}" (uid ${identity.uid}), so gobgpd could not read its config; make it searchable (o+x) or choose another runtimeDir`,
      );
    }
    if (path.dirname(d) === d) return;
  }
}
