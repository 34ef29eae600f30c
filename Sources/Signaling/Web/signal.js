// signal.js: browser SDK for the signaling hub (protocol v1).
//
// Plain ES module, no dependencies, no build step. Served by the hub at /sdk/signal.js.
//
//   import { SignalClient, connectPeer } from '/sdk/signal.js';
//   const client = await SignalClient.connect('/ws', { peer: 'alice' });
//   const { peers } = await client.join('lobby', { name: 'Alice' });
//   const link = connectPeer(client, peers[0].peer, { room: 'lobby' });
//   const channel = await link.ready;      // an open RTCDataChannel
//   channel.send('hello');
//
// SignalClient keeps one WebSocket to the hub. When the socket drops it reconnects by itself
// (exponential backoff with jitter) and resumes the session (`?resume=<session>&last=<seq>`): the
// hub replays what was missed, the client drops anything it has already seen (by `seq`) and resends
// the requests that were not answered (the hub answers a resent request id from memory without
// delivering it twice). It tells the hub what it has processed (`received`) and sends an app-level
// `ping` to notice a dead socket the browser has not noticed yet.
//
// Presence state: `client.update(room, meta)` changes this peer's `meta` in a room; the others get a
// `peer-updated` event. Volatile messages (`{volatile: true}` on `send`, `message` and `broadcast`) reach
// only the peers connected right now and are never replayed (typing indicators, cursors).
//
// PeerLink (`connectPeer`) wires one RTCPeerConnection to the client with the "perfect negotiation"
// pattern: offer/answer/trickle ICE through the hub, glare resolved by politeness (the peer whose id
// sorts greater is polite, as the protocol says), ICE restart after a failure or a resume gap.

const REPLY_TYPES = new Set(['ack', 'authed', 'error', 'joined', 'updated', 'left', 'pong']);
const SIGNAL_TYPES = new Set(['offer', 'answer', 'candidate', 'bye', 'message']);
// Close codes after which reconnecting cannot help (the session is over for a reason the app must handle).
const TERMINAL_CLOSE = new Set([1002, 1003, 1007, 1008, 1009, 4001, 4003, 4009]);
const CLOSE_NAMES = {
  1000: 'normal', 1001: 'going away', 1002: 'protocol error', 1003: 'binary frame', 1006: 'connection lost',
  1007: 'invalid UTF-8', 1008: 'policy violation', 1009: 'message too big', 1011: 'server error',
  1013: 'try again later', 4001: 'unauthorized', 4002: 'session cannot be resumed', 4003: 'kicked', 4009: 'session taken over',
};

const DEFAULTS = {
  minDelay: 250, // first reconnect delay (ms); doubles per attempt
  maxDelay: 10000, // reconnect delay cap (ms)
  connectTimeout: 10000, // give up on an attempt that has no `welcome` after this long (ms)
  pingInterval: 15000, // send `ping` after this long without any message from the hub (ms)
  pongTimeout: 10000, // declare the socket dead when nothing arrives this long after a ping (ms)
  receivedInterval: 1000, // how often to report the highest processed `seq` (ms)
  rateBurst: 100, // outgoing pacing: stays within the protocol's guaranteed minimum limits
  ratePerSecond: 50,
  tokenRefreshLead: 30000, // with a token function: ask it for a fresh token this long before expiry (ms; at most a fifth of the token's life)
};

/** An error answered by the hub (`code` is the protocol's error code) or raised by the client. */
export class SignalError extends Error {
  constructor(code, message, request) {
    super(message ? `${code}: ${message}` : code);
    this.name = 'SignalError';
    this.code = code;
    this.request = request;
  }
}

/** A tiny event emitter: `on` returns a function that removes the listener. */
class Emitter {
  constructor() {
    this._listeners = new Map();
  }
  on(type, fn) {
    if (!this._listeners.has(type)) this._listeners.set(type, new Set());
    this._listeners.get(type).add(fn);
    return () => this.off(type, fn);
  }
  once(type, fn) {
    const off = this.on(type, (...args) => {
      off();
      fn(...args);
    });
    return off;
  }
  off(type, fn) {
    this._listeners.get(type)?.delete(fn);
  }
  _emit(type, ...args) {
    const set = this._listeners.get(type);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        // A listener's bug must not break the client's own bookkeeping.
        setTimeout(() => {
          throw err;
        });
      }
    }
  }
}

