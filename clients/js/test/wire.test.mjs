// The client's frames for `rpc` and an idempotent `publish`, against a scripted socket (no server): run with
//   node --test clients/js/test/
import { test } from "node:test";
import assert from "node:assert/strict";
import { Switchboard, SwitchboardError } from "../switchboard.js";

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
