// The HTTP transport and the fallback to it, against a real `switchboard serve` (started here), directly and
// through a proxy that refuses WebSocket upgrades: run with
//   node --experimental-websocket --test clients/js/test/*.test.mjs
// SWITCHBOARD_BIN names the binary (default .build/debug/switchboard from the repository root).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, connect } from "node:net";
import { Switchboard, ClientErrors } from "../switchboard.js";
import { WebSocket, sign as signWith, next as nextWithin, startServer as serve } from "./support.mjs";

const secret = "node-transport-test-secret-of-at-least-32-bytes";
let server;
let url;
// Closed after the tests whatever becomes of them (a test that times out runs no `finally`).
const clients = [];
const servers = [];
const proxies = [];

const sign = (claims) => signWith(secret, claims);

const token = (user) => sign({ sub: user, exp: Math.floor(Date.now() / 1000) + 3600 });

const next = (client, event, predicate, ms = 20000) => nextWithin(client, event, predicate, ms);

function client(user, options = {}, at = url) {
  const made = new Switchboard(at, {
    WebSocket, getToken: () => token(user), minReconnectDelay: 50, maxReconnectDelay: 500, ...options,
  });
  clients.push(made);
  return made;
}

/** Starts `switchboard serve` with this file's token secret; stopped after the tests. */
async function startServer(extra = []) {
  const started = await serve(["--token-secret", secret, ...extra]);
  servers.push(started.process);
  return started;
}

/**
 * A TCP proxy in front of the server that refuses WebSocket upgrades (403), as some networks do, and passes
 * every other request through byte for byte, streamed both ways. `refusing` turns every new connection away
 * (reset at once); `dropStreams()` resets the event streams passing through, as a failing network would.
 */
