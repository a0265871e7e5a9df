/**
 * A small JSON Schema (draft 7) checker for the keywords config/vipd.schema.json uses: $ref (local),
 * type, properties, required, additionalProperties, items, anyOf/oneOf/allOf, enum, const, pattern,
 * min/max (length, value, items). Enough to prove the examples validate against the committed schema in
 * an editor, without a validator dependency. Returns readable errors (`/pools/etcd/balance: ...`).
 */
export type JsonSchema = { [key: string]: any };

export function validateJsonSchema(root: JsonSchema, value: unknown): string[] {
  const errors: string[] = [];
  check(root, root, value, '', errors);
  return errors;
}

function resolve(root: JsonSchema, ref: string): JsonSchema {
  if (!ref.startsWith('#/')) throw new Error(`unsupported $ref ${ref}`);
  return ref
    .slice(2)
    .split('/')
    .reduce((node: any, part) => node?.[part.replace(/~1/g, '/').replace(/~0/g, '~')], root) as JsonSchema;
}

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

function check(root: JsonSchema, schema: JsonSchema | boolean, v: unknown, at: string, errors: string[]): void {
  if (schema === true || schema === undefined) return;
  if (schema === false) return void errors.push(`${at || '/'}: not allowed`);
  if (schema.$ref) return check(root, resolve(root, schema.$ref), v, at, errors);
  const where = at || '/';
  if (schema.type) {
    const types: string[] = Array.isArray(schema.type) ? schema.type : [schema.type];
    const t = typeOf(v);
    if (!types.includes(t) && !(t === 'integer' && types.includes('number'))) return void errors.push(`${where}: expected ${types.join('|')}, got ${t}`);
  }
  if (schema.enum && !schema.enum.some((e: unknown) => JSON.stringify(e) === JSON.stringify(v))) errors.push(`${where}: not one of ${JSON.stringify(schema.enum)}`);
  if ('const' in schema && JSON.stringify(schema.const) !== JSON.stringify(v)) errors.push(`${where}: must be ${JSON.stringify(schema.const)}`);
  for (const key of ['anyOf', 'oneOf'] as const) {
    if (!schema[key]) continue;
    const passing = (schema[key] as JsonSchema[]).filter((s) => {
      const sub: string[] = [];
      check(root, s, v, at, sub);
      return sub.length === 0;
    });
    if (passing.length === 0) errors.push(`${where}: matches none of ${key}`);
  }
  for (const s of (schema.allOf ?? []) as JsonSchema[]) check(root, s, v, at, errors);
  if (typeof v === 'string') {
    if (schema.pattern && !new RegExp(schema.pattern, 'u').test(v)) errors.push(`${where}: does not match ${schema.pattern}`);
    if (schema.minLength !== undefined && v.length < schema.minLength) errors.push(`${where}: shorter than ${schema.minLength}`);
    if (schema.maxLength !== undefined && v.length > schema.maxLength) errors.push(`${where}: longer than ${schema.maxLength}`);
  }
  if (typeof v === 'number') {
    if (schema.minimum !== undefined && v < schema.minimum) errors.push(`${where}: below ${schema.minimum}`);
    if (schema.maximum !== undefined && v > schema.maximum) errors.push(`${where}: above ${schema.maximum}`);
  }
  if (Array.isArray(v)) {
    if (schema.minItems !== undefined && v.length < schema.minItems) errors.push(`${where}: fewer than ${schema.minItems} items`);
    if (schema.items) v.forEach((item, i) => check(root, schema.items, item, `${at}/${i}`, errors));
  }
  if (typeOf(v) === 'object') {
    const obj = v as Record<string, unknown>;
    for (const key of (schema.required ?? []) as string[]) if (!(key in obj)) errors.push(`${where}: missing "${key}"`);
    const props = (schema.properties ?? {}) as Record<string, JsonSchema>;
    for (const [key, child] of Object.entries(obj)) {
      if (key in props) check(root, props[key]!, child, `${at}/${key}`, errors);
      else if (schema.additionalProperties === false) errors.push(`${where}: unknown key "${key}"`);
      else if (typeof schema.additionalProperties === 'object') check(root, schema.additionalProperties, child, `${at}/${key}`, errors);
    }
  }
}
