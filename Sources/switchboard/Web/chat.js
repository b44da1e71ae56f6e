// The chat demo: plain modules, no build step. Uses the client at /switchboard.js.
import { Switchboard } from "/switchboard.js";

const $ = (id) => document.getElementById(id);
// Where the WebSocket endpoint is (the server's `path` setting), and the HTTP fallback's (`httpStreamPath`,
// null when the server has none). Not awaited at the top level: the form's handlers must be in place
// before the page counts as loaded, or an early Join submits the form natively.
const endpoints = fetch("/config.json")
  .then((r) => r.json())
  .catch(() => ({ path: "/ws" }))
  .then((config) => ({
    ws: `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${config.path}`,
    httpStream: config.httpStreamPath ? `${location.origin}${config.httpStreamPath}` : config.httpStreamPath,
  }));
let client;
let room = null;
const rooms = ["lobby"];
const shown = new Map(); // room -> Set of offsets shown (no duplicates after recovery)
const members = new Map(); // client id -> name

function addMessage({ offset, data, user }, { prepend = false } = {}) {
  const seen = shown.get(room) ?? new Set();
  shown.set(room, seen);
  if (offset !== undefined && seen.has(offset)) return;
  if (offset !== undefined) seen.add(offset);
  const item = document.createElement("li");
  item.dataset.offset = offset ?? "";
  const name = document.createElement("b");
  name.textContent = data?.name ?? user ?? "someone";
  const text = document.createElement("span");
  text.textContent = data?.text ?? JSON.stringify(data);
  const number = document.createElement("span");
  number.className = "offset";
  number.textContent = offset !== undefined ? `#${offset}` : "";
  item.append(name, text, number);
  const list = $("messages");
  if (prepend) {
    const after = [...list.children].find((li) => Number(li.dataset.offset) > offset);
    list.insertBefore(item, after ?? null);
  } else {
    list.append(item);
    list.scrollTop = list.scrollHeight;
  }
}

function note(text) {
  const item = document.createElement("li");
  item.className = "system";
  item.textContent = text;
  $("messages").append(item);
}

function renderMembers() {
  const list = $("members");
  list.replaceChildren(...[...new Set(members.values())].sort().map((name) => {
    const item = document.createElement("li");
    item.textContent = name;
    return item;
  }));
  $("count").textContent = `(${members.size})`;
}

function renderRooms() {
  $("rooms").replaceChildren(...rooms.map((name) => {
    const item = document.createElement("li");
    item.textContent = `# ${name}`;
    item.className = name === room ? "active" : "";
    item.onclick = () => enter(name);
    return item;
  }));
}

const channel = (name) => `chat:${name}`;
const memberName = (info) => (typeof info.data === "string" ? info.data : info.user ?? info.client);

async function enter(name) {
  if (room) await client.unsubscribe(channel(room)).catch(() => {});
  room = name;
  if (!rooms.includes(name)) rooms.push(name);
  renderRooms();
  $("messages").replaceChildren();
  shown.set(room, new Set());
  members.clear();
  renderMembers();
  await client.subscribe(channel(room));
  const history = await client.history(channel(room), { limit: 50 });
  for (const publication of history.publications) addMessage(publication);
  const presence = await client.presence(channel(room));
  for (const member of presence.members ?? []) members.set(member.client, memberName(member));
  renderMembers();
}

async function loadEarlier() {
  const list = $("messages");
  const have = shown.get(room)?.size ?? 0;
  const history = await client.history(channel(room), { limit: have + 50 });
  for (const publication of history.publications.reverse()) addMessage(publication, { prepend: true });
  if (history.publications.length <= have) $("older").disabled = true;
  list.scrollTop = 0;
}

async function start(name) {
  const { ws, httpStream } = await endpoints;
  const query = `?user=${encodeURIComponent(name)}&info=${encodeURIComponent(name)}`;
  client = new Switchboard(`${ws}${query}`, {
    minReconnectDelay: 300, maxReconnectDelay: 5000,
    ...(httpStream ? { httpStreamURL: `${httpStream}${query}` } : httpStream === null ? { transports: ["websocket"] } : {}),
  });
  client.on("state", ({ state }) => {
    $("status").textContent = state;
    $("status").className = `status ${state}`;
    $("status").dataset.state = state;
    $("drop").disabled = state !== "connected";
  });
  client.on("transport", ({ transport }) => {
    $("transport").textContent = `via ${transport}`;
    $("transport").dataset.transport = transport;
  });
  client.on("publication", (publication) => {
    if (publication.channel === channel(room)) addMessage(publication);
  });
  client.on("join", ({ channel: joined, info }) => {
    if (joined !== channel(room)) return;
    members.set(info.client, memberName(info));
    renderMembers();
  });
  client.on("leave", ({ channel: left, info }) => {
    if (left !== channel(room)) return;
    members.delete(info.client);
    renderMembers();
  });
  client.on("recovered", async ({ channel: recoveredChannel, recovered }) => {
    if (recoveredChannel !== channel(room)) return;
    $("recovery").textContent = recovered
      ? "Reconnected: every missed message was recovered."
      : "Reconnected, but history did not reach back far enough: reloaded.";
    if (!recovered) await enter(room);
    const presence = await client.presence(channel(room));
    members.clear();
    for (const member of presence.members ?? []) members.set(member.client, memberName(member));
    renderMembers();
  });
  client.on("error", (error) => console.warn("switchboard:", error));
  client.connect().then(() => enter(room ?? "lobby"), (error) => note(`could not connect: ${error.message}`));
}

$("login").onsubmit = (event) => {
  event.preventDefault();
  const name = $("name").value.trim();
  if (!name) return;
  localStorage.setItem("switchboard-name", name);
  $("login").hidden = true;
  $("chat").hidden = false;
  start(name);
};
// Never overwrite what was typed before this script ran.
$("name").value ||= localStorage.getItem("switchboard-name") ?? "";
$("send").onsubmit = async (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (!text) return;
  $("text").value = "";
  try {
    await client.publish(channel(room), { name: localStorage.getItem("switchboard-name"), text });
  } catch (error) {
    note(`not sent: ${error.message}`);
  }
};
$("join-room").onsubmit = (event) => {
  event.preventDefault();
  const name = $("room").value.trim();
  if (name) enter(name);
  $("room").value = "";
};
$("drop").onclick = () => {
  $("recovery").textContent = "Connection dropped; reconnecting…";
  client.dropConnection();
};
$("older").onclick = loadEarlier;
renderRooms();