async function startProxy(target) {
  const { port } = new URL(target);
  const links = new Set();
  const proxy = { refusing: false, upgradesRefused: 0, streams: 0 };
  const listener = createServer((downstream) => {
    downstream.on("error", () => {});
    if (proxy.refusing) return downstream.resetAndDestroy();
    let head = Buffer.alloc(0);
    const reading = (chunk) => {
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      downstream.off("data", reading);
      downstream.pause();
      const request = head.subarray(0, end).toString("latin1");
      if (/^upgrade:\s*websocket/im.test(request)) {
        proxy.upgradesRefused += 1;
        downstream.end("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        return;
      }
      const upstream = connect(Number(port), "127.0.0.1");
      const link = { downstream, upstream, stream: /^GET \/http-stream[?\s]/.test(request) };
      if (link.stream) proxy.streams += 1;
      links.add(link);
      const close = () => {
        links.delete(link);
        downstream.destroy();
        upstream.destroy();
      };
      upstream.on("error", close);
      upstream.on("close", close);
      downstream.on("close", close);
      upstream.write(head);
      downstream.pipe(upstream);
      upstream.pipe(downstream);
    };
    downstream.on("data", reading);
  });
  await new Promise((resolve) => listener.listen(0, "127.0.0.1", resolve));
  proxy.url = `ws://127.0.0.1:${listener.address().port}/ws`;
  proxy.dropStreams = () => {
    for (const link of links) {
      if (!link.stream) continue;
      link.downstream.resetAndDestroy();
      link.upstream.destroy();
    }
  };
  proxy.close = () => {
    for (const link of links) link.downstream.destroy();
    listener.close();
  };
  proxies.push(proxy);
  return proxy;
}

before(async () => {
  ({ process: server, address: url } = await startServer());
});

after(() => {
  for (const made of clients) made.disconnect();
  for (const proxy of proxies) proxy.close();
  for (const process of servers) process.kill("SIGTERM");
});

test("a client on the HTTP transport alone chats with one on a WebSocket, both ways, and sees its presence", { timeout: 60000 }, async () => {
  const ada = client("ada", { transports: ["http-stream"] });
  const bob = client("bob");
  try {
    await ada.connect();
    assert.equal(ada.transport, "http-stream");
    assert.equal(ada.user, "ada");
    await ada.subscribe("chat:mixed");
    const joined = next(ada, "join", (j) => j.channel === "chat:mixed" && j.info.user === "bob");
    await bob.connect();
    assert.equal(bob.transport, "websocket");
    await bob.subscribe("chat:mixed");
    await joined;
    const toBob = next(bob, "publication", (p) => p.channel === "chat:mixed" && p.data.text === "from ada");
    const { offset } = await ada.publish("chat:mixed", { text: "from ada" });
    assert.equal((await toBob).offset, offset);
    assert.equal((await toBob).user, "ada");
    const toAda = next(ada, "publication", (p) => p.channel === "chat:mixed" && p.data.text === "from bob");
    await bob.publish("chat:mixed", { text: "from bob" });
    assert.equal((await toAda).user, "bob");
    const { members } = await ada.presence("chat:mixed");
    assert.deepEqual(members.map((m) => m.user).sort(), ["ada", "bob"]);
    const { publications } = await ada.history("chat:mixed");
    assert.deepEqual(publications.map((p) => p.data.text), ["from ada", "from bob"]);
    await assert.rejects(ada.subscribe("nowhere:x"), (error) => error.code === 102);
    await ada.ping(); // an error reply leaves the session up
    const left = next(bob, "leave", (l) => l.channel === "chat:mixed" && l.info.user === "ada");
    ada.disconnect(); // the stream closes: the server ends the session and its subscriptions
    await left;
  } finally {
    ada.disconnect();
    bob.disconnect();
  }
});

test("commands sent together go up in one POST and reach the server in the order sent", { timeout: 60000 }, async () => {
  let posts = 0;
  const counting = (...request) => {
    if (request[1]?.method === "POST") posts += 1;
    return fetch(...request);
  };
  const ada = client("ada", { transports: ["http-stream"], fetch: counting });
  const bob = client("bob");
  try {
    await Promise.all([ada.connect(), bob.connect()]);
    await bob.subscribe("chat:ordered");
    const seen = [];
    const all = next(bob, "publication", (p) => {
      if (p.channel === "chat:ordered") seen.push(p.data.n);
      return seen.length === 40;
    });
    const before = posts;
    const replies = await Promise.all(Array.from({ length: 40 }, (_, n) => ada.publish("chat:ordered", { n })));
    await all;
    // Sent in one tick: one POST (two at most, should a reply's timing split them), not forty.
    assert.ok(posts - before <= 2, `${posts - before} POSTs for 40 publishes`);
    assert.deepEqual(seen, Array.from({ length: 40 }, (_, n) => n));
    assert.deepEqual(replies.map((r) => r.offset - replies[0].offset), Array.from({ length: 40 }, (_, n) => n));
  } finally {
    ada.disconnect();
    bob.disconnect();
  }
});

test("a refused WebSocket upgrade falls back by itself; a dropped stream recovers what it missed", { timeout: 60000 }, async () => {
  const proxy = await startProxy(url);
  const ada = client("ada", {}, proxy.url);
  const bob = client("bob");
  const changes = [];
  ada.on("transport", (change) => changes.push(change));
  // The fallback and the reconnects are silent: an error fails the test at once, with itself as the reason.
  let failure;
  const failed = new Promise((_, reject) => { failure = reject; });
  failed.catch(() => {});
  ada.on("error", (error) => failure(error));
  const unless = (promise) => Promise.race([promise, failed]);
  try {
    await unless(Promise.all([ada.connect(), bob.connect()]));
    assert.equal(ada.transport, "http-stream");
    assert.ok(proxy.upgradesRefused >= 1, "the WebSocket was tried first");
    assert.deepEqual(changes, [{ transport: "http-stream", previous: null }]);
    await unless(ada.subscribe("chat:fallback"));
    const first = next(ada, "publication", (p) => p.data.n === 0);
    await bob.publish("chat:fallback", { n: 0 });
    await unless(first);
    const seen = [];
    ada.on("publication", (p) => { if (p.channel === "chat:fallback") seen.push([p.data.n, p.recovered === true]); });
    const dropped = next(ada, "disconnected");
    proxy.refusing = true;
    proxy.dropStreams();
    assert.equal((await unless(dropped)).reconnect, true);
    for (const n of [1, 2, 3]) await bob.publish("chat:fallback", { n });
    const recovered = next(ada, "recovered", (r) => r.channel === "chat:fallback");
    const back = next(ada, "connected");
    proxy.refusing = false;
    await unless(back);
    assert.deepEqual(await unless(recovered), { channel: "chat:fallback", recovered: true });
    const last = next(ada, "publication", (p) => p.data.n === 4);
    await bob.publish("chat:fallback", { n: 4 });
    await unless(last);
    assert.deepEqual(seen, [[1, true], [2, true], [3, true], [4, false]]);
    assert.equal(ada.transport, "http-stream");
    assert.deepEqual(changes, [{ transport: "http-stream", previous: null }]);
    assert.ok(proxy.streams >= 2, "a new stream (session) after the drop");
  } finally {
    ada.disconnect();
    bob.disconnect();
    proxy.close();
  }
});

test("a refused token is final over the HTTP transport too: no reconnect", { timeout: 60000 }, async () => {
  const forged = client("eve", {
    transports: ["http-stream"], getToken: () => token("eve").slice(0, -4) + "AAAA",
  });
  const closed = next(forged, "disconnected");
  const connecting = forged.connect();
  const event = await closed;
  await assert.rejects(connecting, (error) => error.code === ClientErrors.CLOSED);
  assert.equal(event.code, 4003);
  assert.equal(event.reconnect, false);
});

test("with gzip on (--deflate), the stream still delivers each message as it is sent", { timeout: 60000 }, async () => {
  const gzipped = await startServer(["--deflate"]);
  const encodings = [];
  const recording = async (...request) => {
    const response = await fetch(...request);
    if (request[1]?.method !== "POST") encodings.push(response.headers.get("content-encoding"));
    return response;
  };
  const ada = client("ada", { transports: ["http-stream"], fetch: recording }, gzipped.address);
  const bob = client("bob", {}, gzipped.address);
  try {
    await Promise.all([ada.connect(), bob.connect()]);
    await ada.subscribe("chat:zipped");
    for (const n of [1, 2, 3]) {
      const arrived = next(ada, "publication", (p) => p.data.n === n, 5000);
      await bob.publish("chat:zipped", { n, text: "compressible ".repeat(40) });
      await arrived;
    }
    assert.deepEqual(encodings, ["gzip"]); // the stream was compressed, and fetch decoded it as it came
  } finally {
    ada.disconnect();
    bob.disconnect();
    gzipped.process.kill("SIGTERM");
  }
});
