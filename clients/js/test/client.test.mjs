// The client against a real `switchboard serve` (started here): run with
//   node --experimental-websocket --test clients/js/test/*.test.mjs
// SWITCHBOARD_BIN names the binary (default .build/debug/switchboard from the repository root).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { Switchboard, SwitchboardError, ClientErrors, reconnectDelay } from "../switchboard.js";
import path from "node:path";
import { WebSocket, root, sign as signWith, next as nextWithin, startServer as serve } from "./support.mjs";

const secret = "node-client-test-secret-of-at-least-32-bytes";
let server;
let url;

const sign = (claims) => signWith(secret, claims);
const now = () => Math.floor(Date.now() / 1000);
const token = (user, ttl = 3600) => sign({ sub: user, exp: now() + ttl });
const next = (client, event, predicate, ms = 15000) => nextWithin(client, event, predicate, ms);

function client(options = {}) {
  return new Switchboard(url, {
    WebSocket, getToken: () => token("ada"), minReconnectDelay: 50, maxReconnectDelay: 500, ...options,
  });
}

/** Starts `switchboard serve` with this file's token secret. */
const startServer = (extra = []) => serve(["--token-secret", secret, "--refresh-notice", "2", ...extra]);

before(async () => {
  ({ process: server, address: url } = await startServer());
});

after(() => server?.kill("SIGTERM"));

test("publishes, receives and rejects with typed errors", async () => {
  const ada = client();
  await ada.connect();
  assert.equal(ada.user, "ada");
  await ada.subscribe("chat:one");
  const received = next(ada, "publication", (p) => p.channel === "chat:one");
  const { offset } = await ada.publish("chat:one", { text: "hello" });
  const publication = await received;
  assert.deepEqual(publication.data, { text: "hello" });
  assert.equal(publication.offset, offset);
  assert.equal(publication.user, "ada");
  const presence = await ada.presence("chat:one");
  assert.equal(presence.members[0].user, "ada");
  await assert.rejects(ada.subscribe("nowhere:x"), (error) => error instanceof SwitchboardError && error.code === 102);
  await assert.rejects(ada.subscribe("chat:one"), (error) => error.code === 107);
  ada.disconnect();
});

test("a dropped connection reconnects and recovers what it missed, once each", async () => {
  const reader = client();
  const writer = new Switchboard(url, { WebSocket, token: token("bob") });
  await Promise.all([reader.connect(), writer.connect()]);
  await reader.subscribe("chat:recovery");
  const first = next(reader, "publication", (p) => p.data.n === 0);
  await writer.publish("chat:recovery", { n: 0 });
  await first;
  const seen = [];
  reader.on("publication", (p) => seen.push(p.data.n));
  const recovered = next(reader, "recovered", (r) => r.channel === "chat:recovery");
  reader.dropConnection();
  assert.equal(reader.state, "disconnected");
  for (const n of [1, 2, 3]) await writer.publish("chat:recovery", { n });
  assert.deepEqual(await recovered, { channel: "chat:recovery", recovered: true });
  const last = next(reader, "publication", (p) => p.data.n === 4);
  await writer.publish("chat:recovery", { n: 4 });
  await last;
  assert.deepEqual(seen, [1, 2, 3, 4]);
  reader.disconnect();
  writer.disconnect();
});

test("the token is refreshed before it expires; the connection outlives the first token", async () => {
  let issued = 0;
  const ada = client({ getToken: () => { issued += 1; return token("ada", 4); } });
  await ada.connect();
  const disconnected = [];
  ada.on("disconnected", (event) => disconnected.push(event));
  await new Promise((resolve) => setTimeout(resolve, 6000));
  assert.equal(ada.state, "connected");
  assert.ok(issued >= 2, `getToken called ${issued} times`);
  assert.deepEqual(disconnected, []);
  await ada.ping();
  ada.disconnect();
});

test("a refused token is final: no reconnect", async () => {
  const forged = new Switchboard(url, { WebSocket, token: sign({ sub: "eve", exp: now() + 60 }).slice(0, -4) + "AAAA" });
  const closed = next(forged, "disconnected");
  const connecting = forged.connect();
  const event = await closed;
  await assert.rejects(connecting, (error) => error.code === ClientErrors.CLOSED);
  assert.equal(event.code, 4003);
  assert.equal(event.reconnect, false);
  await assert.rejects(forged.ping(), (error) => error.code === ClientErrors.CLOSED);
});

