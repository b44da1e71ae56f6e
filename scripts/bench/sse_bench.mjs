// Fan-out over Server-Sent Events or WebSocket, measured the same way for both (docs/benchmarks.md):
// CONNECTIONS subscribers of one channel, spread over WORKERS processes each bound to its own source address
// (127.0.0.2, 127.0.0.3…), plain sockets and hand-written parsing for either transport; then the server's RSS
// growth per idle subscriber; then a publisher on the server API at RATE publications/s for DURATION s, each
// carrying its send time (the monotonic clock, shared by the processes): deliveries/s, latency percentiles,
// lost, and the server's CPU per delivery (/proc/PID/stat from the first publication to the last delivery).
// Connection failures (the open-file limit, addresses, refusals) are counted with their reason, never fatal.
//
// usage: node sse_bench.mjs --transport sse|ws --port P --api http://127.0.0.1:A --server-pid PID
//          [--connections 10000] [--workers 4] [--rate 10] [--duration 10] [--channel bench:room]
//          [--settle 3] [--concurrency 100]
import { fork } from "node:child_process";
import { readFileSync } from "node:fs";
import http from "node:http";
import net from "node:net";

const HISTOGRAM_STEP = 0.1; // ms per bucket
const HISTOGRAM_BUCKETS = 600_000; // 60 s; later deliveries go in the last bucket

function options(argv) {
  const o = {
    transport: "sse", port: 0, api: "", serverPid: 0, connections: 10000, workers: 4, rate: 10, duration: 10,
    channel: "bench:room", settle: 3, concurrency: 100, sourceBase: 2,
  };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, "").replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    if (!(key in o)) throw new Error(`unknown option ${argv[i]}`);
    o[key] = typeof o[key] === "number" ? Number(argv[i + 1]) : argv[i + 1];
  }
  return o;
}

const now = () => Number(process.hrtime.bigint()) / 1e6; // ms, CLOCK_MONOTONIC: the same in every process

// ------------------------------------------------------------------------------------------------------------
// Worker: holds its share of the subscribers.

function cpuSeconds() {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1e6;
}