/** A JWT's `exp` (Unix seconds), or null when the token cannot be read (the hub decides anyway). */
function tokenExpiry(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const exp = JSON.parse(atob(part + '='.repeat((4 - (part.length % 4)) % 4))).exp;
    return typeof exp === 'number' ? exp : null;
  } catch {
    return null;
  }
}

function wsURL(url) {
  const base = typeof location !== 'undefined' ? location.href : import.meta.url;
  const u = new URL(url ?? new URL('/ws', import.meta.url).href, base);
  if (u.protocol === 'http:') u.protocol = 'ws:';
  if (u.protocol === 'https:') u.protocol = 'wss:';
  return u;
}

/**
 * One signaling session with the hub, kept alive across dropped connections.
 *
 * Events (`client.on(type, fn)`):
 * - every incoming message by its `type`: `welcome`, `offer`, `answer`, `candidate`, `bye`, `message`,
 *   `peer-joined`, `peer-updated` ({room, peer, meta}: a member changed its meta), `peer-left`, `expired`,
 *   `ack`, `joined`, `updated`, `left`, `pong`, `error`, `ice-servers`
 *   (fresh TURN credentials: `client.iceServers` is updated first and every PeerLink applies them);
 *   `*` gets all of them.
 *   A message replayed after a resume that was already processed is not delivered again. A volatile
 *   message (`volatile: true`, no `seq`) is never replayed.
 * - `sent` (message): a message went out for the first time (resends are not repeated here).
 * - `state` (state): `connecting`, `open`, `reconnecting` or `closed`.
 * - `reconnecting` ({attempt, delay, code, reason}): the socket dropped; retrying after `delay` ms.
 * - `resumed` ({gap}): the session was resumed; `gap` means messages were lost (renegotiate).
 * - `reset` ({peer, previousPeer}): the session could not be resumed; a fresh one was started and
 *   the rooms re-joined. Others saw this peer leave: peer connections must be rebuilt.
 * - `token-refreshed` ({expires}): a fresh token from the token function was accepted in band.
 * - `token-error` (SignalError): the token function failed or the hub refused its token; retried
 *   while the current token lasts (when it expires the hub closes with 4001 "token expired").
 * - `close` ({code, reason}): the client is closed for good (`close()` or a terminal close code).
 */
export class SignalClient extends Emitter {
  /**
   * Opens a session. Resolves once the hub's `welcome` arrived; rejects when the first connection
   * fails (a `SignalError` whose `code` is the close code, e.g. 4001 for a bad token).
   * Options: `peer` (requested id), `token` (JWT string, or a function returning one or a promise of
   * one, called for every connection and, `tokenRefreshLead` before the token expires, for a fresh token
   * sent in band so the session outlives it), plus the tuning knobs in DEFAULTS and `WebSocket`.
   */
  static async connect(url, options = {}) {
    const client = new SignalClient(url, options);
    await client._start();
    return client;
  }

  constructor(url, options = {}) {
    super();
    this.url = wsURL(url);
    this.options = { ...DEFAULTS, ...options };
    this.peer = null; // our peer id (from `welcome`)
    this.session = null; // the current resume token
    this.tokenExpires = null; // when the session's token expires (Unix seconds), if it has one
    this.iceServers = [];
    this.heartbeat = null;
    this.limits = null;
    this.state = 'idle';
    this.lastSeq = 0; // highest seq processed
    this.rooms = new Map(); // room -> meta, the rooms this client wants to be in
    this.stats = { connects: 0, resumes: 0, resets: 0, gaps: 0, duplicates: 0, resent: 0, pings: 0, deadSockets: 0 };
    this._ws = null;
    this._pending = new Map(); // request id -> {msg, resolve, reject, sent, resent}
    this._nextID = 1;
    this._idPrefix = Math.random().toString(36).slice(2, 6);
    this._attempt = 0;
    this._reportedSeq = 0;
    this._outq = [];
    this._tokens = this.options.rateBurst;
    this._tokensAt = Date.now();
    this._timers = {};
    this._lastInbound = Date.now();
    this._closed = false;
    this._onOnline = () => {
      if (this.state === 'reconnecting') this._reconnectNow();
      else if (this.state === 'open') this._sendPing();
    };
    if (typeof addEventListener === 'function') addEventListener('online', this._onOnline);
  }

