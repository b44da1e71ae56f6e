// The client's frames for `rpc` and an idempotent `publish`, against a scripted socket, and its HTTP transport
// and the fallback to it, against a scripted fetch (no server): run with
//   node --test clients/js/test/
import { test } from "node:test";
import assert from "node:assert/strict";
import { Switchboard, SwitchboardError, ClientErrors } from "../switchboard.js";

/**
 * A WebSocket stand-in: opens at once, records every frame the client sends and answers each command with
 * what `answer(command)` returns (`{ok}` or `{error}`; `connect` is accepted unless `answer` says otherwise).
 */
function scriptedSocket(answer) {
  const sent = [];
  class ScriptedSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      setTimeout(() => {
        this.readyState = 1;
        this.onopen?.();
      });
    }

    send(text) {
      const command = JSON.parse(text);
      sent.push(command);
      const reply = answer(command) ?? (command.cmd === "connect" ? { ok: { client: "0-1", user: "ada" } } : { ok: {} });
      setTimeout(() => this.onmessage?.({ data: JSON.stringify({ id: command.id, ...reply }) }));
    }

    close() {
      this.readyState = 3;
    }
  }
  return { WebSocket: ScriptedSocket, sent };
}

/** A connected client over a scripted socket, and the commands it sent after `connect`. */
async function connected(answer = () => undefined) {
  const { WebSocket, sent } = scriptedSocket(answer);
  const client = new Switchboard("ws://scripted/ws", { WebSocket, token: "t", commandTimeout: 2000 });
  await client.connect();
  const commands = () => sent.filter((command) => command.cmd !== "connect").map(({ id, ...rest }) => rest);
  return { client, commands };
}

test("publish sends idempotency_key only when given one", async () => {
  const { client, commands } = await connected((command) => command.cmd === "publish" ? { ok: { offset: 7 } } : undefined);
  try {
    assert.deepEqual(await client.publish("chat:a", { text: "hi" }), { offset: 7 });
    assert.deepEqual(await client.publish("chat:a", [1], { idempotencyKey: "order-42" }), { offset: 7 });
    assert.deepEqual(await client.publish("chat:a", null, {}), { offset: 7 });
    assert.deepEqual(commands(), [
      { cmd: "publish", channel: "chat:a", data: { text: "hi" } },
      { cmd: "publish", channel: "chat:a", data: [1], idempotency_key: "order-42" },
      { cmd: "publish", channel: "chat:a", data: null },
    ]);
  } finally {
    client.disconnect();
  }
});

test("rpc sends method and data, resolves with the reply's data, undefined without one", async () => {
  const { client, commands } = await connected((command) => {
    if (command.cmd !== "rpc") return undefined;
    return command.method === "none" ? { ok: {} } : { ok: { data: { echo: command.data ?? null } } };
  });
  try {
    assert.deepEqual(await client.rpc("getProfile", { id: 1 }), { echo: { id: 1 } });
    assert.deepEqual(await client.rpc("getProfile"), { echo: null });
    assert.deepEqual(await client.rpc("getProfile", false), { echo: false }); // falsy data is still sent
    assert.equal(await client.rpc("none", 0), undefined);
    assert.deepEqual(commands(), [
      { cmd: "rpc", method: "getProfile", data: { id: 1 } },
      { cmd: "rpc", method: "getProfile" },
      { cmd: "rpc", method: "getProfile", data: false },
      { cmd: "rpc", method: "none", data: 0 },
    ]);
  } finally {
    client.disconnect();
  }
});

test("an rpc error reply rejects with a SwitchboardError carrying its code and message", async () => {
  const { client } = await connected((command) => {
    if (command.cmd !== "rpc") return undefined;
    const code = Number(command.method.slice("fail".length));
    return { error: { code, message: code === 1001 ? "nope" : "temporarily unavailable" } };
  });
  try {
    await assert.rejects(client.rpc("fail1001", {}), (error) =>
      error instanceof SwitchboardError && error.code === 1001 && error.message === "nope");
    await assert.rejects(client.rpc("fail110"), (error) => error instanceof SwitchboardError && error.code === 110);
  } finally {
    client.disconnect();
  }
});

