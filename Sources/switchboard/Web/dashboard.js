// The server's own statistics, published once a second on the `sys:stats` channel, as moving charts.
// Publish-to-delivery latency is measured here: a probe publication every 500 ms on a private channel.
import { Switchboard } from "/switchboard.js";

const charts = [
  ["connections", "open connections", ""],
  ["connectsPerSecond", "connects / s", ""],
  ["disconnectsPerSecond", "disconnects / s", ""],
  ["messagesInPerSecond", "messages in / s", ""],
  ["messagesOutPerSecond", "messages out / s", ""],
  ["deliveriesPerSecond", "deliveries / s", ""],
  ["latencyP50", "publish → delivery p50", " ms"],
  ["latencyP99", "publish → delivery p99", " ms"],
  ["queued", "messages queued", ""],
  ["droppedPerSecond", "queue drops / s", ""],
  ["channels", "channels", ""],
  ["subscriptions", "subscriptions", ""],
];
const points = 120;
const series = new Map(charts.map(([key]) => [key, []]));

function setUp() {
  const grid = document.getElementById("charts");
  for (const [key, title] of charts) {
    const card = document.createElement("section");
    card.className = "card chart";
    card.dataset.key = key;
    card.innerHTML = `<h2></h2><div class="value">–</div><canvas width="560" height="180"></canvas>`;
    card.querySelector("h2").textContent = title;
    grid.append(card);
  }
}

function draw(key, unit) {
  const card = document.querySelector(`[data-key="${key}"]`);
  const values = series.get(key);
  const last = values.at(-1);
  card.querySelector(".value").textContent = last === undefined ? "–" : `${Math.round(last * 10) / 10}${unit}`;
  card.dataset.samples = String(values.length);
  const canvas = card.querySelector("canvas");
  const context = canvas.getContext("2d");
  context.clearRect(0, 0, canvas.width, canvas.height);
  const max = Math.max(1, ...values);
  context.strokeStyle = "#2563eb";
  context.lineWidth = 3;
  context.beginPath();
  values.forEach((value, index) => {
    // Newest at the right edge, scrolling left as samples arrive.
    const x = canvas.width - ((values.length - 1 - index) / (points - 1)) * canvas.width;
    const y = canvas.height - 6 - (value / max) * (canvas.height - 12);
    if (index === 0) context.moveTo(x, y);
    else context.lineTo(x, y);
  });
  context.stroke();
}

function push(key, value) {
  const values = series.get(key);
  values.push(value);
  if (values.length > points) values.shift();
}

const latencies = [];
function percentile(sorted, p) {
  return sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] : 0;
}

setUp();
const config = await fetch("/config.json").then((r) => r.json()).catch(() => ({ path: "/ws" }));
const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${config.path}${location.search}`;
// Where the WebSocket upgrade is refused, the client falls back to the HTTP transport (null: the server has none).
const client = new Switchboard(url, config.httpStreamPath
  ? { httpStreamURL: `${location.origin}${config.httpStreamPath}${location.search}` }
  : config.httpStreamPath === null ? { transports: ["websocket"] } : {});
// Each node of a cluster publishes its own statistics on its own channel; config.json names this node's.
const stats = config.stats ?? "sys:stats";
const status = document.getElementById("status");
client.on("state", ({ state }) => {
  status.textContent = state;
  status.className = `status ${state}`;
  status.dataset.state = state;
});
const transport = document.getElementById("transport");
client.on("transport", ({ transport: now }) => {
  transport.textContent = `via ${now}`;
  transport.dataset.transport = now;
});
const probe = `dashboard-probe-${Math.random().toString(36).slice(2, 10)}`;
client.on("publication", ({ channel, data }) => {
  if (channel === probe) {
    latencies.push(performance.now() - data.sent);
    if (latencies.length > 200) latencies.shift();
    return;
  }
  if (channel !== stats) return;
  const sorted = [...latencies].sort((a, b) => a - b);
  data.latencyP50 = percentile(sorted, 50);
  data.latencyP99 = percentile(sorted, 99);
  for (const [key, , unit] of charts) {
    push(key, Number(data[key] ?? 0));
    draw(key, unit);
  }
});
await client.connect();
try {
  await client.subscribe(stats);
} catch (error) {
  const denied = document.getElementById("denied");
  denied.hidden = false;
  denied.textContent = `The statistics channel is not readable from here (${error.message}): connect from this host, or with a token.`;
}
await client.subscribe(probe);
setInterval(() => client.publish(probe, { sent: performance.now() }).catch(() => {}), 500);