  // ---- public API --------------------------------------------------------------------------------

  /** Requests sent (or waiting to be sent) that the hub has not answered yet. */
  get pendingRequests() {
    return this._pending.size;
  }

  /** Joins `room`; resolves with the `joined` reply ({room, peers: [{peer, meta}]}). */
  join(room, meta) {
    this.rooms.set(room, meta);
    const msg = { type: 'join', room };
    if (meta !== undefined) msg.meta = meta;
    return this._request(msg).catch((err) => {
      if (err.code !== 'closed' && this.rooms.get(room) === meta) this.rooms.delete(room);
      throw err;
    });
  }

  /**
   * Changes this peer's `meta` in `room` (a room it has joined); the other members get `peer-updated`.
   * Resolves with the `updated` reply; rejects with `not-in-room` when the peer is not in the room. The
   * new meta is also the one used when the client joins the room again after a reset.
   */
  update(room, meta) {
    if (this.rooms.has(room)) this.rooms.set(room, meta);
    return this._request({ type: 'update', room, meta: meta ?? {} });
  }

  /** Leaves `room`; resolves with the `left` reply. */
  leave(room) {
    this.rooms.delete(room);
    return this._request({ type: 'leave', room });
  }

  /**
   * Sends a signal (`offer`, `answer`, `candidate`, `bye`, `message`) or any request. Resolves with
   * the `ack` (`queued: true` when the recipient is briefly away), rejects with a `SignalError`
   * carrying the error code (`peer-unavailable`, `not-in-room`, …).
   *
   * Option `volatile: true`: the hub delivers it only to recipients connected now and never keeps it
   * for a resume (a typing indicator, a cursor). An addressed volatile message to a peer that is away
   * rejects with `peer-unavailable`; a volatile broadcast skips away members. It is sent only while the
   * client is connected (else it rejects at once with `not-connected`), and one still unanswered when the
   * connection drops is not resent (it rejects with `not-connected`).
   */
  send(msg, options = {}) {
    if (!msg || typeof msg.type !== 'string') return Promise.reject(new SignalError('bad-message', 'a message needs a type'));
    const out = { ...msg };
    if (options.volatile) {
      out.volatile = true;
      if (!this._isOpen()) return Promise.reject(new SignalError('not-connected', 'a volatile message is sent only while connected', out));
    }
    return this._request(out);
  }

  /** Shorthand for an app message to one peer (`to`) or a whole room (`{room}`); `options` as for `send`. */
  message(target, data, options = {}) {
    const msg = typeof target === 'string' ? { type: 'message', to: target, data } : { type: 'message', ...target, data };
    return this.send(msg, options);
  }

  /** An app message to every other member of `room`; `options` as for `send` (e.g. `{volatile: true}`). */
  broadcast(room, data, options = {}) {
    return this.send({ type: 'message', room, data }, options);
  }

  /**
   * Sends a fresh token for this session before the current one expires (the hub ends a session with
   * close 4001 "token expired" at its token's `exp`). Resolves with the `authed` reply ({expires});
   * rejects with `unauthorized` when the hub refuses the token (the session keeps the old one). With a
   * token function the client does this by itself.
   */
  async authenticate(token) {
    const reply = await this._request({ type: 'auth', token });
    this._token = token;
    this._scheduleTokenRefresh(reply.expires);
    return reply;
  }

  /** Round trip to the hub in ms. */
  async ping() {
    const start = performance.now();
    await this._request({ type: 'ping' });
    return performance.now() - start;
  }

