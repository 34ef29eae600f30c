#!/usr/bin/env node
// A bare WebSocket echo server on Node's `ws` (Debian: node-ws): every message goes back as it came.
// The transport reference beside the hub's own /echo (signal serve --echo).
//
//   node Benchmarks/ws-echo.js [--host 127.0.0.1] [--port 8091]
'use strict';

const http = require('http');
let WebSocket;
try {
  WebSocket = require('ws');
} catch {
  WebSocket = require('/usr/share/nodejs/ws'); // Debian's node-ws, when NODE_PATH does not list it
}

function option(name, fallback) {
  const index = process.argv.indexOf(`--${name}`);
  return index > 0 ? process.argv[index + 1] : fallback;
}

const host = option('host', '127.0.0.1');
const port = Number(option('port', '8091'));

const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 200 : 404);
  res.end();
});
const wss = new WebSocket.Server({ server, maxPayload: 64 * 1024, perMessageDeflate: false });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  ws.on('error', () => {});
});

server.listen(port, host, () => console.log(`ws-echo listening on ${host}:${port}`));
