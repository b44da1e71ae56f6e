// Switchboard client for browsers and Node 20+: protocol v1 (docs/PROTOCOL.md), no dependencies.
// One connection; commands as promises; reconnect with backoff and full jitter; per-channel recovery.

/** A command the server refused (its protocol code, e.g. 104) or the client gave up on (negative codes). */
export class SwitchboardError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "SwitchboardError";
    this.code = code;
  }
}

/** Codes the client itself uses; the server's are 100–118 (docs/PROTOCOL.md, "Errors"), and 1000 and up
 *  are the application's own (from its backend, through `rpc`). */
export const ClientErrors = Object.freeze({ TIMEOUT: -1, DISCONNECTED: -2, CLOSED: -3, QUEUE_FULL: -4 });

/** Close codes after which reconnecting would only repeat the failure. */
const FINAL_CLOSE_CODES = new Set([1002, 1003, 1007, 1009, 4003]);

/**
 * Backoff with full jitter: uniform in [0, min(max, min * 2^attempt)), never before the server's hint
 * (`after_ms` of a shutdown notice, itself jittered by the server).
 */
export function reconnectDelay(attempt, { minReconnectDelay, maxReconnectDelay }, afterMs = 0, random = Math.random) {
  const ceiling = Math.min(maxReconnectDelay, minReconnectDelay * 2 ** Math.min(attempt, 30));
  return Math.max(afterMs ?? 0, random() * ceiling);
}

const defaults = {
  token: undefined, // a string, or
  getToken: undefined, // async () => string: called at each (re)connect and when the server asks for a refresh
  WebSocket: globalThis.WebSocket, // Node 20: pass `ws`'s WebSocket or run with --experimental-websocket
  commandTimeout: 10000, // ms before a command without a reply rejects with TIMEOUT
  whileDisconnected: "wait", // "wait": commands wait for the connection (bounded); "reject": fail at once
  maxWaiting: 100, // commands that may wait while disconnected
  minReconnectDelay: 500, // backoff: full jitter over min(max, min * 2^attempt)
  maxReconnectDelay: 20000,
  deadAfter: 40000, // nothing from the server this long (its ping interval plus a margin): probe, then reconnect
};

export class Switchboard {
  /**
   * @param {string} url e.g. "ws://127.0.0.1:8080/ws"
   * @param {object} [options] see `defaults` above
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = { ...defaults, ...options };
    if (typeof this.options.WebSocket !== "function") {
      throw new TypeError("no WebSocket implementation: pass options.WebSocket");
    }
    this.state = "disconnected";
    this.user = null;
    this.clientId = null;
    this._listeners = new Map();
    this._socket = null;
    this._nextId = 1;
    this._pending = new Map(); // id -> {resolve, reject, timer}
    this._waiting = []; // commands queued while disconnected
    this._channels = new Map(); // channel -> {offset, epoch, subscribed}
    this._attempt = 0;
    this._reconnectTimer = null;
    this._wanted = false;
    this._closed = false; // by disconnect() or a final close: commands reject with CLOSED until connect()
    this._lastSeen = 0;
    this._watchdog = null;
    this._generation = 0; // each opening attempt; a stale one (disconnect, then connect, mid-await) gives up
  }

  // MARK: events

  /** Events: state, connected, disconnected, publication, join, leave, gap, subscribed, unsubscribed,
   *  recovered, message, error. Returns a function that removes the listener. */
  on(event, listener) {
    if (!this._listeners.has(event)) this._listeners.set(event, new Set());
    this._listeners.get(event).add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this._listeners.get(event)?.delete(listener);
  }

  _emit(event, payload) {
    for (const listener of this._listeners.get(event) ?? []) {
      try {
        listener(payload);
      } catch (error) {
        if (event !== "error") this._emit("error", error);
      }
    }
  }

  _setState(state, detail = {}) {
    if (this.state === state) return;
    this.state = state;
    this._emit("state", { state, ...detail });
  }

  // MARK: connection

  /** Connects (and keeps reconnecting until `disconnect`). Resolves once connected. */
  connect() {
    this._wanted = true;
    this._closed = false;
    clearTimeout(this._reconnectTimer);
    if (this.state === "disconnected") this._open();
    if (this.state === "connected") return Promise.resolve();
    return new Promise((resolve, reject) => {
      const offConnected = this.on("connected", () => { offConnected(); offDisconnected(); resolve(); });
      const offDisconnected = this.on("disconnected", (event) => {
        if (event.reconnect) return;
        offConnected();
        offDisconnected();
        reject(new SwitchboardError(ClientErrors.CLOSED, `closed: ${event.code} ${event.reason}`));
      });
    });
  }

