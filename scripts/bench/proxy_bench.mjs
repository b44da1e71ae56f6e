// Closed-loop load for one proxied command (docs/benchmarks.md): CONNECTIONS clients each send the
// command and wait for its reply, for SECONDS; prints commands per second and latency percentiles.
// usage: node --experimental-websocket proxy_bench.mjs URL rpc|ping|subscribe|publish CONNECTIONS SECONDS
const [url, mode, connections = "50", seconds = "10"] = process.argv.slice(2);
const latencies = [];
let done = 0;
let failed = 0;
let running = true;

function command(id, round, index) {
  switch (mode) {
    case "rpc":
      return { id, cmd: "rpc", method: "bench", data: { n: round } };
    case "ping":
      return { id, cmd: "ping" };
    case "publish":
      return { id, cmd: "publish", channel: `moderated:bench${index}`, data: { n: round } };
    default:
      // subscribe, then unsubscribe: each pair is two commands; only the subscribe is timed.
      return { id, cmd: round % 2 === 0 ? "subscribe" : "unsubscribe", channel: `secret:bench${index}` };
  }
}

async function client(index) {
  const ws = new WebSocket(url);
  await new Promise((resolve, reject) => {
    ws.onopen = resolve;
    ws.onerror = reject;
  });
  let round = 0;
  let started = 0;
  let resolveReply;
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.id === undefined) return;
    if (message.error) failed += 1;
    resolveReply?.(message);
  };
  ws.onclose = (event) => {
    if (!running) return;
    console.error(`connection ${index} closed by the server: ${event.code} ${event.reason}`);
    process.exit(1);
  };
  while (running) {
    const reply = new Promise((resolve) => (resolveReply = resolve));
    started = performance.now();
    ws.send(JSON.stringify(command(round + 1, round, index)));
    await reply;
    if (mode !== "subscribe" || round % 2 === 0) {
      latencies.push(performance.now() - started);
      done += 1;
    }
    round += 1;
  }
  ws.close();
}

const clients = [];
for (let index = 0; index < Number(connections); index += 1) clients.push(client(index));
setTimeout(() => (running = false), Number(seconds) * 1000);
await Promise.all(clients);
latencies.sort((a, b) => a - b);
const at = (q) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))]?.toFixed(2);
console.log(
  `${mode}: ${Math.round(done / Number(seconds))}/s over ${connections} connections, ` +
    `p50 ${at(0.5)} ms, p99 ${at(0.99)} ms, errors ${failed}`,
);