/**
 * A scripted server for the HTTP transport, as `fetch`: a GET gets an event stream that starts with the
 * session push (cut into awkward pieces: mid-line, a CRLF split between chunks, a ping comment); a POST is
 * recorded, answered 202 (once `gate`, when set, resolves) and each of its commands answered down the
 * latest stream with what `answer(command)` returns (`connect` accepted, the rest `{ok:{}}`, unless told).
 * A body longer than `maxBody` is answered 413, as the server does past its message size.
 */
function scriptedHttp(answer = () => undefined, { maxBody = Infinity, streaming = true } = {}) {
  const encoder = new TextEncoder();
  const posts = [];
  const streams = [];
  const scripted = { posts, streams, gate: null, EventSources: [] };
  // An EventSource over the same streams, for a fetch that cannot stream (`streaming: false`).
  scripted.EventSource = class {
    constructor(url, init) {
      scripted.EventSources.push({ url, init });
      let pending = "";
      const stream = {
        url,
        push: (text) => {
          const events = (pending + text.replace(/\r\n?/g, "\n")).split("\n\n");
          pending = events.pop();
          for (const event of events) {
            const data = event.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trimStart());
            if (data.length) setTimeout(() => this.onmessage?.({ data: data.join("\n") }));
          }
        },
        end: () => setTimeout(() => this.onerror?.({})),
      };
      streams.push(stream);
      setTimeout(() => stream.push(`data: {"push":"session","session":"s${streams.length}-secret"}\n\n`));
    }

    close() {}
  };
  scripted.fetch = async function fetch(url, init = {}) {
    // A browser's fetch throws "Illegal invocation" when called as a method of another object.
    if (this !== undefined && this !== globalThis) throw new TypeError("Illegal invocation");
    if ((init.method ?? "GET") === "GET" && !streaming) {
      return { ok: true, status: 200, headers: new Headers({ "Content-Type": "text/event-stream" }), body: null };
    }
    if ((init.method ?? "GET") === "GET") {
      let controller;
      const body = new ReadableStream({ start(c) { controller = c; } });
      const stream = {
        url,
        push: (text) => { try { controller.enqueue(encoder.encode(text)); } catch { /* closed */ } },
        end: () => { try { controller.close(); } catch { /* closed */ } },
      };
      init.signal?.addEventListener("abort", () => { try { controller.error(new Error("aborted")); } catch { /* closed */ } });
      const session = `s${streams.length + 1}-secret`;
      streams.push(stream);
      setTimeout(() => {
        stream.push('data: {"push":"sess');
        stream.push(`ion","session":"${session}"}\r`);
        stream.push("\n\r\n: ping\n\n");
      });
      return new Response(body, { headers: { "Content-Type": "text/event-stream; charset=utf-8" } });
    }
    posts.push({ url, body: init.body, type: init.headers["Content-Type"] });
    if (scripted.gate) await scripted.gate;
    if (init.body.length > maxBody) {
      return new Response('{"error":{"code":413,"message":"body too large"}}', { status: 413 });
    }
    const stream = streams.at(-1);
    for (const line of init.body.split("\n")) {
      const command = JSON.parse(line);
      const reply = answer(command) ?? (command.cmd === "connect" ? { ok: { client: "0-1", user: "ada" } } : { ok: {} });
      stream.push(`data: ${JSON.stringify({ id: command.id, ...reply })}\n\n`);
    }
    return new Response('{"ok":true}', { status: 202, headers: { "Content-Type": "application/json" } });
  };
  return scripted;
}

/** A WebSocket that never works: refused (an error, then a close, before opening; with `closes: false` the
 *  error alone, as Node 20's does, which also fires it from inside close()), or `silent` (opens, never
 *  answers). */
function brokenSocket({ silent = false, closes = true } = {}) {
  const made = [];
  class BrokenSocket {
    constructor(url) {
      made.push(url);
      this.readyState = 0;
      setTimeout(() => {
        if (this.readyState === 3) return;
        if (silent) {
          this.readyState = 1;
          this.onopen?.();
        } else {
          if (closes) this.readyState = 3;
          this.onerror?.({});
          if (closes) this.onclose?.({ code: 1006, reason: "" });
        }
      });
    }

    send() {}

    close() {
      const connecting = this.readyState === 0;
      this.readyState = 3;
      if (connecting && !closes) this.onerror?.({});
    }
  }
  return { WebSocket: BrokenSocket, made };
}