  /** Closes for good: no reconnect; waiting and pending commands reject with CLOSED. */
  disconnect() {
    this._wanted = false;
    this._closed = true;
    this._generation += 1;
    for (const position of this._channels.values()) {
      for (const waiter of position.waiters?.splice(0) ?? []) {
        waiter.reject(new SwitchboardError(ClientErrors.CLOSED, "client closed"));
      }
    }
    clearTimeout(this._reconnectTimer);
    this._rejectAll(ClientErrors.CLOSED, "client closed");
    this._rejectWaiting(ClientErrors.CLOSED, "client closed");
    if (this._socket) this._socket.close(1000);
    this._socket = null;
    this._stopWatchdog();
    this._setState("disconnected", { code: 1000, reason: "client closed", reconnect: false });
  }

  async _open() {
    const generation = ++this._generation;
    this._setState("connecting");
    let token = this.options.token;
    if (this.options.getToken) {
      try {
        token = await this.options.getToken();
      } catch (error) {
        this._emit("error", error);
        return this._scheduleReconnect({ code: 0, reason: "could not get a token", reconnect: true });
      }
    }
    if (!this._wanted || generation !== this._generation) return;
    let socket;
    try {
      socket = new this.options.WebSocket(this.url);
    } catch (error) {
      this._emit("error", error);
      return this._scheduleReconnect({ code: 0, reason: String(error), reconnect: true });
    }
    this._socket = socket;
    let notice = null;
    this._lastSeen = Date.now();
    this._startWatchdog(); // also while connecting: a server that accepts TCP and then says nothing is dropped
    socket.onopen = () => {
      this._lastSeen = Date.now();
      this._handshake(token);
    };
    socket.onmessage = (event) => {
      this._lastSeen = Date.now();
      let message;
      try {
        message = JSON.parse(typeof event.data === "string" ? event.data : String(event.data));
      } catch {
        return this._emit("error", new Error("server sent a message that is not JSON"));
      }
      if (message.push === "disconnect") notice = message;
      this._received(message);
    };
    socket.onclose = (event) => {
      if (this._socket !== socket) return;
      this._socket = null;
      this._stopWatchdog();
      const code = notice?.code ?? event.code;
      const reason = notice?.reason ?? event.reason ?? "";
      const reconnect = notice ? notice.reconnect !== false : !FINAL_CLOSE_CODES.has(code);
      this._rejectAll(ClientErrors.DISCONNECTED, "connection lost");
      for (const channel of this._channels.values()) channel.subscribed = false;
      this._scheduleReconnect({ code, reason, reconnect, afterMs: notice?.after_ms });
    };
    socket.onerror = () => {}; // onclose follows with the code
  }

  /** `connect` (with the token), then resubscribe every channel, recovering from its last position. */
  async _handshake(token) {
    try {
      // Channels the server subscribed (a token's `channels`) come back with the connect: their positions
      // travel in it. The client's own subscriptions are resubscribed after it.
      const serverSide = {};
      for (const [channel, position] of this._channels) {
        if (position.serverSide && position.epoch !== undefined) {
          serverSide[channel] = { offset: position.offset, epoch: position.epoch };
        }
      }
      const reply = await this._send({
        cmd: "connect", ...(token ? { token } : {}), ...(Object.keys(serverSide).length ? { recover: serverSide } : {}),
      }, true);
      this.user = reply.user ?? null;
      this.clientId = reply.client ?? null;
      this._attempt = 0;
      this._setState("connected", { user: this.user });
      this._emit("connected", { user: this.user, client: this.clientId });
      for (const [channel, position] of this._channels) {
        if (position.serverSide) continue;
        const recover = position.epoch !== undefined ? { offset: position.offset, epoch: position.epoch } : undefined;
        this._resubscribe(channel, position, recover);
      }
      const waiting = this._waiting.splice(0);
      for (const entry of waiting) {
        clearTimeout(entry.timer);
        this._send(entry.command).then(entry.resolve, entry.reject);
      }
    } catch (error) {
      this._emit("error", error);
      // A refused token closes the connection and onclose decides about reconnecting; a server that does not
      // answer `connect` is dropped and tried again.
      if (error.code === ClientErrors.TIMEOUT) this.dropConnection();
    }
  }

  /** Subscribes `position`'s channel on a new connection; settles the callers of `subscribe` waiting for it. */
  async _resubscribe(channel, position, recover) {
    try {
      const reply = await this._send({ cmd: "subscribe", channel, ...(recover ? { recover } : {}) }, true);
      this._subscribedReply(channel, reply, recover !== undefined, position);
      for (const waiter of position.waiters?.splice(0) ?? []) waiter.resolve(reply);
    } catch (error) {
      if (error.code === ClientErrors.DISCONNECTED) return; // tried again on the next connection
      if (this._channels.get(channel) === position) this._channels.delete(channel);
      for (const waiter of position.waiters?.splice(0) ?? []) waiter.reject(error);
      this._emit("error", error);
      this._emit("unsubscribed", { channel, error });
    }
  }

