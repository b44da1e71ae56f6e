// Types for switchboard.js (Switchboard client protocol v1, docs/PROTOCOL.md).

export declare const ClientErrors: Readonly<{ TIMEOUT: -1; DISCONNECTED: -2; CLOSED: -3; QUEUE_FULL: -4 }>;

/** A refused command (the server's code, 100–118; 1000 and up from the application's backend, through `rpc`)
 *  or one the client gave up on (ClientErrors). */
export declare class SwitchboardError extends Error {
  readonly code: number;
  constructor(code: number, message: string);
}

export interface SwitchboardOptions {
  token?: string;
  /** Called at each (re)connect and when the server asks for a refresh. */
  getToken?: () => Promise<string> | string;
  /** The WebSocket constructor: the browser's by default; in Node 20, `ws`'s or --experimental-websocket. */
  WebSocket?: new (url: string) => WebSocket;
  commandTimeout?: number;
  whileDisconnected?: "wait" | "reject";
  maxWaiting?: number;
  minReconnectDelay?: number;
  maxReconnectDelay?: number;
  deadAfter?: number;
  /** Tried in this order (default `["websocket", "http-stream"]`): one that fails before its first message
   *  (refused, closed, or silent for `fallbackTimeout`) hands over to the next at once, unseen. A connection
   *  starts with the one that last worked. Those the environment lacks are left out. */
  transports?: Transport[];
  /** ms a transport may take to its first message before the next is tried (default 5000). */
  fallbackTimeout?: number;
  /** ms on a fallback after which a reconnect tries the first transport again (default 300000; Infinity:
   *  never). A working connection is not given up for it. */
  transportRetry?: number;
  /** The HTTP transport's endpoint. Default: `http-stream` beside the WebSocket's path, with its query
   *  (`ws://host/ws?user=a` → `http://host/http-stream?user=a`). */
  httpStreamURL?: string;
  /** The HTTP transport's fetch (default `globalThis.fetch`). */
  fetch?: typeof globalThis.fetch;
  /** Reads the HTTP transport's stream where fetch cannot stream a response (default `globalThis.EventSource`). */
  EventSource?: new (url: string, init?: { withCredentials?: boolean }) => EventSource;
}

/** How the client reaches the server: a WebSocket, or the HTTP transport (an event stream down, POSTs up). */
export type Transport = "websocket" | "http-stream";

export interface Publication {
  channel: string;
  offset: number;
  data: unknown;
  user?: string;
  /** Delivered from history by a recovery after a reconnect. */
  recovered?: boolean;
}

export interface Member { client: string; user: string | null; data?: unknown }
export interface SubscribeResult { epoch: string; offset: number; recovered?: boolean; publications?: Publication[] }
export interface PresenceResult { connections: number; users: number; members?: Member[] }
export interface HistoryResult { epoch: string; offset: number; publications: Publication[] }
export interface PublishOptions {
  /** 1–256 bytes. A publish with a key already used on the channel within the server's window (300 s by
   *  default) publishes nothing and resolves with the first one's offset: retrying is safe. */
  idempotencyKey?: string;
}

export interface SwitchboardEvents {
  state: { state: "disconnected" | "connecting" | "connected"; code?: number; reason?: string; reconnect?: boolean };
  connected: { user: string | null; client: string | null };
  disconnected: { code: number; reason: string; reconnect: boolean };
  /** A connection was made over another transport than the last one (before its `connected`). */
  transport: { transport: Transport; previous: Transport | null };
  publication: Publication;
  join: { channel: string; info: Member };
  leave: { channel: string; info: Member };
  gap: { channel: string; dropped: number };
  subscribed: SubscribeResult & { channel: string };
  unsubscribed: { channel: string; error?: SwitchboardError };
  /** After a reconnect, per channel: whether everything missed was delivered (else reload your state). */
  recovered: { channel: string; recovered: boolean };
  message: { data: unknown };
  error: Error;
}

export declare class Switchboard {
  readonly url: string;
  readonly state: "disconnected" | "connecting" | "connected";
  /** The current (or last) connection's transport; null before the first. */
  readonly transport: Transport | null;
  readonly user: string | null;
  readonly clientId: string | null;
  constructor(url: string, options?: SwitchboardOptions);
  on<E extends keyof SwitchboardEvents>(event: E, listener: (payload: SwitchboardEvents[E]) => void): () => void;
  off<E extends keyof SwitchboardEvents>(event: E, listener: (payload: SwitchboardEvents[E]) => void): void;
  connect(): Promise<void>;
  disconnect(): void;
  /** Kills the socket as a network failure would; the client reconnects and recovers. */
  dropConnection(): void;
  subscribe(channel: string): Promise<SubscribeResult>;
  unsubscribe(channel: string): Promise<object>;
  publish(channel: string, data: unknown, options?: PublishOptions): Promise<{ offset: number }>;
  /** Calls `method` of the application's backend through the server; resolves with the backend's `data`
   *  (undefined when it returned none). Rejects with the backend's own code (1000 and up), 110 (temporarily
   *  unavailable: retry), 118 (an answer the server could not use) or 104 (rpc not configured). */
  rpc<T = unknown>(method: string, data?: unknown): Promise<T | undefined>;
  presence(channel: string): Promise<PresenceResult>;
  history(channel: string, options?: { limit?: number; since?: number }): Promise<HistoryResult>;
  ping(): Promise<object>;
  position(channel: string): { offset?: number; epoch?: string; subscribed: boolean } | null;
}

/** Backoff with full jitter, never before the server's `after_ms` hint. */
export declare function reconnectDelay(
  attempt: number, options: { minReconnectDelay: number; maxReconnectDelay: number }, afterMs?: number,
  random?: () => number): number;
