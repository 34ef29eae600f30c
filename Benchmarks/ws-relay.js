#!/usr/bin/env node
// A minimal protocol-v1 relay on Node's `ws` (Debian: node-ws), the reference `signal bench` puts the
// hub beside. It speaks the subset the benchmarks use, the way a small Node signaling server would:
// welcome, join/joined/peer-joined, leave/left/peer-left, ping/pong, and the signals offer, answer,
// candidate, bye and message (addressed with `to`, or broadcast with `room`), relayed with `from` and a
// per-recipient `seq`, acknowledged with `ack`. No auth, no resume, no rate limits.
//
//   node Benchmarks/ws-relay.js [--host 127.0.0.1] [--port 8090]
'use strict';

const http = require('http');
const crypto = require('crypto');
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
const port = Number(option('port', '8090'));
const SIGNALS = new Set(['offer', 'answer', 'candidate', 'bye', 'message']);
const ALPHABET = '0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ';

function randomId(length) {
  const bytes = crypto.randomBytes(length);
  let out = '';
  for (let i = 0; i < length; i++) out += ALPHABET[bytes[i] % ALPHABET.length];
  return out;
}

const peers = new Map(); // peer id -> { ws, rooms: Set, seq }
const rooms = new Map(); // room -> Map(peer id -> meta)

function reply(ws, message, id) {
  if (id !== undefined) message.id = id;
  ws.send(JSON.stringify(message));
}

function deliver(peerId, message) {
  const peer = peers.get(peerId);
  if (!peer) return false;
  message.seq = ++peer.seq;
  peer.ws.send(JSON.stringify(message));
  return true;
}

function leave(peerId, room) {
  const members = rooms.get(room);
  if (!members || !members.delete(peerId)) return false;
  if (members.size === 0) rooms.delete(room);
  else for (const other of members.keys()) deliver(other, { type: 'peer-left', room, peer: peerId });
  return true;
}

const server = http.createServer((req, res) => {
  res.writeHead(req.url === '/healthz' ? 200 : 404);
  res.end();
});
const wss = new WebSocket.Server({ server, path: '/ws', maxPayload: 64 * 1024, perMessageDeflate: false });

wss.on('connection', (ws) => {
  const id = 'p-' + randomId(20);
  const self = { ws, rooms: new Set(), seq: 0 };
  peers.set(id, self);
  reply(ws, {
    type: 'welcome', v: 1, peer: id, session: randomId(43),
    heartbeat: { interval: 25, timeout: 60 }, iceServers: [], limits: { maxMessageBytes: 65536 },
  });

  ws.on('message', (data, isBinary) => {
    if (isBinary) return ws.close(1003, 'binary frames are not accepted');
    let message;
    try {
      message = JSON.parse(data);
    } catch {
      return reply(ws, { type: 'error', code: 'bad-message', message: 'invalid JSON' });
    }
    if (message === null || typeof message !== 'object' || typeof message.type !== 'string') {
      return reply(ws, { type: 'error', code: 'bad-message', message: "missing 'type'" });
    }
    const requestId = typeof message.id === 'string' ? message.id : undefined;
    const type = message.type;
    if (type === 'ping') return reply(ws, { type: 'pong' }, requestId);
    // No resume buffer here, so a client's report of what it processed needs no work (v1 sends no reply).
    if (type === 'received') return;
    if (type === 'join') {
      const room = message.room;
      if (typeof room !== 'string') return reply(ws, { type: 'error', code: 'bad-message', message: "missing 'room'" }, requestId);
      let members = rooms.get(room);
      if (!members) rooms.set(room, (members = new Map()));
      const meta = message.meta || {};
      if (!members.has(id)) {
        for (const other of members.keys()) deliver(other, { type: 'peer-joined', room, peer: id, meta });
      }
      members.set(id, meta);
      self.rooms.add(room);
      const others = [];
      for (const [peer, peerMeta] of members) if (peer !== id) others.push({ peer, meta: peerMeta });
      return reply(ws, { type: 'joined', room, peers: others }, requestId);
    }
    if (type === 'leave') {
      if (!self.rooms.delete(message.room)) {
        return reply(ws, { type: 'error', code: 'not-in-room', message: 'not in room' }, requestId);
      }
      leave(id, message.room);
      return reply(ws, { type: 'left', room: message.room }, requestId);
    }
    if (!SIGNALS.has(type)) {
      return reply(ws, { type: 'error', code: 'unknown-type', message: `unknown message type "${type}"` }, requestId);
    }
    message.from = id;
    if (typeof message.to === 'string') {
      if (!deliver(message.to, message)) {
        return reply(ws, { type: 'error', code: 'peer-unavailable', message: 'peer is not connected' }, requestId);
      }
    } else if (type === 'message' && typeof message.room === 'string' && self.rooms.has(message.room)) {
      for (const other of rooms.get(message.room).keys()) {
        if (other !== id) deliver(other, Object.assign({}, message));
      }
    } else {
      return reply(ws, { type: 'error', code: 'bad-message', message: "missing 'to'" }, requestId);
    }
    reply(ws, { type: 'ack' }, requestId);
  });

  ws.on('close', () => {
    peers.delete(id);
    for (const room of self.rooms) leave(id, room);
  });
  ws.on('error', () => {});
});

server.listen(port, host, () => console.log(`ws-relay listening on ${host}:${port}`));