  /** Ends the session: the hub removes this peer from its rooms at once (others get `peer-left`). */
  close(code = 1000, reason = 'bye') {
    if (this._closed) return;
    this._closed = true;
    this._firstConnect?.reject(new SignalError('closed', 'closed before the session opened'));
    this._firstConnect = null;
    this._clearTimers();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      this._detach(ws);
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    }
    this._finish(code, reason);
  }

  // ---- connection management ---------------------------------------------------------------------

  async _start() {
    this._setState('connecting');
    await new Promise((resolve, reject) => {
      this._firstConnect = { resolve, reject };
      this._open();
    });
  }

  async _open() {
    if (this._closed || this._opening) return;
    const url = new URL(this.url);
    let token = this.options.token;
    if (typeof token === 'function') {
      this._opening = true;
      try {
        token = await token();
      } catch (err) {
        this._connectionLost(null, 4001, `token: ${err?.message ?? err}`);
        return;
      } finally {
        this._opening = false;
      }
    }
    if (token) url.searchParams.set('token', token);
    this._token = token || null;
    if (this.session) {
      url.searchParams.set('resume', this.session);
      url.searchParams.set('last', String(this.lastSeq));
    } else {
      const peer = this.options.peer ?? this.peer;
      if (peer) url.searchParams.set('peer', peer);
    }
    if (this._closed) return;
    const WS = this.options.WebSocket ?? WebSocket;
    let ws;
    try {
      ws = new WS(url.href);
    } catch (err) {
      this._connectionLost(null, 1006, String(err?.message ?? err));
      return;
    }
    this._ws = ws;
    ws._welcomed = false;
    ws.onmessage = (ev) => this._onMessage(ws, ev);
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._connectionLost(ws, ev.code, ev.reason);
    };
    ws.onerror = () => {}; // always followed by close
    clearTimeout(this._timers.connect);
    this._timers.connect = setTimeout(() => {
      if (this._ws === ws && !ws._welcomed) this._abandon(ws, 'connect timeout');
    }, this.options.connectTimeout);
  }

  _detach(ws) {
    ws.onmessage = ws.onclose = ws.onerror = ws.onopen = null;
  }

  /**
   * Gives up on a socket without sending a close frame (a close frame would end the session).
   * A socket still connecting can be closed safely; an open one is left to the hub, which closes it
   * with 4009 once the session is resumed on the new connection.
   */
  _abandon(ws, reason) {
    this._detach(ws);
    if (ws.readyState === 0) ws.close();
    else this._stale = [...(this._stale ?? []), ws];
    if (this._ws === ws) this._connectionLost(null, 1006, reason);
  }

  _connectionLost(ws, code, reason) {
    if (ws) this._detach(ws);
    this._ws = null;
    this._stopLiveness();
    if (this._closed) return;
    if (this._firstConnect) {
      const { reject } = this._firstConnect;
      this._firstConnect = null;
      this._closed = true;
      this._clearTimers();
      if (typeof removeEventListener === 'function') removeEventListener('online', this._onOnline);
      this._setState('closed');
      reject(new SignalError(code, reason || CLOSE_NAMES[code] || 'connection failed'));
      return;
    }
    if (TERMINAL_CLOSE.has(code)) {
      this._closed = true;
      this._clearTimers();
      this._finish(code, reason);
      return;
    }
    if (code === 4002) {
      // The session is gone (grace period over, or the hub restarted): start a fresh one.
      this.session = null;
    }
    const attempt = this._attempt++;
    const cap = Math.min(this.options.maxDelay, this.options.minDelay * 2 ** attempt);
    const delay = Math.round(cap / 2 + (Math.random() * cap) / 2);
    this._setState('reconnecting');
    this._emit('reconnecting', { attempt: attempt + 1, delay, code, reason: reason || CLOSE_NAMES[code] || '' });
    clearTimeout(this._timers.reconnect);
    this._timers.reconnect = setTimeout(() => this._open(), code === 4002 ? 0 : delay);
  }

  _reconnectNow() {
    clearTimeout(this._timers.reconnect);
    if (!this._ws && !this._closed) this._open();
  }

  _finish(code, reason) {
    for (const [, req] of this._pending) req.reject(new SignalError('closed', `client closed (${code})`, req.msg));
    this._pending.clear();
    if (typeof removeEventListener === 'function') removeEventListener('online', this._onOnline);
    this._setState('closed');
    this._emit('close', { code, reason: reason || CLOSE_NAMES[code] || '' });
  }

  _setState(state) {
    if (this.state === state) return;
    this.state = state;
    this._emit('state', state);
  }

  _clearTimers() {
    for (const key of Object.keys(this._timers)) clearTimeout(this._timers[key]);
    this._stopLiveness();
  }

  // ---- token lifetime ----------------------------------------------------------------------------

  _scheduleTokenRefresh(expires) {
    clearTimeout(this._timers.token);
    this.tokenExpires = expires ?? null;
    if (typeof this.options.token !== 'function' || !expires || this._closed) return;
    const left = expires * 1000 - Date.now();
    const lead = Math.min(this.options.tokenRefreshLead, left / 5);
    this._timers.token = setTimeout(() => this._refreshToken(), Math.max(0, left - lead));
  }

  async _refreshToken() {
    if (this._closed || !this._isOpen()) return; // a reconnect asks the token function anyway
    try {
      const reply = await this.authenticate(await this.options.token());
      this._emit('token-refreshed', { expires: reply.expires });
    } catch (err) {
      this._emit('token-error', err);
      const left = (this.tokenExpires ?? 0) * 1000 - Date.now();
      if (left > 1000 && !this._closed) this._timers.token = setTimeout(() => this._refreshToken(), Math.min(5000, left / 2));
    }
  }

  // ---- incoming ----------------------------------------------------------------------------------

  _onMessage(ws, ev) {
    if (this._ws !== ws) return;
    this._lastInbound = Date.now();
    clearTimeout(this._timers.pong);
    let msg;
    try {
      msg = JSON.parse(ev.data);
    } catch {
      return;
    }
    if (!msg || typeof msg.type !== 'string') return;
    if (msg.type === 'welcome') {
      ws._welcomed = true;
      this._onWelcome(msg);
      this._dispatch(msg);
      return;
    }
    if (typeof msg.seq === 'number') {
      if (msg.seq <= this.lastSeq) {
        this.stats.duplicates++;
        return;
      }
      this.lastSeq = msg.seq;
      if (this.lastSeq - this._reportedSeq >= 32) this._reportReceived();
    }
    if (msg.type === 'ice-servers' && Array.isArray(msg.iceServers)) this.iceServers = msg.iceServers;
    if (REPLY_TYPES.has(msg.type) && msg.id !== undefined && this._pending.has(msg.id)) {
      const req = this._pending.get(msg.id);
      this._pending.delete(msg.id);
      if (msg.type === 'error') {
        // A leave resent after a resume may find the room already left: that is the answer we wanted.
        if (req.msg.type === 'leave' && msg.code === 'not-in-room' && req.resent) req.resolve({ type: 'left', room: req.msg.room, id: msg.id });
        else req.reject(new SignalError(msg.code, msg.message, req.msg));
      } else {
        req.resolve(msg);
      }
    }
    this._dispatch(msg);
  }

  _dispatch(msg) {
    this._emit(msg.type, msg);
    this._emit('*', msg);
  }

  _onWelcome(msg) {
    clearTimeout(this._timers.connect);
    const previousPeer = this.peer;
    const first = this._firstConnect;
    this._firstConnect = null;
    this.stats.connects++;
    this.peer = msg.peer;
    this.session = msg.session;
    this.iceServers = Array.isArray(msg.iceServers) ? msg.iceServers : [];
    this.heartbeat = msg.heartbeat ?? null;
    this.limits = msg.limits ?? null;
    this._attempt = 0;
    this._outq = [];
    for (const stale of this._stale ?? []) {
      try {
        stale.close(1000); // the hub already moved the session here; this only frees the socket
      } catch {}
    }
    this._stale = [];
    this._setState('open');
    this._startLiveness();
    this._scheduleTokenRefresh(this._token ? tokenExpiry(this._token) : null);

    if (first) {
      this._flushPending(false);
      first.resolve();
      return;
    }
    if (msg.resumed) {
      this.stats.resumes++;
      if (msg.gap) this.stats.gaps++;
      this._flushPending(true);
      this._emit('resumed', { gap: !!msg.gap });
      return;
    }
    // A fresh session after 4002: others saw us leave. Signals (and updates) meant for the old session are
    // void; joins, leaves and pings are resent, and every room we want to be in is joined again, with the
    // latest meta given to `update`.
    this.stats.resets++;
    this.lastSeq = 0;
    this._reportedSeq = 0;
    for (const [id, req] of this._pending) {
      if (SIGNAL_TYPES.has(req.msg.type) || req.msg.type === 'update') {
        this._pending.delete(id);
        req.reject(new SignalError('session-reset', 'the session ended before this was answered', req.msg));
      }
    }
    const joining = new Set([...this._pending.values()].filter((r) => r.msg.type === 'join').map((r) => r.msg.room));
    this._flushPending(true);
    for (const [room, meta] of this.rooms) {
      if (!joining.has(room)) this._request(meta === undefined ? { type: 'join', room } : { type: 'join', room, meta }).catch(() => {});
    }
    this._emit('reset', { peer: this.peer, previousPeer });
  }

  // ---- outgoing ----------------------------------------------------------------------------------

  _request(msg) {
    if (this._closed) return Promise.reject(new SignalError('closed', 'client is closed', msg));
    if (msg.id === undefined) msg.id = `${this._idPrefix}${this._nextID++}`;
    return new Promise((resolve, reject) => {
      const req = { msg, resolve, reject, sent: false, resent: false };
      this._pending.set(msg.id, req);
      if (this._isOpen()) this._transmit(req);
    });
  }

  _isOpen() {
    return this._ws && this._ws._welcomed && this._ws.readyState === 1;
  }

  _flushPending(resend) {
    for (const [id, req] of this._pending) {
      if (req.sent && resend && req.msg.volatile) {
        // Volatile messages are not worth a resend after a drop: their moment has passed.
        this._pending.delete(id);
        req.reject(new SignalError('not-connected', 'the connection dropped before the hub answered', req.msg));
        continue;
      }
      if (req.sent && resend) {
        req.resent = true;
        this.stats.resent++;
      }
      this._transmit(req);
    }
  }

  _transmit(req) {
    const first = !req.sent;
    req.sent = true;
    this._enqueue(JSON.stringify(req.msg));
    if (first) this._emit('sent', req.msg);
  }

  /** Paces outgoing frames with a token bucket so a burst of ICE candidates never hits the rate limit. */
  _enqueue(text) {
    this._outq.push(text);
    this._pump();
  }

  _pump() {
    const now = Date.now();
    const { rateBurst, ratePerSecond } = this.options;
    this._tokens = Math.min(rateBurst, this._tokens + ((now - this._tokensAt) * ratePerSecond) / 1000);
    this._tokensAt = now;
    while (this._outq.length && this._tokens >= 1 && this._isOpen()) {
      this._ws.send(this._outq.shift());
      this._tokens -= 1;
    }
    if (this._outq.length && this._isOpen() && !this._timers.pump) {
      const wait = Math.ceil(((1 - this._tokens) * 1000) / ratePerSecond);
      this._timers.pump = setTimeout(() => {
        this._timers.pump = null;
        this._pump();
      }, wait);
    }
  }

  _reportReceived() {
    if (this.lastSeq > this._reportedSeq && this._isOpen()) {
      this._reportedSeq = this.lastSeq;
      this._enqueue(JSON.stringify({ type: 'received', seq: this.lastSeq }));
    }
  }

  // ---- liveness ----------------------------------------------------------------------------------

  _startLiveness() {
    this._stopLiveness();
    this._lastInbound = Date.now();
    this._liveness = setInterval(() => {
      this._reportReceived();
      if (Date.now() - this._lastInbound >= this.options.pingInterval && !this._timers.pong) this._sendPing();
    }, Math.min(this.options.receivedInterval, this.options.pingInterval));
  }

  _stopLiveness() {
    clearInterval(this._liveness);
    this._liveness = null;
    clearTimeout(this._timers.pong);
    this._timers.pong = null;
  }

  _sendPing() {
    if (!this._isOpen()) return;
    const ws = this._ws;
    this.stats.pings++;
    this._enqueue('{"type":"ping"}');
    clearTimeout(this._timers.pong);
    this._timers.pong = setTimeout(() => {
      this._timers.pong = null;
      if (this._ws === ws && Date.now() - this._lastInbound >= this.options.pongTimeout) {
        this.stats.deadSockets++;
        this._abandon(ws, 'no pong');
      }
    }, this.options.pongTimeout);
  }
}

