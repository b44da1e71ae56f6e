// Switchboard client for browsers and Node 20+: protocol v1 (docs/PROTOCOL.md), no dependencies.
// One connection; commands as promises; reconnect with backoff and full jitter; per-channel recovery.
// Over a WebSocket, or the HTTP transport (an event stream down, POSTs up) where the upgrade fails.

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

/** The transports, in the default order: the HTTP transport is the fallback where the WebSocket fails. */
const TRANSPORTS = ["websocket", "http-stream"];

/** A POST of the HTTP transport stops taking more of the queued commands past this many characters. */
const POST_BATCH = 65536;
/** ms a command POST may take (the server bounds it by its handshake timeout, 10 s by default). */
const POST_TIMEOUT = 15000;
/** ms a session that refused a POST (404, 503) is given for its stream to bring the disconnect notice. */
const CLOSING_GRACE = 2000;

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
  transports: TRANSPORTS, // tried in this order; one that fails before its first message hands over to the next
  fallbackTimeout: 5000, // ms a transport may take to its first message (a WebSocket's connect reply, the HTTP transport's session) before the next one
  transportRetry: 300000, // ms on a fallback after which a reconnect tries the first transport again (Infinity: never)
  httpStreamURL: undefined, // default "http-stream" beside the WebSocket path, same query: ws://h/ws?a → http://h/http-stream?a
  fetch: undefined, // the HTTP transport's (default globalThis.fetch); EventSource reads the stream where fetch cannot
  EventSource: undefined, // default globalThis.EventSource
};

