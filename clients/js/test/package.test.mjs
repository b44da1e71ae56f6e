// clients/js as a package, as a bundler or Node takes it (no server): its package.json's exports lead to the
// client and its types, by its own name and from another project's node_modules. Run with
//   node --test clients/js/test/
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, mkdir, readFile, rm, stat, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { fileURLToPath } from "node:url";
import path from "node:path";
import { promisify } from "node:util";
import * as direct from "../switchboard.js";

const here = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const manifest = JSON.parse(await readFile(path.join(here, "package.json"), "utf8"));

test("package.json: an ES module without side effects whose exports name the client and its types, all packed", async () => {
  assert.equal(manifest.type, "module");
  assert.equal(manifest.sideEffects, false);
  const entry = manifest.exports["."];
  assert.equal(Object.keys(entry)[0], "types", "types first, as TypeScript reads conditions in order");
  assert.equal(entry.types, manifest.types);
  assert.equal(entry.import, "./switchboard.js");
  assert.equal(entry.default, "./switchboard.js");
  for (const file of [entry.types, entry.import, manifest.main]) {
    assert.ok(manifest.files.includes(file.replace(/^\.\//, "")), `${file} is in files`);
    assert.ok((await stat(path.join(here, file))).isFile(), `${file} exists`);
  }
  assert.ok(manifest.scripts.test);
  // Every export of the module is declared in the types.
  const types = await readFile(path.join(here, entry.types), "utf8");
  for (const name of Object.keys(direct)) {
    assert.match(types, new RegExp(`export declare (class|const|function) ${name}\\b`), `${name} is typed`);
  }
});

test("the package's own name resolves (through exports) to the very module of the file", async () => {
  const byName = await import(manifest.name);
  assert.equal(byName.Switchboard, direct.Switchboard);
  assert.deepEqual(Object.keys(byName).sort(), ["ClientErrors", "Switchboard", "SwitchboardError", "reconnectDelay"]);
});

test("another project imports it from node_modules (a link, as npm link or a workspace makes) without side effects", async () => {
  const project = await mkdtemp(path.join(tmpdir(), "switchboard-client-"));
  try {
    const scope = path.join(project, "node_modules", ...manifest.name.split("/").slice(0, -1));
    await mkdir(scope, { recursive: true });
    await symlink(here, path.join(project, "node_modules", manifest.name), "dir");
    await writeFile(path.join(project, "package.json"), JSON.stringify({ name: "consumer", type: "module", private: true }));
    await writeFile(path.join(project, "main.js"), `
      const before = Object.getOwnPropertyNames(globalThis).join();
      const client = await import(${JSON.stringify(manifest.name)});
      const after = Object.getOwnPropertyNames(globalThis).join();
      const sb = new client.Switchboard("ws://127.0.0.1:9/ws", { WebSocket: class {} });
      console.log(JSON.stringify({
        exports: Object.keys(client).sort(), globalsUntouched: before === after, state: sb.state,
        timeout: client.ClientErrors.TIMEOUT, resolved: import.meta.resolve(${JSON.stringify(manifest.name)}),
      }));
    `);
    const { stdout } = await promisify(execFile)(process.execPath, ["main.js"], { cwd: project });
    const result = JSON.parse(stdout);
    assert.deepEqual(result.exports, ["ClientErrors", "Switchboard", "SwitchboardError", "reconnectDelay"]);
    assert.equal(result.globalsUntouched, true);
    assert.equal(result.state, "disconnected");
    assert.equal(result.timeout, -1);
    assert.match(result.resolved, /switchboard\.js$/);
  } finally {
    await rm(project, { recursive: true, force: true });
  }
});