const commandsOf = (posts) => posts.map((post) => post.body.split("\n").map((line) => JSON.parse(line)));

test("the HTTP transport: commands of one tick in one POST, one POST at a time, in order, to the session", async () => {
  const http = scriptedHttp((command) => command.cmd === "publish" ? { ok: { offset: command.data } } : undefined);
  const client = new Switchboard("ws://scripted:8080/realtime?user=ada", {
    transports: ["http-stream"], fetch: http.fetch, token: "t", commandTimeout: 2000,
  });
  const changes = [];
  client.on("transport", (change) => changes.push(change));
  try {
    await client.connect();
    assert.equal(client.transport, "http-stream");
    assert.deepEqual(changes, [{ transport: "http-stream", previous: null }]);
    assert.equal(http.streams[0].url, "http://scripted:8080/http-stream?user=ada");
    assert.deepEqual(await Promise.all([1, 2, 3].map((n) => client.publish("chat:a", n))), [1, 2, 3].map((offset) => ({ offset })));
    // While a POST is out, what is sent waits for it and goes in the next one.
    let open;
    http.gate = new Promise((resolve) => { open = resolve; });
    const first = client.publish("chat:a", 4);
    await new Promise((resolve) => setTimeout(resolve, 20));
    const later = [client.publish("chat:a", 5), client.ping()];
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.equal(http.posts.length, 3, "the next POST waits for the one out");
    http.gate = null;
    open();
    assert.deepEqual(await first, { offset: 4 });
    await Promise.all(later);
    const sent = commandsOf(http.posts).map((batch) => batch.map(({ cmd, data }) => (cmd === "publish" ? data : cmd)));
    assert.deepEqual(sent, [["connect"], [1, 2, 3], [4], [5, "ping"]]);
    for (const post of http.posts) {
      assert.equal(post.url, "http://scripted:8080/http-stream?session=s1-secret");
      assert.equal(post.type, "text/plain;charset=UTF-8");
    }
  } finally {
    client.disconnect();
  }
});

test("a refused WebSocket falls back to the HTTP transport at once, unseen, and later connections start there", async () => {
  const http = scriptedHttp((command) => command.cmd === "subscribe"
    ? { ok: { epoch: "e1", offset: 7, ...(command.recover ? { recovered: true, publications: [] } : {}) } }
    : undefined);
  const { WebSocket, made } = brokenSocket();
  const client = new Switchboard("ws://scripted/ws", {
    WebSocket, fetch: http.fetch, token: "t", commandTimeout: 2000, minReconnectDelay: 10, maxReconnectDelay: 20,
  });
  const seen = [];
  for (const event of ["state", "disconnected", "error", "transport"]) client.on(event, (payload) => seen.push([event, payload]));
  try {
    await client.connect();
    assert.equal(made.length, 1);
    assert.equal(client.transport, "http-stream");
    assert.deepEqual(seen.map(([event, payload]) => event === "state" ? payload.state : event),
      ["connecting", "transport", "connected"]);
    await client.subscribe("chat:a");
    const recovered = new Promise((resolve) => client.on("recovered", resolve));
    http.streams[0].end(); // the session is over: a new GET, a new session, the subscription recovered
    assert.deepEqual(await recovered, { channel: "chat:a", recovered: true });
    assert.equal(made.length, 1, "no WebSocket tried again on reconnect");
    assert.equal(http.streams.length, 2);
    const resubscribe = commandsOf(http.posts).flat().find((command) => command.cmd === "subscribe" && command.recover);
    assert.deepEqual(resubscribe.recover, { offset: 7, epoch: "e1" });
    assert.ok(http.posts.at(-1).url.endsWith("?session=s2-secret"));
    assert.deepEqual(seen.filter(([event]) => event === "error"), []);
  } finally {
    client.disconnect();
  }
});