export class Switchboard {
  /**
   * @param {string} url e.g. "ws://127.0.0.1:8080/ws"
   * @param {object} [options] see `defaults` above
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = { ...defaults, ...options };
    for (const name of this.options.transports) {
      if (!TRANSPORTS.includes(name)) throw new TypeError(`unknown transport ${name}: ${TRANSPORTS.join(" or ")}`);
    }
    // Those this environment has: without a WebSocket (Node 20 without the flag), the HTTP transport alone.
    this._transports = this.options.transports.filter((name) => typeof (name === "websocket"
      ? this.options.WebSocket : this.options.fetch ?? globalThis.fetch) === "function");
    if (!this._transports.length) {
      throw new TypeError("no WebSocket implementation: pass options.WebSocket");
    }
    this.state = "disconnected";
    this.transport = null; // "websocket" or "http-stream": the current (or last) connection's
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
    this._preferred = 0; // index in _transports of the one a connection starts with: the last that worked
    this._fallbackSince = 0; // when a connection last started on a fallback (for transportRetry)
  }

  // MARK: events

  /** Events: state, connected, disconnected, transport, publication, join, leave, gap, subscribed,
   *  unsubscribed, recovered, message, error. Returns a function that removes the listener. */
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
    const socket = this._socket;
    this._socket = null; // first: a WebSocket may report its closing at once, from inside close()
    socket?.close(1000);
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
    this._openTransport(token, this._firstTransport(), 1);
  }

  /** Where a connection starts: the transport that last worked; the first one again once `transportRetry`
   *  has passed on a fallback (a working connection is never given up for it). */
  _firstTransport() {
    if (this._preferred > 0 && Date.now() - this._fallbackSince >= this.options.transportRetry) {
      this._fallbackSince = Date.now(); // failing again, it is retried after another period
      return 0;
    }
    return this._preferred;
  }

  /** Opens `_transports[index]`, the `tried`-th of this attempt. One that fails before its first message
   *  (refused, closed, or silent for `fallbackTimeout`) hands over to the next at once, unseen by the
   *  application; after the last, the reconnect backoff runs. */
  _openTransport(token, index, tried) {
    const generation = ++this._generation;
    const transport = this._transports[index];
    const next = tried < this._transports.length ? (index + 1) % this._transports.length : -1;
    let socket;
    try {
      socket = transport === "websocket"
        ? new this.options.WebSocket(this.url)
        : new HttpStream(this._httpStreamURL(), this.options);
    } catch (error) {
      this._emit("error", error);
      if (next >= 0) return this._openTransport(token, next, tried + 1);
      return this._scheduleReconnect({ code: 0, reason: String(error), reconnect: true });
    }
    this._socket = socket;
    let notice = null;
    let opened = false;
    let heard = false;
    const fallBack = () => {
      clearTimeout(timer);
      if (this._socket !== socket || !this._wanted) return;
      this._socket = null;
      this._stopWatchdog();
      socket.onopen = socket.onclose = socket.onmessage = socket.onerror = null;
      try {
        socket.close();
      } catch {
        // already closing
      }
      this._rejectAll(ClientErrors.DISCONNECTED, `${transport} failed`);
      this._openTransport(token, next, tried + 1);
    };
    const timer = next >= 0 ? setTimeout(fallBack, this.options.fallbackTimeout) : undefined;
    this._lastSeen = Date.now();
    this._startWatchdog(); // also while connecting: a server that accepts TCP and then says nothing is dropped
    socket.onopen = () => {
      opened = true;
      this._lastSeen = Date.now();
      // The HTTP transport opens on the server's first message (the session): it has been heard, and a slow
      // connect reply (a slow link, a slow connect proxy) is the command timeout's to judge, not a reason to
      // give up a transport that works.
      if (transport !== "websocket") {
        heard = true;
        clearTimeout(timer);
      }
      this._handshake(token, generation, index);
    };
    socket.onping = () => {
      this._lastSeen = Date.now(); // the HTTP transport's `: ping` lines (a browser's WebSocket hides its pings)
    };
    socket.onmessage = (event) => {
      heard = true;
      clearTimeout(timer);
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
    const closed = (event) => {
      if (this._socket !== socket) return;
      if (!heard && next >= 0) return fallBack();
      clearTimeout(timer);
      this._socket = null;
      this._stopWatchdog();
      const code = notice?.code ?? event.code;
      const reason = notice?.reason ?? event.reason ?? "";
      const reconnect = notice ? notice.reconnect !== false : !FINAL_CLOSE_CODES.has(code);
      this._rejectAll(ClientErrors.DISCONNECTED, "connection lost");
      for (const channel of this._channels.values()) channel.subscribed = false;
      this._scheduleReconnect({ code, reason, reconnect, afterMs: notice?.after_ms });
    };
    socket.onclose = closed;
    socket.onerror = () => {
      if (opened) return; // onclose follows with the code
      // The opening failed. Browsers follow with a close (1006); Node 20's WebSocket never does.
      socket.onclose = socket.onerror = null;
      try {
        socket.close();
      } catch {
        // not closable yet
      }
      closed({ code: 1006, reason: "" });
    };
  }

  /** The HTTP transport's endpoint: `httpStreamURL`, else `/http-stream` on the WebSocket's host, with its
   *  query (`ws://host/ws?user=a` → `http://host/http-stream?user=a`). */
  _httpStreamURL() {
    if (this.options.httpStreamURL) return this.options.httpStreamURL;
    const url = new URL(this.url, globalThis.location?.href);
    const stream = new URL("/http-stream", url); // the server's default `httpStreamPath`, whatever the WebSocket's
    stream.protocol = { "ws:": "http:", "wss:": "https:" }[url.protocol] ?? url.protocol;
    stream.search = url.search;
    return stream.href;
  }

  /** `connect` (with the token), then resubscribe every channel, recovering from its last position. */
  async _handshake(token, generation, index) {
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
      if (index !== this._preferred) {
        this._preferred = index;
        this._fallbackSince = Date.now();
      }
      const transport = this._transports[index];
      if (transport !== this.transport) {
        const previous = this.transport;
        this.transport = transport;
        this._emit("transport", { transport, previous });
      }
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
      // Given up for the next transport: nothing the application needs to hear of.
      if (error.code === ClientErrors.DISCONNECTED && generation !== this._generation) return;
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
    socket.onclose = socket.onmessage = socket.onerror = null;
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

/**
 * The HTTP transport, shaped like a WebSocket (readyState, send, close, onopen, onmessage, onclose) so the
 * client runs the same code over either. A `GET` whose `text/event-stream` body brings the server's
 * messages, one per event; the first, `{"push":"session"}`, names the session and counts as the open. The
 * commands go up as `POST ?session=…`, one JSON per line: those sent in the same tick in one request, and
 * one request at a time, so the server reads them in the order sent. The stream ending ends the session.
 * fetch reads the stream (browsers, Node 18+); EventSource where fetch cannot stream a response body.
 */
class HttpStream {
  constructor(url, { fetch = globalThis.fetch, EventSource = globalThis.EventSource } = {}) {
    this.url = url;
    this.readyState = 0;
    this._fetch = (...request) => fetch(...request); // a browser's fetch refuses to be called as a method of this
    this._outbox = [];
    this._posting = false;
    this._flushing = false;
    this._alone = 0; // commands to POST one at a time (together they were too large)
    this._buffer = "";
    this._data = [];
    if (typeof fetch !== "function") throw new TypeError("no fetch for the http-stream transport");
    if (typeof TextDecoder === "function") this._read(EventSource);
    else if (typeof EventSource === "function") this._listen(EventSource);
    else throw new TypeError("no TextDecoder or EventSource for the http-stream transport");
  }

  async _read(EventSource) {
    this._abort = typeof AbortController === "function" ? new AbortController() : undefined;
    let response;
    try {
      response = await this._fetch(this.url, {
        headers: { Accept: "text/event-stream" }, credentials: "include", signal: this._abort?.signal,
      });
    } catch (error) {
      return this._ended(1006, `http-stream: ${error.message}`);
    }
    if (response.ok && !/^text\/event-stream/i.test(response.headers.get("Content-Type") ?? "")) {
      this._abort?.abort();
      return this._ended(1006, "http-stream: the answer is not an event stream");
    }
    if (!response.ok) {
      let reason = `http-stream: ${response.status}`;
      try {
        reason = (await response.json()).error?.message ?? reason;
      } catch {
        // not the server's JSON
      }
      return this._ended(1006, reason);
    }
    if (typeof response.body?.getReader !== "function") {
      this._abort?.abort();
      if (typeof EventSource === "function" && this.readyState === 0) return this._listen(EventSource);
      return this._ended(1006, "http-stream: this fetch cannot stream a response");
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done || this.readyState === 3) break;
        this._feed(decoder.decode(value, { stream: true }));
      }
    } catch {
      // cut, or aborted by close()
    }
    this._ended(1006, "http-stream ended");
  }

  _listen(EventSource) {
    // It would reconnect by itself, to a new session the client knows nothing of: the client does it instead.
    this._source = new EventSource(this.url, { withCredentials: true });
    this._source.onmessage = (event) => this._message(event.data);
    this._source.onerror = () => this._ended(1006, "http-stream ended");
  }

  /** Lines of the event stream (any line break; one split across chunks waits for the rest). */
  _feed(text) {
    const lines = (this._buffer + text).split(/\r\n|\r(?!$)|\n/);
    this._buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (this._data.length) this._message(this._data.join("\n"));
        this._data = [];
      } else if (line[0] === ":") {
        this.onping?.();
      } else {
        const colon = line.indexOf(":");
        // id:, event:, retry: mean nothing here: the messages carry their own.
        if ((colon < 0 ? line : line.slice(0, colon)) !== "data") continue;
        const value = colon < 0 ? "" : line.slice(colon + 1);
        this._data.push(value[0] === " " ? value.slice(1) : value);
      }
      if (this.readyState === 3) return;
    }
  }

  _message(data) {
    if (this.readyState === 1 || this.readyState === 2) return this.onmessage?.({ data });
    if (this.readyState !== 0) return;
    let session;
    try {
      session = JSON.parse(data).session;
    } catch {
      // not the session push
    }
    if (typeof session !== "string") return this._ended(1006, "http-stream: no session");
    const post = new URL(this.url, globalThis.location?.href);
    post.search = `?session=${encodeURIComponent(session)}`;
    this._postURL = post.href;
    this.readyState = 1;
    this.onopen?.({});
  }

  send(text) {
    if (this.readyState === 0) throw new Error("http-stream: not open yet");
    if (this.readyState !== 1) return;
    this._outbox.push(text);
    if (this._flushing || this._posting) return;
    this._flushing = true;
    queueMicrotask(() => {
      this._flushing = false;
      this._post();
    });
  }

  /** One POST with what is queued (up to POST_BATCH characters), then the next, until the queue is empty. */
  async _post() {
    if (this._posting || !this._outbox.length || this.readyState !== 1) return;
    let count = 0;
    for (let size = 0; count < this._outbox.length; count += 1) {
      size += this._outbox[count].length + 1;
      if (count > 0 && (size > POST_BATCH || this._alone > 0)) break;
    }
    if (this._alone > 0) this._alone -= 1;
    const batch = this._outbox.splice(0, count);
    this._posting = true;
    // Abortable (a close aborts it) and bounded: a POST stuck behind the browser's connection limit or a
    // buffering proxy must not hold every later command for ever.
    const abort = typeof AbortController === "function" ? new AbortController() : undefined;
    this._postAbort = abort;
    const timer = setTimeout(() => abort?.abort(), POST_TIMEOUT);
    let response;
    try {
      response = await this._fetch(this._postURL, {
        method: "POST", headers: { "Content-Type": "text/plain;charset=UTF-8" }, body: batch.join("\n"),
        credentials: "include", signal: abort?.signal,
      });
      await response.text();
    } catch (error) {
      return this._closing(`http-stream: ${error.message}`);
    } finally {
      clearTimeout(timer);
      this._posting = false;
      this._postAbort = undefined;
    }
    if (response.status === 413 && batch.length > 1) {
      // Together past the server's message size, perhaps not each: again, one per POST.
      this._outbox.unshift(...batch);
      this._alone = batch.length;
    } else if (response.status === 413) {
      // One command past the server's message size: a WebSocket would be closed with 1009.
      return this._ended(1009, "message too big");
    } else if (response.status === 400 || response.status === 403) {
      // Not ours: done at once.
      return this._ended(1006, `http-stream: POST answered ${response.status}`);
    } else if (!response.ok) {
      // 404, 503: the session is ending (a ban, a drain): its stream still brings the disconnect notice.
      return this._closing(`http-stream: POST answered ${response.status}`);
    }
    this._post();
  }

  /** The session cannot take commands any more: post nothing, and end when the stream does (it brings the
   *  server's disconnect notice, and the reconnect advice in it), or after a grace period. */
  _closing(reason) {
    if (this.readyState !== 1) return this._ended(1006, reason);
    this.readyState = 2;
    this._outbox = [];
    this._grace = setTimeout(() => this._ended(1006, reason), CLOSING_GRACE);
  }

  close(code = 1000, reason = "") {
    if (this.readyState === 3) return;
    this._stop();
    setTimeout(() => this.onclose?.({ code, reason, wasClean: true }));
  }

  _ended(code, reason) {
    if (this.readyState === 3) return;
    this._stop();
    this.onclose?.({ code, reason, wasClean: false });
  }

  _stop() {
    this.readyState = 3;
    this._outbox = [];
    clearTimeout(this._grace);
    this._abort?.abort();
    this._postAbort?.abort();
    this._source?.close();
  }
}
