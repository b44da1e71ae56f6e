// What the tests against a real `switchboard serve` share: the binary (SWITCHBOARD_BIN, default
// .build/debug/switchboard from the repository root), a WebSocket for Node, tokens, waiting for an event,
// and starting a server on a free port.
import { spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

// Node 20 has a WebSocket behind --experimental-websocket; without it, Debian's node-ws package.
export const WebSocket = globalThis.WebSocket ?? createRequire(import.meta.url)("ws");

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../../..");
export const binary = process.env.SWITCHBOARD_BIN ?? path.join(root, ".build/debug/switchboard");

/** Signs `claims` as an HS256 token with `secret`. */
export function sign(secret, claims) {
  const part = (object) => Buffer.from(JSON.stringify(object)).toString("base64url");
  const body = `${part({ alg: "HS256", typ: "JWT" })}.${part(claims)}`;
  return `${body}.${createHmac("sha256", secret).update(body).digest("base64url")}`;
}

/** Resolves with the first payload of `event` that satisfies `predicate`, or rejects after `ms`. */
export function next(client, event, predicate = () => true, ms = 15000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`no ${event} within ${ms} ms`)); }, ms);
    const off = client.on(event, (payload) => {
      if (!predicate(payload)) return;
      clearTimeout(timer);
      off();
      resolve(payload);
    });
  });
}

/** Starts `switchboard serve` on a free port with `args`; resolves with its process and WebSocket URL. */
export async function startServer(args) {
  const process = spawn(binary, ["serve", "--port", "0", "--no-api", "--log-level", "warning", ...args]);
  const address = await new Promise((resolve, reject) => {
    let output = "";
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${output}`)), 30000);
    process.stdout.on("data", (chunk) => {
      output += chunk;
      const match = output.match(/listening on (ws:\/\/\S+)/);
      if (match) { clearTimeout(timer); resolve(match[1]); }
    });
    process.on("exit", (code) => reject(new Error(`serve exited with ${code}: ${output}`)));
  });
  return { process, address };
}