test("a WebSocket that opens and stays silent falls back after fallbackTimeout", async () => {
  const http = scriptedHttp();
  const { WebSocket, made } = brokenSocket({ silent: true });
  const client = new Switchboard("wss://scripted/ws", { WebSocket, fetch: http.fetch, token: "t", fallbackTimeout: 200 });
  const errors = [];
  client.on("error", (error) => errors.push(error));
  try {
    const started = Date.now();
    await client.connect();
    assert.ok(Date.now() - started >= 190, "waited for the WebSocket's first message");
    assert.equal(made.length, 1);
    assert.equal(client.transport, "http-stream");
    assert.equal(http.streams[0].url, "https://scripted/http-stream");
    assert.deepEqual(errors, []);
  } finally {
    client.disconnect();
  }
});

test("without a WebSocket implementation the client uses the HTTP transport; with neither it refuses", () => {
  const http = scriptedHttp();
  assert.doesNotThrow(() => new Switchboard("ws://scripted/ws", { WebSocket: null, fetch: http.fetch }));
  assert.throws(() => new Switchboard("ws://scripted/ws", { WebSocket: null, transports: ["websocket"] }), TypeError);
  assert.throws(() => new Switchboard("ws://scripted/ws", { transports: ["carrier-pigeon"] }), /unknown transport/);
});

test("after transportRetry on the fallback, a reconnect tries the WebSocket first again", async () => {
  const http = scriptedHttp();
  const { WebSocket, made } = brokenSocket();
  const client = new Switchboard("ws://scripted/ws", {
    WebSocket, fetch: http.fetch, token: "t", transportRetry: 0, minReconnectDelay: 10, maxReconnectDelay: 20,
  });
  try {
    await client.connect();
    const again = new Promise((resolve) => client.on("connected", resolve));
    http.streams[0].end();
    await again;
    assert.equal(made.length, 2, "the WebSocket was tried again");
    assert.equal(http.streams.length, 2);
    assert.equal(client.transport, "http-stream");
  } finally {
    client.disconnect();
  }
});

test("commands too large together for one POST go again one by one; one too large alone closes as 1009 would", async () => {
  const http = scriptedHttp((command) => command.cmd === "publish" ? { ok: { offset: command.data.n } } : undefined, { maxBody: 200 });
  const client = new Switchboard("ws://scripted/ws", { transports: ["http-stream"], fetch: http.fetch, token: "t" });
  try {
    await client.connect();
    const text = "x".repeat(100);
    const replies = await Promise.all([1, 2].map((n) => client.publish("chat:a", { n, text })));
    assert.deepEqual(replies, [{ offset: 1 }, { offset: 2 }]);
    assert.deepEqual(commandsOf(http.posts).map((batch) => batch.map((command) => command.data?.n ?? command.cmd)),
      [["connect"], [1, 2], [1], [2]]);
    const closed = new Promise((resolve) => client.on("disconnected", resolve));
    await assert.rejects(client.publish("chat:a", { n: 3, text: "x".repeat(300) }), (error) => error.code === ClientErrors.DISCONNECTED);
    assert.deepEqual(await closed, { code: 1009, reason: "message too big", reconnect: false });
  } finally {
    client.disconnect();
  }
});

test("where fetch cannot stream a response, EventSource reads the stream (with credentials); POSTs as before", async () => {
  const http = scriptedHttp(undefined, { streaming: false });
  const client = new Switchboard("ws://scripted/ws?user=ada", {
    transports: ["http-stream"], fetch: http.fetch, EventSource: http.EventSource, token: "t",
  });
  try {
    await client.connect();
    await client.ping();
    assert.equal(client.transport, "http-stream");
    assert.deepEqual(http.EventSources, [{ url: "http://scripted/http-stream?user=ada", init: { withCredentials: true } }]);
    assert.deepEqual(commandsOf(http.posts).map((batch) => batch.map((command) => command.cmd)), [["connect"], ["ping"]]);
    const again = new Promise((resolve) => client.on("connected", resolve));
    http.streams[0].end(); // EventSource's error: the client makes a new session itself
    await again;
    assert.equal(http.EventSources.length, 2);
  } finally {
    client.disconnect();
  }
});

