import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test, before } from 'node:test';
import * as protobuf from 'protobufjs';
import { GOBGP_PROTO_FILES, gobgpProtoDir, loadGobgpRoot } from '../../src/speaker/gobgp/proto';

/**
 * proto/ is vipd's own subset of GoBGP's API. Every message, field, enum value and RPC in it must exist
 * upstream with the same name, number and type, or gobgpd would read vipd's bytes as something else.
 * Upstream: Debian's golang-github-osrg-gobgp-dev (override with GOBGP_UPSTREAM_PROTO_DIR).
 */
const UPSTREAM_DIR = process.env.GOBGP_UPSTREAM_PROTO_DIR ?? '/usr/share/gocode/src/github.com/osrg/gobgp/api';
const upstreamMissing = !fs.existsSync(path.join(UPSTREAM_DIR, 'gobgp.proto')) && `no upstream protos in ${UPSTREAM_DIR}`;

function walk(ns: protobuf.NamespaceBase, visit: (obj: protobuf.ReflectionObject) => void): void {
  for (const child of ns.nestedArray) {
    visit(child);
    if (child instanceof protobuf.Namespace || child instanceof protobuf.Type) walk(child, visit);
  }
}

function fieldType(field: protobuf.Field): string {
  const base = field.resolvedType ? field.resolvedType.fullName : field.type;
  if (field instanceof protobuf.MapField) return `map<${field.keyType}, ${base}>`;
  return base;
}

function fieldShape(field: protobuf.Field): string {
  const rule = field.repeated ? 'repeated ' : field.map ? '' : 'singular ';
  const oneof = field.partOf ? ` in oneof ${field.partOf.name}` : '';
  return `${rule}${fieldType(field)} = ${field.id}${oneof}`;
}

/** Everything in `ours` that upstream lacks or defines differently; empty when compatible. */
function compareWithUpstream(ours: protobuf.Root, upstream: protobuf.Root): string[] {
  const problems: string[] = [];
  walk(ours.lookup('apipb') as protobuf.Namespace, (obj) => {
    const name = obj.fullName;
    const theirs = upstream.lookup(name);
    if (obj instanceof protobuf.Type) {
      if (!(theirs instanceof protobuf.Type)) return void problems.push(`message ${name}: not upstream`);
      for (const field of obj.fieldsArray) {
        const other = theirs.fields[field.name];
        if (!other) problems.push(`field ${name}.${field.name}: not upstream`);
        else if (fieldShape(field) !== fieldShape(other)) problems.push(`field ${name}.${field.name}: ours "${fieldShape(field)}", upstream "${fieldShape(other)}"`);
      }
      for (const oneof of obj.oneofsArray) {
        if (!theirs.oneofs?.[oneof.name]) problems.push(`oneof ${name}.${oneof.name}: not upstream`);
      }
    } else if (obj instanceof protobuf.Enum) {
      if (!(theirs instanceof protobuf.Enum)) return void problems.push(`enum ${name}: not upstream`);
      for (const [valueName, value] of Object.entries(obj.values)) {
        if (theirs.values[valueName] !== value) problems.push(`enum value ${name}.${valueName}: ours ${value}, upstream ${theirs.values[valueName] ?? 'absent'}`);
      }
    } else if (obj instanceof protobuf.Service) {
      if (!(theirs instanceof protobuf.Service)) return void problems.push(`service ${name}: not upstream`);
      for (const method of obj.methodsArray) {
        const other = theirs.methods[method.name];
        const shape = (m: protobuf.Method): string =>
          `(${m.requestStream ? 'stream ' : ''}${m.resolvedRequestType!.fullName}) returns (${m.responseStream ? 'stream ' : ''}${m.resolvedResponseType!.fullName})`;
        if (!other) problems.push(`rpc ${name}.${method.name}: not upstream`);
        else if (shape(method) !== shape(other)) problems.push(`rpc ${name}.${method.name}: ours ${shape(method)}, upstream ${shape(other)}`);
      }
    }
  });
  return problems;
}