function worker() {
  let o;
  const histogram = new Uint32Array(HISTOGRAM_BUCKETS);
  let received = 0;
  let connected = 0;
  let failed = 0;
  let disconnected = 0;
  const reasons = {};
  const sockets = [];
  const fail = (reason) => {
    failed += 1;
    reasons[reason] = (reasons[reason] ?? 0) + 1;
  };
  // One read buffer for every socket of the worker (each read is handled before the next): no allocation
  // per delivery. A partial event or frame at the end of a read is copied aside until the rest arrives.
  const readBuffer = Buffer.allocUnsafe(1 << 16);
  const STAMP = Buffer.from('"t":');
  const EVENT_END = Buffer.from("\n\n");
  const HEAD_END = Buffer.from("\r\n\r\n");

  // Every `"t":` in complete events or frames is one publication (the only `"t":` in its data), followed
  // by its send time in ms.
  function scan(bytes, at) {
    let index = bytes.indexOf(STAMP);
    while (index >= 0) {
      let value = 0;
      let scale = 0;
      let j = index + 4;
      for (; j < bytes.length; j += 1) {
        const c = bytes[j];
        if (c >= 48 && c <= 57) {
          value = value * 10 + (c - 48);
          if (scale) scale *= 10;
        } else if (c === 46 && !scale) scale = 1;
        else break;
      }
      const latency = at - (scale ? value / scale : value);
      histogram[Math.min(HISTOGRAM_BUCKETS - 1, Math.max(0, Math.floor(latency / HISTOGRAM_STEP)))] += 1;
      received += 1;
      index = bytes.indexOf(STAMP, j);
    }
  }

  // Where the last complete event (SSE) or frame (WebSocket) in `data` ends; answers pings on the way.
  function sseComplete(data) {
    const end = data.lastIndexOf(EVENT_END);
    return end < 0 ? 0 : end + 2;
  }
  function wsComplete(data, socket) {
    let offset = 0;
    for (;;) {
      if (data.length - offset < 2) return offset;
      const opcode = data[offset] & 0x0f;
      let length = data[offset + 1] & 0x7f;
      let start = offset + 2;
      if (length === 126) {
        if (data.length - offset < 4) return offset;
        length = data.readUInt16BE(offset + 2);
        start = offset + 4;
      } else if (length === 127) {
        if (data.length - offset < 10) return offset;
        length = Number(data.readBigUInt64BE(offset + 2));
        start = offset + 10;
      }
      if (data.length < start + length) return offset;
      if (opcode === 0x9) {
        const payload = data.subarray(start, start + length);
        socket.write(Buffer.concat([Buffer.from([0x8a, 0x80 | payload.length]), Buffer.alloc(4), payload]));
      } else if (opcode === 0x8) {
        socket.end();
      }
      offset = start + length;
    }
  }

  function maskedText(payload) {
    const data = Buffer.from(payload);
    const head = data.length < 126 ? Buffer.from([0x81, 0x80 | data.length]) :
      Buffer.from([0x81, 0x80 | 126, data.length >> 8, data.length & 0xff]);
    // A zero mask: the payload goes as it is (still a masked frame, as RFC 6455 requires of clients).
    return Buffer.concat([head, Buffer.alloc(4), data]);
  }

  function open(done) {
    const isSSE = o.transport === "sse";
    const connection = { state: "head", pending: null };
    const complete = isSSE ? sseComplete : wsComplete;
    const timer = setTimeout(() => socket.destroy(new Error("not subscribed within 30 s")), 30_000);
    const finish = (error) => {
      clearTimeout(timer);
      if (connection.state === "failed") return;
      if (error) {
        connection.state = "failed";
        done(error);
      } else {
        connection.state = "open";
        done(null);
      }
    };

    // Until subscribed: the answer's head, then the subscribed event or the subscribe reply.
    function opening(data, at) {
      if (connection.state === "head") {
        const end = data.indexOf(HEAD_END);
        if (end < 0) return data;
        const status = data.subarray(9, 12).toString("latin1");
        if (status !== (isSSE ? "200" : "101")) {
          socket.destroy();
          finish(`answer ${status}`);
          return null;
        }
        data = data.subarray(end + 4);
        connection.state = "subscribing";
        if (!isSSE) socket.write(maskedText(JSON.stringify({ id: 1, cmd: "subscribe", channel: o.channel })));
      }
      const upTo = complete(data, socket);
      const text = data.subarray(0, upTo).toString("latin1");
      if (isSSE ? text.includes("event: subscribed") : text.includes('{"id":1,"ok"')) {
        finish(null);
        scan(data.subarray(0, upTo), at);
      } else if (!isSSE && text.includes('{"id":1,"error"')) {
        socket.destroy();
        finish("subscribe refused");
        return null;
      }
      return data.subarray(upTo);
    }

    const socket = net.connect({
      host: "127.0.0.1", port: o.port, localAddress: o.address,
      onread: {
        buffer: readBuffer,
        callback(size, buffer) {
          const at = now();
          let data = buffer.subarray(0, size);
          if (connection.pending) data = Buffer.concat([connection.pending, data]);
          connection.pending = null;
          if (connection.state !== "open") {
            const rest = opening(data, at);
            if (rest && rest.length) connection.pending = Buffer.from(rest);
            return;
          }
          const upTo = complete(data, socket);
          if (upTo) scan(data.subarray(0, upTo), at);
          if (upTo < data.length) connection.pending = Buffer.from(data.subarray(upTo));
        },
      },
    });
    socket.setNoDelay(true);
    socket.on("connect", () => {
      socket.write(isSSE ?
        `GET /sse?channel=${encodeURIComponent(o.channel)} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n` :
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
          "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    });
    socket.on("error", (error) => {
      if (connection.state !== "open") finish(error.code ?? error.message);
    });
    socket.on("close", () => {
      if (connection.state === "open") disconnected += 1;
      else finish("closed before subscribed");
    });
    sockets.push(socket);
  }

  function connectAll() {
    let started = 0;
    let finished = 0;
    const ended = (error) => {
      finished += 1;
      if (error) fail(String(error));
      else connected += 1;
      if (finished === o.count) process.send({ type: "connected", connected, failed, reasons });
      else setImmediate(next);
    };
    const next = () => {
      if (started >= o.count) return;
      started += 1;
      try {
        open(ended);
      } catch (error) {
        // Synchronous failures (EMFILE on some platforms) are failures like any other.
        ended(error.code ?? error.message);
      }
    };
    for (let i = 0; i < Math.min(o.concurrency, o.count); i += 1) next();
  }

  process.on("message", (message) => {
    if (message.type === "start") {
      o = message.options;
      connectAll();
    } else if (message.type === "progress") {
      process.send({ type: "progress", received, disconnected, cpu: cpuSeconds() });
    } else if (message.type === "report") {
      const used = [];
      for (let i = 0; i < HISTOGRAM_BUCKETS; i += 1) if (histogram[i]) used.push([i, histogram[i]]);
      process.send({
        type: "report", received, disconnected, connected, failed, reasons, histogram: used, cpu: cpuSeconds(),
      });
    } else if (message.type === "stop") {
      for (const socket of sockets) socket.destroy();
      process.exit(0);
    }
  });
}

// ------------------------------------------------------------------------------------------------------------
// Parent: starts the workers, measures the server, publishes.

function serverCpuTicks(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime + stime, in clock ticks (100/s)
}

function serverRssBytes(pid) {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)[1]) * 1024;
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function parent(o) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const api = new URL(o.api);
  const publish = (body) => new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const request = http.request({
      host: api.hostname, port: api.port, path: "/api/publish", method: "POST", agent,
      headers: { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data) },
    }, (response) => {
      let text = "";
      response.on("data", (c) => (text += c));
      response.on("end", () => (response.statusCode === 200 ? resolve(text) : reject(new Error(`${response.statusCode} ${text}`))));
    });
    request.on("error", reject);
    request.end(data);
  });

  // The channel exists before anyone subscribes (a publication with history keeps it).
  await publish({ channel: o.channel, data: { warmup: true } });
  await sleep(1000);
  const rssBefore = serverRssBytes(o.serverPid);
  const workers = [];
  const replies = new Map();
  const ask = (child, type) => new Promise((resolve) => {
    replies.set(child, resolve);
    child.send({ type });
  });
  const connectedReports = [];
  const connectStarted = now();
  await Promise.all(Array.from({ length: o.workers }, (_, i) => new Promise((resolve) => {
    const child = fork(new URL(import.meta.url).pathname, ["--worker"], { stdio: "inherit" });
    workers.push(child);
    const count = Math.floor(o.connections / o.workers) + (i < o.connections % o.workers ? 1 : 0);
    child.on("message", (message) => {
      if (message.type === "connected") {
        connectedReports.push(message);
        resolve();
      } else {
        const reply = replies.get(child);
        replies.delete(child);
        reply?.(message);
      }
    });
    child.on("exit", (code) => code && console.error(`worker ${i} exited ${code}`));
    child.send({
      type: "start",
      options: { ...o, count, address: `127.0.0.${o.sourceBase + i}` },
    });
  })));
  const connectSeconds = (now() - connectStarted) / 1000;
  const connected = connectedReports.reduce((s, r) => s + r.connected, 0);
  const failed = connectedReports.reduce((s, r) => s + r.failed, 0);
  const reasons = {};
  for (const r of connectedReports) for (const [k, v] of Object.entries(r.reasons)) reasons[k] = (reasons[k] ?? 0) + v;
  console.log(`${o.transport}: ${connected} subscribed in ${connectSeconds.toFixed(1)} s, ${failed} failed` +
    (failed ? ` ${JSON.stringify(reasons)}` : ""));
  await sleep(o.settle * 1000);
  const rssIdle = serverRssBytes(o.serverPid);
  const perConnection = connected ? (rssIdle - rssBefore) / connected : 0;
  console.log(`${o.transport}: idle server RSS ${(rssBefore / 1048576).toFixed(1)} → ${(rssIdle / 1048576).toFixed(1)} MiB, ` +
    `${Math.round(perConnection)} B per subscriber`);

  // Fan-out: RATE publications/s on a fixed schedule, for DURATION s.
  const total = Math.round(o.rate * o.duration);
  const period = 1000 / o.rate;
  const loadCpuStart = (await Promise.all(workers.map((w) => ask(w, "progress")))).reduce((s, p) => s + p.cpu, 0);
  const cpuStart = serverCpuTicks(o.serverPid);
  const started = now();
  let publishErrors = 0;
  for (let n = 0; n < total; n += 1) {
    const due = started + n * period;
    const wait = due - now();
    if (wait > 0) await sleep(wait);
    publish({ channel: o.channel, data: { n, t: now() } }).catch(() => (publishErrors += 1));
  }
  const publishedIn = (now() - started) / 1000;
  const expected = total * connected;
  // Until every subscriber has every publication, or 10 s more.
  let received = 0;
  let disconnected = 0;
  const deadline = now() + 10_000;
  while (now() < deadline) {
    const progress = await Promise.all(workers.map((w) => ask(w, "progress")));
    received = progress.reduce((s, p) => s + p.received, 0);
    disconnected = progress.reduce((s, p) => s + p.disconnected, 0);
    if (received >= expected) break;
    await sleep(100);
  }
  const cpuTicks = serverCpuTicks(o.serverPid) - cpuStart;
  const deliveredIn = (now() - started) / 1000;
  const reports = await Promise.all(workers.map((w) => ask(w, "report")));
  const histogram = new Map();
  for (const r of reports) for (const [bucket, count] of r.histogram) histogram.set(bucket, (histogram.get(bucket) ?? 0) + count);
  const buckets = [...histogram.entries()].sort((a, b) => a[0] - b[0]);
  received = reports.reduce((s, r) => s + r.received, 0);
  const loadCpu = reports.reduce((s, r) => s + r.cpu, 0) - loadCpuStart;
  const at = (q) => {
    const target = q * received;
    let seen = 0;
    for (const [bucket, count] of buckets) {
      seen += count;
      if (seen >= target) return Number(((bucket + 1) * HISTOGRAM_STEP).toFixed(1));
    }
    return NaN;
  };
  const result = {
    transport: o.transport, connections: connected, connect_failures: failed, connect_failure_reasons: reasons,
    connect_seconds: Number(connectSeconds.toFixed(2)),
    idle_rss_bytes_per_connection: Math.round(perConnection),
    publications: total, publish_errors: publishErrors, expected, delivered: received, lost: expected - received,
    disconnected_during_run: reports.reduce((s, r) => s + r.disconnected, 0),
    deliveries_per_second: Math.round(received / publishedIn),
    last_delivery_after_seconds: Number(deliveredIn.toFixed(2)),
    latency_ms: { p50: at(0.5), p90: at(0.9), p99: at(0.99), max: at(1) },
    server_cpu_seconds: cpuTicks / 100,
    server_cpu_us_per_delivery: received ? Number(((cpuTicks / 100) * 1e6 / received).toFixed(2)) : null,
    load_cpu_seconds: Number(loadCpu.toFixed(2)),
    load_cpu_us_per_delivery: received ? Number((loadCpu * 1e6 / received).toFixed(2)) : null,
  };
  console.log(`${o.transport}: ${result.deliveries_per_second} deliveries/s (${received} of ${expected}, lost ` +
    `${result.lost}), p50 ${result.latency_ms.p50.toFixed(1)} ms, p99 ${result.latency_ms.p99.toFixed(1)} ms, ` +
    `max ${result.latency_ms.max.toFixed(1)} ms, ${result.server_cpu_us_per_delivery} µs server CPU per delivery ` +
    `(load generator: ${result.load_cpu_us_per_delivery} µs)`);
  console.log(JSON.stringify(result));
  for (const w of workers) w.send({ type: "stop" });
  agent.destroy();
}

if (process.argv[2] === "--worker") worker();
else await parent(options(process.argv.slice(2)));