  /** Applies a subscribe reply or `subscribed` push to `position` (nil: the server subscribed on its own). A
   *  reply for an entry that is gone (unsubscribed meanwhile) or replaced changes nothing. */
  _subscribedReply(channel, reply, recovering, expected) {
    let position = this._channels.get(channel);
    if (expected ? position !== expected : false) return;
    if (!position) {
      position = { serverSide: true };
      this._channels.set(channel, position);
    }
    position.subscribed = true;
    for (const publication of reply.publications ?? []) {
      this._emit("publication", { channel, ...publication, recovered: true });
    }
    position.offset = reply.offset;
    position.epoch = reply.epoch;
    if (recovering) this._emit("recovered", { channel, recovered: reply.recovered === true });
  }

  _scheduleReconnect({ code, reason, reconnect, afterMs }) {
    const again = this._wanted && reconnect;
    this._setState("disconnected", { code, reason, reconnect: again });
    this._emit("disconnected", { code, reason, reconnect: again });
    if (!again) {
      this._wanted = false;
      this._closed = true;
      this._rejectWaiting(ClientErrors.CLOSED, `closed: ${code} ${reason}`);
      for (const position of this._channels.values()) {
        for (const waiter of position.waiters?.splice(0) ?? []) {
          waiter.reject(new SwitchboardError(ClientErrors.CLOSED, `closed: ${code} ${reason}`));
        }
      }
      return;
    }
    const delay = reconnectDelay(this._attempt, this.options, afterMs);
    this._attempt += 1;
    this._reconnectTimer = setTimeout(() => {
      if (this._wanted && this.state === "disconnected") this._open();
    }, delay);
  }

  /** Nothing heard for `deadAfter`: an application ping must come back in time, or the socket is dropped. */
  _startWatchdog() {
    this._stopWatchdog();
    const period = Math.max(250, this.options.deadAfter / 4);
    this._watchdog = setInterval(() => {
      if (Date.now() - this._lastSeen < this.options.deadAfter || this.state === "disconnected") return;
      this._lastSeen = Date.now();
      if (this.state === "connecting") return this.dropConnection(); // `connect` gets its own timeout too
      this._send({ cmd: "ping" }).catch(() => this.dropConnection());
    }, period);
  }

  _stopWatchdog() {
    clearInterval(this._watchdog);
    this._watchdog = null;
  }

  /** Kills the socket without a close handshake, as a network failure would: the client reconnects and recovers. */
  dropConnection() {
    const socket = this._socket;
    if (!socket) return;
    this._socket = null;
    this._stopWatchdog();
    socket.onclose = socket.onmessage = null;
    try {
      socket.close();
    } catch {
      // already closing
    }
    this._rejectAll(ClientErrors.DISCONNECTED, "connection dropped");
    for (const channel of this._channels.values()) channel.subscribed = false;
    this._scheduleReconnect({ code: 1006, reason: "connection dropped", reconnect: true });
  }

  // MARK: messages

  _received(message) {
    if (message.id !== undefined && message.id !== null) {
      const pending = this._pending.get(message.id);
      if (!pending) return;
      this._pending.delete(message.id);
      clearTimeout(pending.timer);
      if (message.error) pending.reject(new SwitchboardError(message.error.code, message.error.message));
      else pending.resolve(message.ok ?? {});
      return;
    }
    switch (message.push) {
      case "pub": {
        const position = this._channels.get(message.channel);
        if (position && typeof message.offset === "number") position.offset = message.offset;
        this._emit("publication", message);
        break;
      }
      case "join":
      case "leave":
      case "gap":
      case "message":
        this._emit(message.push, message);
        break;
      case "subscribed":
        this._subscribedReply(message.channel, message, message.recovered !== undefined);
        this._emit("subscribed", message);
        break;
      case "unsubscribed":
        this._channels.delete(message.channel);
        this._emit("unsubscribed", message);
        break;
      case "refresh":
        this._refresh();
        break;
      default:
        break; // disconnect notices are read in onmessage; unknown pushes are for newer clients
    }
  }

  async _refresh() {
    if (!this.options.getToken) return;
    try {
      const token = await this.options.getToken();
      await this._send({ cmd: "refresh", token });
    } catch (error) {
      this._emit("error", error);
    }
  }