/** Loads our proto files after applying text replacements, each of which must match exactly once. */
function loadMutated(replacements: ReadonlyArray<readonly [file: string, from: string, to: string]>): protobuf.Root {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vipd-proto-'));
  try {
    for (const file of GOBGP_PROTO_FILES) {
      let text = fs.readFileSync(path.join(gobgpProtoDir(), file), 'utf8');
      for (const [target, from, to] of replacements) {
        if (target !== file) continue;
        assert.equal(text.split(from).length, 2, `mutation anchor ${JSON.stringify(from)} must occur once in ${file}`);
        text = text.replace(from, to);
      }
      fs.writeFileSync(path.join(dir, file), text);
    }
    return loadGobgpRoot(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('proto/ against upstream GoBGP', () => {
  // CI must run this: a missing prerequisite fails with the reason instead of skipping.
  before(() => {
    if (upstreamMissing) throw new Error(upstreamMissing);
  });
  const upstream = (): protobuf.Root => loadGobgpRoot(UPSTREAM_DIR);

  test('every message, field, enum value and RPC of ours matches upstream', () => {
    assert.deepEqual(compareWithUpstream(loadGobgpRoot(gobgpProtoDir()), upstream()), []);
  });

  test('ours defines what vipd uses', () => {
    const ours = loadGobgpRoot(gobgpProtoDir());
    const service = ours.lookupService('apipb.GobgpApi');
    for (const rpc of ['AddPath', 'DeletePath', 'ListPath', 'ListPeer', 'WatchEvent', 'GetBgp']) assert.ok(service.methods[rpc], `rpc ${rpc}`);
    for (const message of [
      'OriginAttribute',
      'NextHopAttribute',
      'AsPathAttribute',
      'AsSegment',
      'MultiExitDiscAttribute',
      'LocalPrefAttribute',
      'CommunitiesAttribute',
      'MpReachNLRIAttribute',
      'IPAddressPrefix',
      'Path',
      'Destination',
      'Family',
      'Peer',
    ]) {
      assert.ok(ours.lookupType(`apipb.${message}`), message);
    }
    assert.equal(ours.lookupType('apipb.Path').fields.nlri!.resolvedType!.fullName, '.google.protobuf.Any');
  });

  // Each case changes one thing the comparison must catch; together they show it can fail.
  const mutations: ReadonlyArray<{ name: string; file: string; from: string; to: string; expect: RegExp }> = [
    { name: 'field number', file: 'attribute.proto', from: 'uint32 med = 1;', to: 'uint32 med = 2;', expect: /MultiExitDiscAttribute\.med: ours "singular uint32 = 2", upstream "singular uint32 = 1"/ },
    { name: 'scalar type', file: 'attribute.proto', from: 'string next_hop = 1;', to: 'bytes next_hop = 1;', expect: /NextHopAttribute\.next_hop: ours "singular bytes = 1"/ },
    { name: 'signedness', file: 'gobgp.proto', from: 'int32 listen_port = 3;', to: 'uint32 listen_port = 3;', expect: /Global\.listen_port/ },
    { name: 'message type', file: 'gobgp.proto', from: 'Family family = 9;', to: 'TableLookupPrefix family = 9;', expect: /Path\.family: ours "singular \.apipb\.TableLookupPrefix = 9"/ },
    { name: 'repeated', file: 'attribute.proto', from: 'repeated uint32 communities = 1;', to: 'uint32 communities = 1;', expect: /CommunitiesAttribute\.communities/ },
    { name: 'map', file: 'attribute.proto', from: 'repeated uint32 communities = 1;', to: 'map<uint32, uint32> communities = 1;', expect: /CommunitiesAttribute\.communities: ours "map<uint32, uint32> = 1"/ },
    { name: 'oneof membership', file: 'gobgp.proto', from: 'oneof event {\n    PeerEvent peer = 2;\n  }', to: 'PeerEvent peer = 2;', expect: /WatchEventResponse\.peer: ours "singular \.apipb\.WatchEventResponse\.PeerEvent = 2", upstream ".* in oneof event"/ },
    { name: 'field name', file: 'gobgp.proto', from: 'string neighbor_ip = 15;', to: 'string neighbor_address = 15;', expect: /Path\.neighbor_address: not upstream/ },
    { name: 'enum value', file: 'gobgp.proto', from: 'ESTABLISHED = 6;', to: 'ESTABLISHED = 7;', expect: /PeerState\.SessionState\.ESTABLISHED: ours 7, upstream 6/ },
    { name: 'response streaming', file: 'gobgp.proto', from: 'returns (stream ListPathResponse)', to: 'returns (ListPathResponse)', expect: /rpc \.apipb\.GobgpApi\.ListPath: ours \(\.apipb\.ListPathRequest\) returns \(\.apipb\.ListPathResponse\)/ },
    { name: 'request type', file: 'gobgp.proto', from: 'rpc DeletePath(DeletePathRequest)', to: 'rpc DeletePath(AddPathRequest)', expect: /rpc \.apipb\.GobgpApi\.DeletePath/ },
    { name: 'invented message', file: 'attribute.proto', from: 'message LocalPrefAttribute', to: 'message LocalPreferenceAttribute', expect: /message \.apipb\.LocalPreferenceAttribute: not upstream/ },
  ];
  for (const m of mutations) {
    test(`a differing ${m.name} is reported`, () => {
      const problems = compareWithUpstream(loadMutated([[m.file, m.from, m.to]]), upstream());
      assert.ok(
        problems.some((p) => m.expect.test(p)),
        `expected a problem matching ${m.expect}, got ${JSON.stringify(problems)}`,
      );
    });
  }
});