test("a command after disconnect() rejects with CLOSED, as docs/clients.md says; before connect() with DISCONNECTED", async () => {
  const ada = new Switchboard(url, { WebSocket, token: token("ada") });
  await assert.rejects(ada.ping(), (error) => error.code === ClientErrors.DISCONNECTED);
  await ada.connect();
  await ada.ping();
  ada.disconnect();
  await assert.rejects(ada.ping(), (error) => error.code === ClientErrors.CLOSED);
  await assert.rejects(ada.subscribe("chat:after"), (error) => error.code === ClientErrors.CLOSED);
  await assert.rejects(ada.publish("chat:after", 1), (error) => error.code === ClientErrors.CLOSED);
});

test("commands while disconnected wait (bounded) or reject, as configured", async () => {
  const unreachable = "ws://127.0.0.1:9/ws";
  const waiting = new Switchboard(unreachable, { WebSocket, commandTimeout: 300, minReconnectDelay: 50, maxReconnectDelay: 100 });
  waiting.connect();
  await assert.rejects(waiting.ping(), (error) => error.code === ClientErrors.TIMEOUT);
  waiting.disconnect();
  const rejecting = new Switchboard(unreachable, { WebSocket, whileDisconnected: "reject" });
  rejecting.connect();
  await assert.rejects(rejecting.ping(), (error) => error.code === ClientErrors.DISCONNECTED);
  rejecting.disconnect();
});

test("backoff is full jitter under a growing ceiling and honours the server's hint", () => {
  const options = { minReconnectDelay: 100, maxReconnectDelay: 5000 };
  assert.equal(reconnectDelay(0, options, 0, () => 0.999), 99.9);
  assert.equal(reconnectDelay(3, options, 0, () => 0.5), 400);
  assert.equal(reconnectDelay(40, options, 0, () => 0.5), 2500);
  assert.equal(reconnectDelay(0, options, 0, () => 0), 0);
  assert.equal(reconnectDelay(0, options, 3721, () => 0.5), 3721);
  const delays = Array.from({ length: 200 }, () => reconnectDelay(4, options));
  assert.ok(delays.every((d) => d >= 0 && d < 1600));
  assert.ok(new Set(delays.map((d) => Math.floor(d / 100))).size > 8, "delays are spread, not fixed");
});

test("a silent server is noticed without waiting for TCP: the client probes, drops and reconnects", async () => {
  const silent = await startServer();
  try {
    const ada = new Switchboard(silent.address, {
      WebSocket, getToken: () => token("ada"), deadAfter: 1000, commandTimeout: 700, minReconnectDelay: 50,
      maxReconnectDelay: 200,
    });
    await ada.connect();
    const dropped = next(ada, "disconnected", () => true, 10000);
    silent.process.kill("SIGSTOP"); // alive for TCP, but nothing comes back
    const event = await dropped;
    assert.equal(event.reconnect, true);
    const back = next(ada, "connected", () => true, 20000);
    silent.process.kill("SIGCONT");
    await back;
    await ada.ping();
    ada.disconnect();
  } finally {
    silent.process.kill("SIGCONT");
    silent.process.kill("SIGTERM");
  }
});

test("subscribing before the connection is up waits for it, once; an unsubscribed channel stays gone", async () => {
  const ada = client();
  const errors = [];
  ada.on("error", (error) => errors.push(error));
  ada.connect();
  const early = ada.subscribe("chat:early"); // recorded, sent once connected
  const left = ada.subscribe("chat:left");
  await assert.rejects(ada.unsubscribe("chat:left").then(() => left), (error) => error.code === ClientErrors.CLOSED);
  const reply = await early;
  assert.equal(typeof reply.offset, "number");
  assert.deepEqual(ada.position("chat:left"), null);
  const recovered = next(ada, "recovered", (r) => r.channel === "chat:early");
  ada.dropConnection();
  assert.equal((await recovered).recovered, true); // chat keeps history: nothing was missed, nothing lost
  assert.deepEqual(errors, []);
  assert.equal(ada.position("chat:left"), null);
  ada.disconnect();
});

test("channels the server subscribed (a token's channels) come back with the connect, not as duplicates", async () => {
  const bob = new Switchboard(url, {
    WebSocket, getToken: () => sign({ sub: "bob", exp: now() + 3600, channels: ["chat:news"] }),
    minReconnectDelay: 50, maxReconnectDelay: 200,
  });
  const errors = [];
  bob.on("error", (error) => errors.push(error));
  const subscribed = next(bob, "subscribed", (s) => s.channel === "chat:news");
  await bob.connect();
  await subscribed;
  const recovered = next(bob, "recovered", (r) => r.channel === "chat:news");
  bob.dropConnection();
  assert.deepEqual(await recovered, { channel: "chat:news", recovered: true });
  assert.deepEqual(errors, []);
  assert.equal(bob.position("chat:news").subscribed, true);
  bob.disconnect();
});

