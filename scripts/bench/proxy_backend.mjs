// A minimal application backend for the event proxy benchmark (docs/benchmarks.md): answers every
// proxied event at once. usage: node proxy_backend.mjs [PORT]; prints "backend on PORT".
import http from "node:http";

const answers = {
  "/connect": '{"result":{"user":"bench"}}',
  "/refresh": '{"result":{}}',
  "/subscribe": '{"result":{}}',
  "/publish": '{"result":{}}',
  "/rpc": '{"result":{"data":{"ok":true}}}',
};
let served = 0;
const server = http.createServer((request, response) => {
  const chunks = [];
  request.on("data", (chunk) => chunks.push(chunk));
  request.on("end", () => {
    served += 1;
    const body = answers[request.url] ?? '{"error":{"code":1404,"message":"unknown event"}}';
    response.writeHead(200, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(body) });
    response.end(body);
  });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.argv[2] ?? 0), "127.0.0.1", () => {
  console.log(`backend on ${server.address().port}`);
});
process.on("SIGTERM", () => {
  console.log(`served ${served}`);
  process.exit(0);
});