// ---- perfect negotiation ---------------------------------------------------------------------------

/**
 * One RTCPeerConnection to one remote peer, negotiated through a SignalClient.
 *
 * Options: `room` (scope the signals to a room; the link closes when the peer leaves it), `polite`
 * (default: our id sorts greater), `configuration` (RTCConfiguration; default uses the hub's
 * iceServers, kept up to date: the hub's `ice-servers` refreshes and the credentials of every new
 * `welcome` are applied with `setConfiguration`, so an ICE restart late in a long call still gets a TURN
 * allocation; an app that passes its own `configuration.iceServers` keeps them), `channel` (data channel options; default a negotiated channel `{label: 'data', id: 0}`
 * that both sides create, or `false` for none; with `negotiated: false` the impolite side creates
 * it and the other receives it).
 *
 * Events: `open` (channel), `message` (data, event), `state` (connectionState), `signal`
 * ({direction, msg}), `error` (err), `close` ({reason}).
 */
export class PeerLink extends Emitter {
  constructor(client, remote, options = {}) {
    super();
    if (!client.peer) throw new SignalError('not-connected', 'connect the client first');
    this.client = client;
    this.remote = remote;
    this.room = options.room;
    this.polite = options.polite ?? client.peer > remote;
    this.closed = false;
    this.channel = null;
    this.stats = { offers: 0, answers: 0, candidates: 0, ignoredOffers: 0, rollbacks: 0, restarts: 0, iceServerUpdates: 0 };
    const configuration = { iceServers: client.iceServers, ...(options.configuration ?? {}) };
    this._ownIceServers = options.configuration?.iceServers !== undefined;
    this.pc = new RTCPeerConnection(configuration);
    this._makingOffer = false;
    this._ignoreOffer = false;
    this._settingRemoteAnswer = false;
    this._chain = Promise.resolve();
    let resolveReady, rejectReady;
    this.ready = new Promise((resolve, reject) => {
      resolveReady = resolve;
      rejectReady = reject;
    });
    this.ready.catch(() => {});
    this._resolveReady = resolveReady;
    this._rejectReady = rejectReady;

    const pc = this.pc;
    pc.onnegotiationneeded = () => this._negotiate();
    pc.onicecandidate = ({ candidate }) => {
      if (this.closed) return;
      const json = candidate ? candidate.toJSON() : null;
      if (json && !json.candidate) return; // per-generation end marker; the null candidate follows
      this._signal({ type: 'candidate', candidate: json });
    };
    pc.onconnectionstatechange = () => {
      this._emit('state', pc.connectionState);
      if (pc.connectionState === 'failed') this.restart();
    };
    pc.ondatachannel = ({ channel }) => this._adopt(channel);

    const channelOptions = options.channel === undefined ? { label: 'data', negotiated: true, id: 0 } : options.channel;
    if (channelOptions) {
      const { label = 'data', ...init } = channelOptions;
      if (init.negotiated || !this.polite) this._adopt(pc.createDataChannel(label, init));
    }

    const mine = (msg) => msg.from === this.remote;
    this._offs = [
      client.on('offer', (m) => mine(m) && this._enqueue(() => this._onDescription(m))),
      client.on('answer', (m) => mine(m) && this._enqueue(() => this._onDescription(m))),
      client.on('candidate', (m) => mine(m) && this._enqueue(() => this._onCandidate(m))),
      client.on('bye', (m) => mine(m) && this.close({ reason: 'bye', bye: false })),
      client.on('peer-left', (m) => m.peer === this.remote && (!this.room || m.room === this.room) && this.close({ reason: 'peer-left', bye: false })),
      client.on('reset', () => this.close({ reason: 'reset', bye: false })),
      client.on('close', () => this.close({ reason: 'client-closed', bye: false })),
      client.on('resumed', ({ gap }) => gap && this.restart()),
      client.on('ice-servers', () => this._applyIceServers()),
      client.on('welcome', () => this._applyIceServers()),
    ];
  }