/**
 * The application's backend for `rpc`, on a free loopback port: POST /rpc echoes the call's data and method;
 * method "fail" answers an application error (1001). Every request body it got is in `calls`.
 */
async function startBackend() {
  const calls = [];
  const backend = createServer((request, response) => {
    let body = "";
    request.on("data", (chunk) => { body += chunk; });
    request.on("end", () => {
      if (request.method !== "POST" || request.url !== "/rpc") {
        response.writeHead(404).end();
        return;
      }
      const call = JSON.parse(body);
      calls.push(call);
      const answer = call.method === "fail"
        ? { error: { code: 1001, message: "nope" } }
        : { result: { data: { echo: call.data, method: call.method } } };
      response.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(answer));
    });
  });
  await new Promise((resolve) => backend.listen(0, "127.0.0.1", resolve));
  return { backend, calls, url: `http://127.0.0.1:${backend.address().port}/rpc` };
}

test("rpc goes through the application's backend: its data comes back, its errors reject with their codes", async () => {
  const { backend, calls, url: rpcURL } = await startBackend();
  let proxied;
  let ada;
  try {
    proxied = await startServer(["--proxy-rpc-url", rpcURL]);
    ada = new Switchboard(proxied.address, { WebSocket, getToken: () => token("ada") });
    await ada.connect();
    assert.deepEqual(await ada.rpc("getProfile", { id: 7 }), { echo: { id: 7 }, method: "getProfile" });
    const bare = await ada.rpc("getProfile");
    assert.equal(bare.method, "getProfile");
    assert.equal(bare.echo ?? null, null); // no data sent: none (or null) reached the backend
    assert.equal(calls[0].method, "getProfile");
    assert.deepEqual(calls[0].data, { id: 7 });
    assert.equal(calls[0].user, "ada");
    assert.equal(calls[0].transport, "websocket");
    assert.equal(calls[0].client, ada.clientId);
    await assert.rejects(ada.rpc("fail", { id: 7 }), (error) => error instanceof SwitchboardError && error.code === 1001);
    await ada.ping(); // an error reply leaves the connection up
  } finally {
    ada?.disconnect();
    proxied?.process.kill("SIGTERM");
    backend.closeAllConnections();
    backend.close();
  }
});

test("rpc on a server without a backend for it is refused with 104", async () => {
  const ada = client();
  await ada.connect();
  await assert.rejects(ada.rpc("getProfile"), (error) => error instanceof SwitchboardError && error.code === 104);
  ada.disconnect();
});

test("a publish repeated with its idempotency key publishes nothing and answers the first one's offset", async () => {
  const ada = client();
  await ada.connect();
  await ada.subscribe("chat:idempotent");
  const seen = [];
  ada.on("publication", (p) => { if (p.channel === "chat:idempotent") seen.push(p.data.n); });
  const first = await ada.publish("chat:idempotent", { n: 1 }, { idempotencyKey: "order-1" });
  const again = await ada.publish("chat:idempotent", { n: 1 }, { idempotencyKey: "order-1" });
  assert.equal(again.offset, first.offset);
  const last = next(ada, "publication", (p) => p.channel === "chat:idempotent" && p.data.n === 2);
  const other = await ada.publish("chat:idempotent", { n: 2 }, { idempotencyKey: "order-2" });
  assert.equal(other.offset, first.offset + 1);
  await last;
  assert.deepEqual(seen, [1, 2]);
  const { publications } = await ada.history("chat:idempotent");
  assert.deepEqual(publications.map((p) => p.data.n), [1, 2]);
  ada.disconnect();
});

test("the README's size of the client is the file's (within 1 KB)", async () => {
  const { readFile } = await import("node:fs/promises");
  const readme = await readFile(path.join(root, "clients/js/README.md"), "utf8");
  const claimed = Number(/(\d+(?:\.\d+)?) KB as written/.exec(readme)?.[1]);
  const actual = (await readFile(path.join(root, "clients/js/switchboard.js"))).length / 1000;
  assert.ok(Math.abs(claimed - actual) <= 1, `README says ${claimed} KB, the file is ${actual} KB`);
});