  /** Sends a command; `now` skips the wait-while-disconnected queue (used by the handshake itself). */
  _send(command, now = false) {
    const connected = this._socket && this._socket.readyState === 1 && (now || this.state === "connected");
    if (!connected) {
      if (this.options.whileDisconnected === "reject" || !this._wanted) return Promise.reject(this._notConnected());
      if (this._waiting.length >= this.options.maxWaiting) {
        return Promise.reject(new SwitchboardError(ClientErrors.QUEUE_FULL, "too many commands waiting"));
      }
      return new Promise((resolve, reject) => {
        const entry = { command, resolve, reject };
        entry.timer = setTimeout(() => {
          this._waiting.splice(this._waiting.indexOf(entry), 1);
          reject(new SwitchboardError(ClientErrors.TIMEOUT, `${command.cmd}: not connected in time`));
        }, this.options.commandTimeout);
        this._waiting.push(entry);
      });
    }
    const id = this._nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject(new SwitchboardError(ClientErrors.TIMEOUT, `${command.cmd}: no reply in time`));
      }, this.options.commandTimeout);
      this._pending.set(id, { resolve, reject, timer });
      this._socket.send(JSON.stringify({ id, ...command }));
    });
  }

  /** Why a command cannot wait for a connection: CLOSED once closed for good, DISCONNECTED otherwise. */
  _notConnected() {
    return this._closed
      ? new SwitchboardError(ClientErrors.CLOSED, "client closed")
      : new SwitchboardError(ClientErrors.DISCONNECTED, "not connected");
  }

  _rejectAll(code, text) {
    const pending = [...this._pending.values()];
    this._pending.clear();
    for (const entry of pending) {
      clearTimeout(entry.timer);
      entry.reject(new SwitchboardError(code, text));
    }
  }

  _rejectWaiting(code, text) {
    for (const entry of this._waiting.splice(0)) {
      clearTimeout(entry.timer);
      entry.reject(new SwitchboardError(code, text));
    }
  }

  // MARK: commands

  /** Subscribes and keeps the subscription across reconnects (recovering what was missed). */
  async subscribe(channel) {
    if (this._channels.has(channel)) throw new SwitchboardError(107, "already subscribed");
    if (this.state !== "connected") {
      if (this.options.whileDisconnected === "reject" || !this._wanted) throw this._notConnected();
      // Recorded now, sent with the other subscriptions once connected; the promise settles then.
      return new Promise((resolve, reject) => {
        this._channels.set(channel, { subscribed: false, waiters: [{ resolve, reject }] });
      });
    }
    const position = { subscribed: false };
    this._channels.set(channel, position);
    try {
      const reply = await this._send({ cmd: "subscribe", channel });
      this._subscribedReply(channel, reply, false, position);
      return reply;
    } catch (error) {
      // Lost with the connection: the entry stays and the next connection subscribes it.
      if (error.code !== ClientErrors.DISCONNECTED && this._channels.get(channel) === position) {
        this._channels.delete(channel);
      }
      throw error;
    }
  }

  async unsubscribe(channel) {
    const position = this._channels.get(channel);
    this._channels.delete(channel);
    for (const waiter of position?.waiters?.splice(0) ?? []) {
      waiter.reject(new SwitchboardError(ClientErrors.CLOSED, "unsubscribed before it was subscribed"));
    }
    // Nothing to undo on the server while disconnected: the next connection does not resubscribe it.
    if (this.state !== "connected") return {};
    return this._send({ cmd: "unsubscribe", channel });
  }

  /** Publishes `data` (any JSON value). With `idempotencyKey` (a string of 1–256 bytes), publishing again
   *  with the same key within the server's window (300 s by default) publishes nothing and resolves with the
   *  first one's offset: a retry after error 110, TIMEOUT or DISCONNECTED cannot publish twice. */
  publish(channel, data, { idempotencyKey } = {}) {
    return this._send({
      cmd: "publish", channel, data, ...(idempotencyKey !== undefined ? { idempotency_key: idempotencyKey } : {}),
    });
  }

  /** Calls `method` of the application's backend through the server (which must be configured for it, else
   *  104). Resolves with the backend's `data` (undefined when it returned none); its errors reject with their
   *  codes (1000 and up are the application's own; 110 temporarily unavailable, retry; 118 unusable answer). */
  async rpc(method, data) {
    const reply = await this._send({ cmd: "rpc", method, ...(data !== undefined ? { data } : {}) });
    return reply.data;
  }

  presence(channel) {
    return this._send({ cmd: "presence", channel });
  }

  history(channel, { limit, since } = {}) {
    return this._send({
      cmd: "history", channel, ...(limit !== undefined ? { limit } : {}), ...(since !== undefined ? { since } : {}),
    });
  }

  ping() {
    return this._send({ cmd: "ping" });
  }

  /** Where each channel stands: its last offset and epoch (what a reconnect recovers from). */
  position(channel) {
    const position = this._channels.get(channel);
    return position ? { offset: position.offset, epoch: position.epoch, subscribed: position.subscribed } : null;
  }
}
