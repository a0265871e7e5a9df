import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** A throwaway CA and server certificates made with the openssl CLI. */
export function makePki(dir: string) {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '2', '-subj', '/CN=vipd test CA',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  writeFileSync(join(dir, 'server.ext'), [
    'basicConstraints=CA:FALSE',
    'keyUsage=critical,digitalSignature',
    'extendedKeyUsage=serverAuth',
    'subjectAltName=IP:127.0.0.1,DNS:backend.test',
  ].join('\n'));
  const issue = (name: string, days: string) => {
    openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', '/CN=backend.test');
    // A negative -days gives a notAfter before notBefore: a certificate that has already expired.
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial',
      '-out', `${name}.pem`, '-days', days, '-extfile', 'server.ext');
    return { key: readFileSync(join(dir, `${name}.key`)), cert: readFileSync(join(dir, `${name}.pem`)) };
  };
  writeFileSync(join(dir, 'client.ext'), ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=clientAuth'].join('\n'));
  // A client certificate (etcd's healthcheck-client), and a second key that belongs to no certificate.
  openssl('req', ...ec, '-keyout', 'client.key', '-out', 'client.csr', '-subj', '/CN=vipd-healthcheck');
  openssl('x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.pem', '-days', '2', '-extfile', 'client.ext');
  openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', 'stranger.key');
  return {
    caFile: join(dir, 'ca.pem'),
    server: issue('server', '2'),
    expired: issue('expired', '-1'),
    client: { certFile: join(dir, 'client.pem'), keyFile: join(dir, 'client.key') },
    strangerKeyFile: join(dir, 'stranger.key'),
  };
}

/**
 * kubeadm's etcd PKI in miniature, made with openssl: a CA, one server certificate per member (its own
 * address, 127.0.0.1 and the VIP in the SANs, so clients reach it through the VIP) and the
 * healthcheck-client certificate vipd presents. File names follow /etc/kubernetes/pki/etcd.
 */
export function makeEtcdPki(dir: string, members: ReadonlyArray<{ name: string; address: string }>, vip: string) {
  const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl('req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=etcd-ca',
    '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
  const issue = (name: string, cn: string, ext: string[]) => {
    writeFileSync(join(dir, `${name}.ext`), ['basicConstraints=CA:FALSE', 'keyUsage=critical,digitalSignature', ...ext].join('\n'));
    openssl('req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`);
    openssl('x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`);
    return { certFile: join(dir, `${name}.crt`), keyFile: join(dir, `${name}.key`) };
  };
  const servers = new Map(
    members.map((m) => [m.name, issue(`${m.name}-server`, m.name, ['extendedKeyUsage=serverAuth,clientAuth', `subjectAltName=IP:${m.address},IP:127.0.0.1,IP:${vip},DNS:${m.name}`])]),
  );
  return { caFile: join(dir, 'ca.crt'), servers, healthcheckClient: issue('healthcheck-client', 'kube-etcd-healthcheck-client', ['extendedKeyUsage=clientAuth']) };
}