test("a WebSocket whose failed opening fires an error and no close (Node 20's) falls back at once too", async () => {
  const http = scriptedHttp();
  const { WebSocket, made } = brokenSocket({ closes: false });
  const client = new Switchboard("ws://scripted/ws", { WebSocket, fetch: http.fetch, token: "t", fallbackTimeout: 60000 });
  try {
    const started = Date.now();
    await client.connect();
    assert.ok(Date.now() - started < 1000, "no wait for fallbackTimeout");
    assert.equal(made.length, 1);
    assert.equal(client.transport, "http-stream");
  } finally {
    client.disconnect();
  }
});

test("with the WebSocket alone, a failed opening that fires no close is retried with backoff, not left hanging", { timeout: 10000 }, async () => {
  const { WebSocket, made } = brokenSocket({ closes: false });
  const client = new Switchboard("ws://scripted/ws", {
    WebSocket, transports: ["websocket"], token: "t", minReconnectDelay: 10, maxReconnectDelay: 20,
  });
  const disconnected = [];
  client.on("disconnected", (event) => disconnected.push(event));
  try {
    client.connect().catch(() => {});
    while (made.length < 3) await new Promise((resolve) => setTimeout(resolve, 10));
    assert.deepEqual(disconnected[0], { code: 1006, reason: "", reconnect: true });
  } finally {
    client.disconnect();
  }
});

test("disconnect() while the WebSocket is opening falls back to nothing, even where close() reports an error at once", async () => {
  const http = scriptedHttp();
  const { WebSocket, made } = brokenSocket({ closes: false });
  const client = new Switchboard("ws://scripted/ws", { WebSocket, fetch: http.fetch, token: "t" });
  client.connect(); // with a token (no getToken), the WebSocket is made at once
  assert.equal(made.length, 1);
  client.disconnect();
  await new Promise((resolve) => setTimeout(resolve, 50));
  assert.equal(http.streams.length, 0, "no HTTP transport opened after disconnect()");
  assert.equal(client.state, "disconnected");
});

test("a POST answered 404 leaves the end to the stream: its disconnect notice is what the client follows", async () => {
  const http = scriptedHttp();
  const scripted = http.fetch;
  http.fetch = async function fetch(url, init = {}) {
    if ((init.method ?? "GET") === "POST" && init.body.includes('"publish"')) {
      // Banned while the publish was on its way: the session is gone, its notice comes down the stream.
      const stream = http.streams.at(-1);
      setTimeout(() => {
        stream.push('data: {"push":"disconnect","code":4501,"reason":"banned","reconnect":false}\n\n');
        stream.end();
      }, 50);
      return new Response('{"error":{"code":404,"message":"unknown session"}}', { status: 404 });
    }
    return scripted(url, init);
  };
  const client = new Switchboard("ws://scripted/ws", { transports: ["http-stream"], fetch: http.fetch, token: "t" });
  await client.connect();
  const disconnected = new Promise((resolve) => client.on("disconnected", resolve));
  await assert.rejects(client.publish("chat:x", 1));
  const event = await disconnected;
  assert.equal(event.code, 4501);
  assert.equal(event.reconnect, false);
  client.disconnect();
});

test("over the HTTP transport a connect reply slower than fallbackTimeout is no reason to give it up", { timeout: 15000 }, async () => {
  const http = scriptedHttp();
  const scripted = http.fetch;
  http.fetch = async function fetch(url, init = {}) {
    if ((init.method ?? "GET") === "POST" && init.body.includes('"connect"')) {
      await new Promise((resolve) => setTimeout(resolve, 150)); // a slow link, a slow connect proxy
    }
    return scripted(url, init);
  };
  const broken = brokenSocket();
  const client = new Switchboard("ws://scripted/ws", {
    WebSocket: broken.WebSocket, fetch: http.fetch, token: "t", fallbackTimeout: 100, transportRetry: Infinity,
    minReconnectDelay: 10, maxReconnectDelay: 20,
  });
  await client.connect();
  assert.equal(client.transport, "http-stream");
  // The stream drops: the reconnect starts on the HTTP transport, which answers its connect slowly again.
  const reconnected = new Promise((resolve) => client.on("connected", resolve));
  http.streams.at(-1).end();
  await reconnected;
  assert.equal(client.transport, "http-stream");
  assert.ok(http.streams.length <= 3, `${http.streams.length} streams opened`);
  client.disconnect();
});
