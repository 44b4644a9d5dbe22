// The fields in which job specs differ: specs flattened to dotted paths
// (optimizer.name, training.batch_size, ...), listed where not every spec agrees.

export function flatten(value, prefix = "", out = {}) {
  if (value && typeof value === "object" && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) flatten(inner, prefix ? `${prefix}.${key}` : key, out);
  } else {
    out[prefix] = value === undefined ? "" : JSON.stringify(value);
  }
  return out;
}

// {rows: [{path, values: [one string per spec, "" where the field is absent]}]}
export function specDiff(specs) {
  const flat = specs.map((s) => flatten(s));
  const paths = [...new Set(flat.flatMap((f) => Object.keys(f)))].sort();
  const rows = [];
  for (const path of paths) {
    const values = flat.map((f) => (path in f ? f[path] : ""));
    if (new Set(values).size > 1) rows.push({ path, values: values.map((v) => v.replace(/^"(.*)"$/, "$1")) });
  }
  // The optimizer first: it is what the course's comparison is about.
  rows.sort((a, b) => (b.path === "optimizer.name") - (a.path === "optimizer.name"));
  return { rows };
}
