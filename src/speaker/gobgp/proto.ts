import fs from 'node:fs';
import path from 'node:path';
import * as protobuf from 'protobufjs';

/** The files of vipd's GoBGP API subset, in load order (attribute.proto and capability.proto import gobgp.proto). */
export const GOBGP_PROTO_FILES: readonly string[] = ['gobgp.proto', 'attribute.proto', 'capability.proto'];

let cachedDir: string | undefined;
let cachedRoot: protobuf.Root | undefined;

/**
 * Finds proto/ at the package root by walking up from this module, so that the same code works from
 * src/ (ts-node, tests) and from dist/src/ (built), whatever the install prefix.
 */
export function gobgpProtoDir(): string {
  if (cachedDir) return cachedDir;
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const candidate = path.join(dir, 'proto');
    if (fs.existsSync(path.join(candidate, GOBGP_PROTO_FILES[0]!))) return (cachedDir = candidate);
    if (path.dirname(dir) === dir) throw new Error(`proto/${GOBGP_PROTO_FILES[0]} not found above ${__dirname}`);
  }
}

/** Loads a set of GoBGP .proto files (ours or upstream's) with field names exactly as written. */
export function loadGobgpRoot(dir: string): protobuf.Root {
  const root = new protobuf.Root();
  root.loadSync(
    GOBGP_PROTO_FILES.map((f) => path.join(dir, f)),
    { keepCase: true },
  );
  root.resolveAll();
  return root;
}

/** vipd's own proto/ as a protobufjs Root, loaded once. */
export function gobgpRoot(): protobuf.Root {
  return (cachedRoot ??= loadGobgpRoot(gobgpProtoDir()));
}