  /** Hands the client's current ICE servers (fresh TURN credentials) to the RTCPeerConnection. */
  _applyIceServers() {
    if (this.closed || this._ownIceServers) return;
    try {
      this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: this.client.iceServers });
      this.stats.iceServerUpdates++;
    } catch (err) {
      this._emit('error', err);
    }
  }

  /** Sends over the data channel (once open). */
  send(data) {
    if (!this.channel || this.channel.readyState !== 'open') throw new SignalError('not-open', 'the data channel is not open');
    this.channel.send(data);
  }

  /** Restarts ICE (after a failure, or when signals may have been lost). */
  async restart() {
    if (this.closed) return;
    this.stats.restarts++;
    try {
      if (this.pc.signalingState === 'have-local-offer') {
        // Our offer or its answer may be lost: start over.
        await this.pc.setLocalDescription({ type: 'rollback' });
      }
      this.pc.restartIce();
    } catch (err) {
      this._emit('error', err);
    }
  }

  /** Closes the connection; tells the remote (`bye`) unless `bye: false`. */
  close({ reason = 'closed', bye = true } = {}) {
    if (this.closed) return;
    this.closed = true;
    for (const off of this._offs) off();
    if (bye && this.client.state !== 'closed') this._signal({ type: 'bye' });
    try {
      this.pc.close();
    } catch {}
    this._rejectReady(new SignalError('closed', reason));
    this._emit('state', 'closed');
    this._emit('close', { reason });
  }

  _adopt(channel) {
    this.channel = channel;
    channel.onopen = () => {
      this._resolveReady(channel);
      this._emit('open', channel);
    };
    channel.onmessage = (ev) => this._emit('message', ev.data, ev);
    channel.onclose = () => this._emit('channel-close', channel);
    if (channel.readyState === 'open') channel.onopen();
  }

  _enqueue(task) {
    this._chain = this._chain.then(task).catch((err) => this._emit('error', err));
  }

  _signal(msg) {
    if (this.room) msg.room = this.room;
    msg.to = this.remote;
    this._emit('signal', { direction: 'out', msg });
    this.client.send(msg).catch((err) => {
      if (!this.closed) this._emit('error', err);
    });
  }

  async _negotiate() {
    if (this.closed) return;
    let settled;
    this._offerSettled = new Promise((resolve) => (settled = resolve));
    try {
      this._makingOffer = true;
      await this.pc.setLocalDescription();
      const { type, sdp } = this.pc.localDescription;
      if (type === 'offer') this.stats.offers++;
      this._signal({ type, sdp });
    } catch (err) {
      this._emit('error', err);
    } finally {
      this._makingOffer = false;
      this._firstCandidate(250).then(settled);
    }
  }

  /** Resolves on the next local candidate (or the end of gathering), or after `ms`. */
  _firstCandidate(ms) {
    const pc = this.pc;
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        pc.removeEventListener('icecandidate', done);
        pc.removeEventListener('icegatheringstatechange', onState);
        resolve();
      };
      const onState = () => pc.iceGatheringState === 'complete' && done();
      const timer = setTimeout(done, ms);
      if (pc.iceGatheringState === 'complete') return done();
      pc.addEventListener('icecandidate', done);
      pc.addEventListener('icegatheringstatechange', onState);
    });
  }

  async _onDescription(msg) {
    if (this.closed) return;
    this._emit('signal', { direction: 'in', msg });
    const pc = this.pc;
    const description = { type: msg.type, sdp: msg.sdp };
    const readyForOffer = !this._makingOffer && (pc.signalingState === 'stable' || this._settingRemoteAnswer);
    const collision = description.type === 'offer' && !readyForOffer;
    this._ignoreOffer = !this.polite && collision;
    if (this._ignoreOffer) {
      this.stats.ignoredOffers++;
      return;
    }
    if (description.type === 'answer' && pc.signalingState !== 'have-local-offer') {
      return; // an answer to an offer we rolled back or already settled
    }
    if (collision) {
      this.stats.rollbacks++;
      // Chromium loses the ICE gathering of the answer when an offer is rolled back in the same
      // moment its own gathering starts; let our offer settle (first local candidate, ≤ 250 ms) first.
      await this._offerSettled;
    }
    this._settingRemoteAnswer = description.type === 'answer';
    try {
      await pc.setRemoteDescription(description); // rolls back our own offer when needed
    } finally {
      this._settingRemoteAnswer = false;
    }
    if (description.type === 'offer') {
      await pc.setLocalDescription();
      this.stats.answers++;
      this._signal({ type: 'answer', sdp: pc.localDescription.sdp });
    }
  }

  async _onCandidate(msg) {
    if (this.closed) return;
    this._emit('signal', { direction: 'in', msg });
    this.stats.candidates++;
    try {
      await this.pc.addIceCandidate(msg.candidate ?? undefined);
    } catch (err) {
      // Candidates of an offer we ignored fail, and so may an end-of-candidates marker.
      if (!this._ignoreOffer && msg.candidate) throw err;
    }
  }
}

/** Wires one RTCPeerConnection to `client` for `remote`; `await link.ready` gives an open data channel. */
export function connectPeer(client, remote, options) {
  return new PeerLink(client, remote, options);
}

export default SignalClient;
