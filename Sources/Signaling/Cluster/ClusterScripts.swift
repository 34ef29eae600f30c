import SignalRedis

/// The Lua scripts that make Redis the cluster's shared engine. Each runs atomically on the one hash slot
/// its keys share, so the same scripts work on one Redis server and on Redis Cluster.
///
/// A session's scripts take the four keys of ``ClusterKeys/session(_:)`` (`s`, `b`, `m`, `r`, all
/// with the peer id as hash tag); a room's take its one key. What a script decides for another slot (a
/// `peer-left` for each member of a room, an `expired` notice for a sender) it returns to the node,
/// which carries it out with further scripts.
///
/// Buffer entries: `b` holds the sequenced messages as sent, `m` one descriptor per entry in the same
/// order, `seq|queued|type|sender|request id` (`queued` is 1 for a signal no connection has received
/// yet; `type`, `sender` and `id` say whom to tell if it expires: empty for presence events and for a
/// message delivered when it was buffered, which never expires).
enum ClusterScripts {
    /// Functions shared by the session scripts.
    private static let common = """
        local function parseMeta(meta)
            local seq, q, typ, sender, rid = string.match(meta, '^(%d+)|(%d)|([^|]*)|([^|]*)|(.*)$')
            return tonumber(seq), q, typ, sender, rid
        end
        -- To the node's channel: `PUBLISH prefix..node`, or with a `+prefix` (Redis Cluster) `SPUBLISH` to the
        -- node's channel for this session, `prefix..node..':{peer}'`, in the slot of the session's keys (`key`,
        -- the session hash; KEYS[1] when not given).
        local function notify(prefix, node, msg, key)
            if string.sub(prefix, 1, 1) == '+' then
                local tag = string.match(key or KEYS[1], '{[^}]*}')
                return redis.call('SPUBLISH', string.sub(prefix, 2) .. node .. ':' .. tag, msg)
            end
            return redis.call('PUBLISH', prefix .. node, msg)
        end
        local function expireAll(K, ttl)
            for i = 1, 4 do redis.call('PEXPIRE', K[i], ttl) end
        end
        local function owns(K, node, conn)
            local f = redis.call('HMGET', K[1], 'node', 'conn', 'away')
            return f[1] == node and f[2] == conn and f[3] == '0'
        end
        -- Everything queued is now being delivered: it no longer counts against the queue bound.
        local function clearQueued(K)
            local metas = redis.call('LRANGE', K[3], 0, -1)
            for i, meta in ipairs(metas) do
                local seq, q, typ, sender, rid = parseMeta(meta)
                if q == '1' then redis.call('LSET', K[3], i - 1, seq .. '|0|' .. typ .. '|' .. sender .. '|' .. rid) end
            end
            redis.call('HSET', K[1], 'qn', 0, 'qb', 0)
        end
        -- Deletes a session; returns its rooms, where it was, and the senders of still-queued signals.
        local function endSession(K)
            local f = redis.call('HMGET', K[1], 'rooms', 'node', 'conn', 'away')
            local origins = {}
            for _, meta in ipairs(redis.call('LRANGE', K[3], 0, -1)) do
                local seq, q, typ, sender, rid = parseMeta(meta)
                if q == '1' and sender ~= '' then table.insert(origins, sender .. '|' .. typ .. '|' .. rid) end
            end
            redis.call('DEL', K[1], K[2], K[3], K[4])
            return f[1] or '', f[2] or '', f[3] or '', f[4] or '1', origins
        end

        """

    /// Creates a session. ARGV: token, node, conn, deadline (ms), ttl (ms), takeover (1/0), grant,
    /// channel prefix. Returns `{'created'}`, `{'taken'}`, or `{'took-over', rooms, origins}` (the older
    /// session ended; its connection is told to close with 4009).
    static let create = RedisScript(
        common + """
            local result = {'created'}
            if redis.call('EXISTS', KEYS[1]) == 1 then
                if ARGV[6] ~= '1' then return {'taken'} end
                local rooms, node, conn, away, origins = endSession(KEYS)
                if away == '0' and node ~= '' then notify(ARGV[8], node, 'K ' .. conn .. ' 4009') end
                result = {'took-over', rooms, origins}
            end
            redis.call('HSET', KEYS[1], 'tok', ARGV[1], 'node', ARGV[2], 'conn', ARGV[3], 'away', '0', 'dl', ARGV[4],
                'seq', 0, 'dropped', 0, 'qn', 0, 'qb', 0, 'bb', 0, 'rooms', '', 'grant', ARGV[7])
            expireAll(KEYS, ARGV[5])
            return result
            """
    )

    /// Resumes a session on (node, conn). ARGV: token, new token, node, conn, last, deadline, ttl, channel
    /// prefix. Returns `{'unknown'}` or `{'resumed', gap (0/1), seq, rooms, grant, {seq, message, …}}`
    /// with every buffered message after `last` (or every queued one when `last` is beyond `seq`, which is
    /// then raised to `last`, so that no later message reuses a number the client already has).
    static let resume = RedisScript(
        common + """
            local f = redis.call('HMGET', KEYS[1], 'tok', 'node', 'conn', 'away', 'seq', 'dropped', 'rooms', 'grant')
            if not f[1] or f[1] ~= ARGV[1] then return {'unknown'} end
            if f[4] == '0' then notify(ARGV[8], f[2], 'K ' .. f[3] .. ' 4009') end
            redis.call('HSET', KEYS[1], 'tok', ARGV[2], 'node', ARGV[3], 'conn', ARGV[4], 'away', '0', 'dl', ARGV[6])
            local last, seq, dropped = tonumber(ARGV[5]), tonumber(f[5]), tonumber(f[6])
            local gap = 0
            if last < dropped or last > seq then gap = 1 end
            local msgs = redis.call('LRANGE', KEYS[2], 0, -1)
            local out = {}
            for i, meta in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
                local eseq, q = parseMeta(meta)
                if eseq > last or (last > seq and q == '1') then
                    table.insert(out, tostring(eseq))
                    table.insert(out, msgs[i])
                end
            end
            clearQueued(KEYS)
            expireAll(KEYS, ARGV[7])
            -- The client has seen more than Redis remembers (a failover lost writes): number on from `last`.
            if last > seq then redis.call('HSET', KEYS[1], 'seq', last); seq = last end
            return {'resumed', gap, tostring(seq), f[7] or '', f[8] or '*', out}
            """
    )

    /// One delivery, shared by ``deliver`` and ``deliverBatch``: sequences one message for a session, keeps
    /// it in its resume buffer and hands it to `publish(node, conn, seq, message)`, which returns how many
    /// subscribers the node's channel has (0: nobody takes it, it waits in the buffer). The buffer lists
    /// get the session's expiry when they are created, the request-id set when it is next trimmed;
    /// ``touch`` keeps them alive after that.
    ///
    /// `mode` is `1` for a signal, `0` for a presence event or notice, `v` for a volatile signal: checked
    /// like a signal, then published with `seq` 0 (`prefix` is then the whole message, without `seq`) to
    /// a connected session only, and kept nowhere; `away` when the session is away or its node does not
    /// take it.
    ///
    /// Bounds are kept in chunks where that saves Redis work per delivery: a connected session's buffer is
    /// trimmed back to `maxn` messages once it holds an eighth more (the byte bound and the bound of what
    /// waits for an away session stay exact), and the request ids back to `maxn` every 32nd message.
    private static let deliverFunction = """
        -- Request ids already delivered to this peer are the members `sender|id` of the sorted set `kd`, scored
        -- `10 * seq + queued` (the peer's `seq` when it was delivered, with a digit appended: 1 when it was
        -- queued), so their status is the score's parity and the oldest go first; the score is the `seq`'s text
        -- and a digit, with no number to format. (Scores of earlier builds, `2 * seq + queued`, have the same
        -- parity and rank below.) A sorted set answers a lookup by hashing, where a field of the session hash
        -- would be a linear scan once it holds a few hundred ids. They are forgotten in chunks: every 32nd
        -- `seq`, whenever the delivery was queued and when the buffer was just created, the oldest beyond
        -- `maxn` go in one `ZREMRANGEBYRANK`, and the set gets the session's expiry (``touch`` keeps it alive
        -- after that).
        local function remember(k1, kd, dkey, score, maxn, every, ttl)
            redis.call('ZADD', kd, score, dkey)
            if every then
                redis.call('ZREMRANGEBYRANK', kd, 0, -(maxn + 1))
                ttl = ttl or redis.call('PTTL', k1)
                if ttl > 0 then redis.call('PEXPIRE', kd, ttl) end
            end
        end
        -- After a push that left `n` messages in the buffer: the oldest go until it is within its bounds. A
        -- delivered message beyond the count bound: the buffer is trimmed in chunks, once it holds an eighth
        -- more than `maxn`, back to `maxn` in one `LRANGE`/`LTRIM` per list; the byte bound, and the bound of
        -- what waits for an away session (`queued`), one message at a time. `st` holds the session's `qn`,
        -- `qb`, `bb` and `dropped`, updated here, and `expired`, which gets the origin of each queued signal
        -- pushed out. Returns whether anything went.
        local function bound(k2, k3, n, queued, st, maxn, maxb)
            local trimmed = false
            if not queued and n > maxn + math.floor(maxn / 8) then
                local c = n - maxn
                trimmed = true
                local olds = redis.call('LRANGE', k2, 0, c - 1)
                local ometas = redis.call('LRANGE', k3, 0, c - 1)
                redis.call('LTRIM', k2, c, -1)
                redis.call('LTRIM', k3, c, -1)
                n = n - c
                for i = 1, c do
                    local old, meta = olds[i], ometas[i]
                    st.bb = st.bb - #old
                    local bar = string.find(meta, '|', 1, true)
                    if string.byte(meta, bar + 1) == 49 then
                        local oseq, oq, otyp, osender, orid = parseMeta(meta)
                        st.qn = st.qn - 1
                        st.qb = st.qb - #old
                        if osender ~= '' then table.insert(st.expired, osender .. '|' .. otyp .. '|' .. orid) end
                    end
                    if i == c then
                        local oseq = tonumber(string.sub(meta, 1, bar - 1))
                        if oseq > st.dropped then st.dropped = oseq end
                    end
                end
            end
            while n > 0 do
                local over
                if queued then
                    over = st.qn > maxn or st.qb > maxb
                else
                    over = n > maxn + math.floor(maxn / 8) or st.bb > maxb
                end
                if not over then break end
                trimmed = true
                local old = redis.call('LPOP', k2)
                local oseq, oq, otyp, osender, orid = parseMeta(redis.call('LPOP', k3))
                n = n - 1
                st.bb = st.bb - #old
                if oseq > st.dropped then st.dropped = oseq end
                if oq == '1' then
                    st.qn = st.qn - 1
                    st.qb = st.qb - #old
                    if osender ~= '' then table.insert(st.expired, osender .. '|' .. otyp .. '|' .. orid) end
                end
            end
            return trimmed
        end
        local function deliverOne(k1, k2, k3, kd, prefix, sender, rid, typ, room, shared, maxn, maxb, mode, publish)
            local volatile = mode == 'v'
            local signal = mode == '1' or volatile
            local dkey = sender .. '|' .. rid
            local f = redis.call('HMGET', k1, 'node', 'conn', 'away', 'seq', 'rooms', 'qn', 'qb', 'bb', 'dropped')
            if not f[1] then return 'unavailable' end
            if signal then
                local rooms = ',' .. f[5] .. ','
                if room ~= '' then
                    if not string.find(rooms, ',' .. room .. ',', 1, true) then return 'not-in-room' end
                elseif shared ~= '-' then
                    local ok = false
                    for r in string.gmatch(shared, '[^,]+') do
                        if string.find(rooms, ',' .. r .. ',', 1, true) then ok = true break end
                    end
                    if not ok then return 'not-shared' end
                end
                if rid ~= '' then
                    local score = redis.call('ZSCORE', kd, dkey)
                    if score then
                        if tonumber(score) % 2 == 1 then return 'dup queued' end
                        return 'dup delivered'
                    end
                end
            end
            if volatile then
                if f[3] == '1' or publish(f[1], f[2], '0', prefix) == 0 then return 'away' end
                if rid ~= '' then remember(k1, kd, dkey, f[4] .. '0', maxn, redis.call('ZCARD', kd) > maxn + 32, nil) end
                return 'delivered ' .. f[1]
            end
            local away = f[3] == '1'
            local seq = tonumber(f[4]) + 1
            local ss = tostring(seq)
            local msg = prefix .. ss .. '}'
            local size = #msg
            local qn, qb, bb, dropped = tonumber(f[6]), tonumber(f[7]), tonumber(f[8]), tonumber(f[9])
            if away and signal and (qn >= maxn or qb + size > maxb) then return 'queue-full' end
            local receivers = 0
            if not away then receivers = publish(f[1], f[2], ss, msg) end
            local queued = away or receivers == 0
            local qflag = '0'
            if queued then qflag = '1'; qn = qn + 1; qb = qb + size end
            local n = redis.call('RPUSH', k2, msg)
            -- Whom to tell if it expires matters only while a signal is queued: a delivered one's descriptor
            -- leaves it out.
            if signal and queued then
                redis.call('RPUSH', k3, ss .. '|1|' .. typ .. '|' .. sender .. '|' .. rid)
            else
                redis.call('RPUSH', k3, ss .. '|' .. qflag .. '|||')
            end
            local ttl
            if n == 1 then
                ttl = redis.call('PTTL', k1)
                if ttl > 0 then redis.call('PEXPIRE', k2, ttl); redis.call('PEXPIRE', k3, ttl) end
            end
            bb = bb + size
            local st = {qn = qn, qb = qb, bb = bb, dropped = dropped, expired = {}}
            local trimmed = bound(k2, k3, n, queued, st, maxn, maxb)
            qn, qb, bb, dropped = st.qn, st.qb, st.bb, st.dropped
            local expired = st.expired
            local status = 'delivered'
            if queued then status = 'queued' end
            -- Only what changed: a live delivery that pushed nothing out moves `seq` and `bb` alone.
            if queued or trimmed then
                redis.call('HSET', k1, 'seq', ss, 'qn', qn, 'qb', qb, 'bb', bb, 'dropped', dropped)
            else
                redis.call('HSET', k1, 'seq', ss, 'bb', bb)
            end
            if signal and rid ~= '' then
                remember(k1, kd, dkey, ss .. qflag, maxn, queued or seq % 32 == 0 or ttl ~= nil, ttl)
            end
            if #expired == 0 then return status .. ' ' .. f[1] end
            return {status, f[1], expired}
        end
        -- Several deliveries to one session, in order (a batch's deliveries gathered by recipient: a peer's
        -- burst of trickled candidates arrives together), each decided as `deliverOne` decides it, but with
        -- the session read once, the request ids looked up in one `ZMSCORE`, and the buffer lists, the
        -- session and the request ids written once for all of them. Only for a session that is connected to
        -- a node that takes its messages (`takes(node)`: how many listen), what nearly every delivery finds:
        -- for any other it returns false before changing anything, and the caller has `deliverOne` decide
        -- each. `at[j]`: where the j-th delivery's arguments start in ARGV (prefix, sender, request id, type,
        -- room, shared, mode); its reply goes to `results[slot[j]]`. Why it decides as one at a time would:
        -- nothing else runs during the script, the checks read the same session, a request id remembered
        -- earlier in the group is found as it would be in the set, `seq` counts on in order, and the bounds
        -- are restored after the pushes, oldest first, as after each push (the count bound is kept in chunks
        -- anyway). Each `seq` is formatted once: turning a number into text is a `sprintf` in this Lua.
        local function deliverGroup(k1, k2, k3, kd, at, slot, maxn, maxb, takes, publish, results)
            local f = redis.call('HMGET', k1, 'node', 'conn', 'away', 'seq', 'rooms', 'qn', 'qb', 'bb', 'dropped')
            if not f[1] or f[3] ~= '0' or takes(f[1]) == 0 then return false end
            local node, conn, rooms = f[1], f[2], ',' .. f[5] .. ','
            local status, dkeys, lookup = {}, {}, {}
            for j, a in ipairs(at) do
                if ARGV[a + 6] ~= '0' then
                    local room, shared = ARGV[a + 4], ARGV[a + 5]
                    if room ~= '' then
                        if not string.find(rooms, ',' .. room .. ',', 1, true) then status[j] = 'not-in-room' end
                    elseif shared ~= '-' then
                        local ok = false
                        for r in string.gmatch(shared, '[^,]+') do
                            if string.find(rooms, ',' .. r .. ',', 1, true) then ok = true break end
                        end
                        if not ok then status[j] = 'not-shared' end
                    end
                    if not status[j] and ARGV[a + 2] ~= '' then
                        local dkey = ARGV[a + 1] .. '|' .. ARGV[a + 2]
                        dkeys[j] = dkey
                        lookup[#lookup + 1] = dkey
                    end
                end
            end
            local known = {}
            if #lookup > 0 then
                local scores = redis.call('ZMSCORE', kd, unpack(lookup))
                for i, dkey in ipairs(lookup) do
                    if scores[i] then known[dkey] = tonumber(scores[i]) end
                end
            end
            local seq0 = tonumber(f[4])
            local seq, ss, bb = seq0, f[4], tonumber(f[8])
            local msgs, metas, zadd = {}, {}, {}
            local volatile = false
            local delivered = 'delivered ' .. node
            local last
            for j, a in ipairs(at) do
                local dkey = dkeys[j]
                local score = dkey and known[dkey]
                if status[j] then
                    -- refused by the checks above
                elseif score then
                    if score % 2 == 1 then status[j] = 'dup queued' else status[j] = 'dup delivered' end
                elseif ARGV[a + 6] == 'v' then
                    publish(node, conn, '0', ARGV[a])
                    if dkey then
                        known[dkey] = 0
                        zadd[#zadd + 1] = ss .. '0'
                        zadd[#zadd + 1] = dkey
                        volatile = true
                    end
                    status[j] = delivered
                else
                    seq = seq + 1
                    ss = tostring(seq)
                    local msg = ARGV[a] .. ss .. '}'
                    publish(node, conn, ss, msg)
                    msgs[#msgs + 1] = msg
                    bb = bb + #msg
                    metas[#metas + 1] = ss .. '|0|||'
                    if dkey then
                        known[dkey] = 0
                        zadd[#zadd + 1] = ss .. '0'
                        zadd[#zadd + 1] = dkey
                    end
                    status[j] = delivered
                    last = j
                end
            end
            local ttl
            local expired = {}
            if #msgs > 0 then
                local n = redis.call('RPUSH', k2, unpack(msgs))
                redis.call('RPUSH', k3, unpack(metas))
                if n == #msgs then
                    ttl = redis.call('PTTL', k1)
                    if ttl > 0 then redis.call('PEXPIRE', k2, ttl); redis.call('PEXPIRE', k3, ttl) end
                end
                local st = {qn = tonumber(f[6]), qb = tonumber(f[7]), bb = bb, dropped = tonumber(f[9]), expired = expired}
                if bound(k2, k3, n, false, st, maxn, maxb) then
                    redis.call('HSET', k1, 'seq', ss, 'qn', st.qn, 'qb', st.qb, 'bb', st.bb, 'dropped', st.dropped)
                else
                    redis.call('HSET', k1, 'seq', ss, 'bb', st.bb)
                end
            end
            if #zadd > 0 then
                redis.call('ZADD', kd, unpack(zadd))
                local every = ttl ~= nil or math.floor(seq / 32) > math.floor(seq0 / 32)
                    or (volatile and redis.call('ZCARD', kd) > maxn + 32)
                if every then
                    redis.call('ZREMRANGEBYRANK', kd, 0, -(maxn + 1))
                    ttl = ttl or redis.call('PTTL', k1)
                    if ttl > 0 then redis.call('PEXPIRE', kd, ttl) end
                end
            end
            for j = 1, #at do results[slot[j]] = status[j] end
            -- Queued signals the bounds pushed out: their origins ride on the last delivery's reply.
            if #expired > 0 then results[slot[last]] = {'delivered', node, expired} end
            return true
        end
        -- A batch's `n` deliveries gathered by recipient, for `deliverGroup`: per recipient with more than one,
        -- where their arguments start (`at`, from `argsOf(d)`) and their places in the batch (`slot`), in
        -- order. `keyOf(d)`: delivery d's session hash.
        local function gather(n, keyOf, argsOf)
            local count, groups = {}, {}
            for d = 1, n do
                local k = keyOf(d)
                count[k] = (count[k] or 0) + 1
            end
            for d = 1, n do
                local k = keyOf(d)
                if count[k] > 1 then
                    local g = groups[k]
                    if not g then
                        g = {at = {}, slot = {}}
                        groups[k] = g
                    end
                    g.at[#g.at + 1] = argsOf(d)
                    g.slot[#g.slot + 1] = d
                end
            end
            return groups
        end

        """

    /// Sequences one message for a session, keeps it in its resume buffer and publishes it to the node
    /// that holds its connection (`D conn seq message`). ARGV: prefix (ends in `"seq":`), sender, request
    /// id, signal type, room, rooms the sender is in (`-` when no shared room is required), max messages,
    /// max bytes, mode (signal `1`, presence/notice `0`, volatile signal `v`: then the prefix is the whole
    /// message, published as `D conn 0 message`), channel prefix.
    ///
    /// Returns one string — `unavailable`, `not-in-room`, `not-shared`, `queue-full`, `away` (a volatile
    /// signal for a session that is away), `dup <status>` (a resent request: not delivered again) or
    /// `<status> <node>` — or, only when the buffer bound pushed out queued signals, `{status, node,
    /// {expired origins}}`. The status is `delivered` (published to a subscribed node) or `queued` (the
    /// peer is away, or its node did not take the message: it waits in the buffer for a resume). A plain
    /// string rather than a table per delivery: Redis converts and sends one value instead of three.
    static let deliver = RedisScript(
        common + deliverFunction + """
            local function publish(node, conn, seq, msg)
                return notify(ARGV[10], node, 'D ' .. conn .. ' ' .. seq .. ' ' .. msg)
            end
            return deliverOne(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                ARGV[5], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9], publish)
            """
    )

    /// Many deliveries in one call, in order (a node's pipelined signals, gathered while earlier batches
    /// were with Redis): each exactly as ``deliver`` decides it, but every node gets one `PUBLISH` per
    /// batch, `N` followed by ` conn seq length message` per message, in order. KEYS: the four session keys
    /// of each recipient. ARGV: max messages, max bytes, channel prefix, then per delivery: prefix, sender,
    /// request id, type, room, sender's rooms (or `-`), mode (`1`, `0` or `v`, as for ``deliver``). Returns
    /// one ``deliver`` reply per delivery.
    static let deliverBatch = RedisScript(
        common + deliverFunction + """
            local maxn, maxb, channels = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
            local receivers, out, order = {}, {}, {}
            local function takes(node)
                local n = receivers[node]
                if n == nil then
                    n = redis.call('PUBSUB', 'NUMSUB', channels .. node)[2]
                    receivers[node] = n
                end
                return n
            end
            local function publish(node, conn, seq, msg)
                local n = takes(node)
                if n > 0 then
                    local list = out[node]
                    if not list then list = {'N'}; out[node] = list; order[#order + 1] = node end
                    list[#list + 1] = ' ' .. conn .. ' ' .. seq .. ' ' .. #msg .. ' '
                    list[#list + 1] = msg
                end
                return n
            end
            -- A recipient with several deliveries in the batch has them decided together (``deliverGroup``),
            -- when its first one comes; one with a single delivery, by ``deliverOne`` (no tables to build).
            local groups = gather(#KEYS / 4, function(d) return KEYS[4 * d - 3] end, function(d) return 7 * d - 3 end)
            local results = {}
            for i = 1, #KEYS, 4 do
                local d = (i + 3) / 4
                local a = 7 * d - 3
                local g = groups[KEYS[i]]
                if not g then
                    results[d] = deliverOne(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], ARGV[a], ARGV[a + 1],
                        ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5], maxn, maxb, ARGV[a + 6], publish)
                elseif g.slot[1] == d and not deliverGroup(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], g.at,
                    g.slot, maxn, maxb, takes, publish, results) then
                    for j, ga in ipairs(g.at) do
                        results[g.slot[j]] = deliverOne(KEYS[i], KEYS[i + 1], KEYS[i + 2], KEYS[i + 3], ARGV[ga],
                            ARGV[ga + 1], ARGV[ga + 2], ARGV[ga + 3], ARGV[ga + 4], ARGV[ga + 5], maxn, maxb,
                            ARGV[ga + 6], publish)
                    end
                end
            end
            for _, node in ipairs(order) do
                redis.call('PUBLISH', channels .. node, table.concat(out[node]))
            end
            return results
            """
    )

    /// ``deliverBatch`` for a Redis Cluster, where a batch's recipients live in different slots: one call
    /// for the deliveries whose slots one primary serves. KEYS: the first recipient's session hash (it
    /// routes the call). ARGV: max messages, max bytes, channel prefix, then per delivery its recipient's
    /// four session keys and the seven arguments of ``deliverBatch``. The other session keys are not
    /// declared: a script may touch keys of other slots when this primary serves them. First every
    /// recipient's hash is checked to be served here; if one is not (the slot moved: a failover or
    /// resharding the node's slot map has not caught up with), the call does nothing and answers `moved`,
    /// and the node sends each delivery alone (following the redirect). Otherwise one ``deliver`` reply per
    /// delivery; a recipient's deliveries are decided together as in ``deliverBatch`` and `SPUBLISH`ed to
    /// its channel in one `N` message; a recipient's single delivery goes as ``deliver`` sends it.
    static let deliverShardBatch = RedisScript(
        common + deliverFunction + """
            local maxn, maxb, channels = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
            local groups = gather((#ARGV - 3) / 11, function(d) return ARGV[11 * d - 7] end,
                function(d) return 11 * d - 3 end)
            local checked = {}
            for a = 4, #ARGV, 11 do
                if not checked[ARGV[a]] then
                    checked[ARGV[a]] = true
                    local here = redis.pcall('EXISTS', ARGV[a])
                    if type(here) == 'table' and here.err then return 'moved' end
                end
            end
            local results = {}
            for a = 4, #ARGV, 11 do
                local key = ARGV[a]
                local d = (a - 4) / 11 + 1
                local function publish(node, conn, seq, msg)
                    return notify(channels, node, 'D ' .. conn .. ' ' .. seq .. ' ' .. msg, key)
                end
                local g = groups[key]
                if not g then
                    results[d] = deliverOne(key, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5],
                        ARGV[a + 6], ARGV[a + 7], ARGV[a + 8], ARGV[a + 9], maxn, maxb, ARGV[a + 10], publish)
                elseif g.slot[1] == d then
                    -- The group's messages go in one `SPUBLISH` (`N …`) to the recipient's channel of its node.
                    local tag = string.match(key, '{[^}]*}')
                    local out, to = {'N'}, nil
                    local function channel(node) return string.sub(channels, 2) .. node .. ':' .. tag end
                    local function takes(node) return redis.call('PUBSUB', 'SHARDNUMSUB', channel(node))[2] end
                    local function gathered(node, conn, seq, msg)
                        to = node
                        out[#out + 1] = ' ' .. conn .. ' ' .. seq .. ' ' .. #msg .. ' '
                        out[#out + 1] = msg
                        return 1
                    end
                    if deliverGroup(key, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], g.at, g.slot, maxn, maxb, takes,
                        gathered, results) then
                        if to then redis.call('SPUBLISH', channel(to), table.concat(out)) end
                    else
                        for j, ga in ipairs(g.at) do
                            results[g.slot[j]] = deliverOne(key, ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[ga],
                                ARGV[ga + 1], ARGV[ga + 2], ARGV[ga + 3], ARGV[ga + 4], ARGV[ga + 5], maxn, maxb,
                                ARGV[ga + 6], publish)
                        end
                    end
                end
            end
            return results
            """
    )

    /// What a refresh (or a detach) does besides the deadline: drops the buffer's entries the client
    /// confirmed with `received` up to `through` (0: nothing new), oldest first, stopping at the first one
    /// still queued or numbered above `through`. A node does not run a script for each `received`: it
    /// keeps the highest confirmed `seq` of each connection and hands it to the next refresh (``touch``,
    /// ``touchBatch``), or to ``detach`` when the socket closes first, which trims with one `LRANGE` per
    /// list and one `LTRIM` each, however many entries go. `k1`, `k2`, `k3`: the session's hash, buffer
    /// and descriptors; the caller checked the owner.
    private static let trimFunction = """
        local function trimThrough(k1, k2, k3, through)
            if through <= 0 then return 0 end
            local first = redis.call('LINDEX', k3, 0)
            if not first then return 0 end
            local n = through - tonumber(string.match(first, '^%d+')) + 1
            if n <= 0 then return 0 end
            local metas = redis.call('LRANGE', k3, 0, n - 1)
            n = 0
            for _, meta in ipairs(metas) do
                local seq, q = string.match(meta, '^(%d+)|(%d)')
                if q == '1' or tonumber(seq) > through then break end
                n = n + 1
            end
            if n == 0 then return 0 end
            local bytes = 0
            for _, msg in ipairs(redis.call('LRANGE', k2, 0, n - 1)) do bytes = bytes + #msg end
            redis.call('LTRIM', k2, n, -1)
            redis.call('LTRIM', k3, n, -1)
            redis.call('HINCRBY', k1, 'bb', -bytes)
            return n
        end

        """

    /// The owning connection dropped without ending its session: it waits for a resume until `deadline`.
    /// ARGV: node, conn, deadline, ttl, and optionally what the client confirmed since the last refresh
    /// (``trimFunction``). Returns 1, or 0 when (node, conn) no longer owns it.
    static let detach = RedisScript(
        common + trimFunction + """
            if not owns(KEYS, ARGV[1], ARGV[2]) then return 0 end
            trimThrough(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[5] or '0'))
            redis.call('HSET', KEYS[1], 'away', '1', 'dl', ARGV[3])
            expireAll(KEYS, ARGV[4])
            return 1
            """
    )

    /// The owning node keeps a live session alive. ARGV: node, conn, deadline, ttl, and optionally the
    /// highest `seq` the client confirmed since the last refresh (``trimFunction``). Returns 1; 0 when the
    /// session is gone; 2 when another connection owns it now.
    static let touch = RedisScript(
        common + trimFunction + """
            if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
            if not owns(KEYS, ARGV[1], ARGV[2]) then return 2 end
            redis.call('HSET', KEYS[1], 'dl', ARGV[3])
            trimThrough(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[5] or '0'))
            expireAll(KEYS, ARGV[4])
            return 1
            """
    )

    /// ``touch`` for many sessions of this node in one call (a refresh): what touching a session every
    /// `--cluster-refresh` costs Redis is most of what an idle cluster costs it. KEYS: the first session's
    /// hash (it routes the call). ARGV: node, deadline, ttl, `1` to check first that every session's hash
    /// is served here (a Redis Cluster primary: else the call does nothing and answers `moved`, as
    /// ``deliverShardBatch``), then per session its hash key, connection and confirmed `seq` (0: nothing
    /// new; ``trimFunction``). Per session, one ``touch`` reply (1, 0 or 2). Cheaper than ``touch`` per
    /// session: the ownership read and the deadline write as there, but the four keys' expiry (twice the
    /// live period and a minute) renewed only once half of it is gone, not at every refresh. The other
    /// keys' names are the hash key's with its last letter replaced (``ClusterKeys/session(_:)``).
    static let touchBatch = RedisScript(
        trimFunction + """
            local node, deadline, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
            if ARGV[4] == '1' then
                for a = 5, #ARGV, 3 do
                    local here = redis.pcall('EXISTS', ARGV[a])
                    if type(here) == 'table' and here.err then return 'moved' end
                end
            end
            local out = {}
            for a = 5, #ARGV, 3 do
                local k = ARGV[a]
                local f = redis.call('HMGET', k, 'node', 'conn', 'away')
                if not f[1] then
                    out[#out + 1] = 0
                elseif f[1] ~= node or f[2] ~= ARGV[a + 1] or f[3] ~= '0' then
                    out[#out + 1] = 2
                else
                    redis.call('HSET', k, 'dl', deadline)
                    local base = string.sub(k, 1, -2)
                    trimThrough(k, base .. 'b', base .. 'm', tonumber(ARGV[a + 2]))
                    if redis.call('PTTL', k) < ttl / 2 then
                        for _, suffix in ipairs({'s', 'b', 'm', 'r'}) do redis.call('PEXPIRE', base .. suffix, ttl) end
                    end
                    out[#out + 1] = 1
                end
            end
            return out
            """
    )

    /// Ends a session: mode `close` (its owning connection (ARGV[2], ARGV[3]) closed it), or `expire`
    /// (only when its deadline ARGV[4] ms has passed; a node still holding it is told to close with 4002).
    /// ARGV[5] is the channel prefix. In `expire` mode, ARGV[6] (optional) lists the live nodes as
    /// ` a b c ` and ARGV[7] is the oldest deadline they protect: a session still connected to a live node
    /// whose deadline passed after ARGV[7] is `protected`, not ended (its node is alive but its refresh did
    /// not get through, e.g. Redis was seconds behind). Returns `{'gone'}`, `{'alive'}`, `{'protected'}` or
    /// `{'ended', rooms, origins}`.
    static let end = RedisScript(
        common + """
            local f = redis.call('HMGET', KEYS[1], 'node', 'conn', 'away', 'dl')
            if not f[1] then return {'gone'} end
            if ARGV[1] == 'close' then
                if f[1] ~= ARGV[2] or f[2] ~= ARGV[3] then return {'gone'} end
            elseif tonumber(f[4]) > tonumber(ARGV[4]) then
                return {'alive'}
            elseif ARGV[6] and f[3] == '0' and tonumber(f[4]) > tonumber(ARGV[7])
                and string.find(ARGV[6], ' ' .. f[1] .. ' ', 1, true) then
                return {'protected'}
            end
            local rooms, node, conn, away, origins = endSession(KEYS)
            if ARGV[1] ~= 'close' and away == '0' then notify(ARGV[5], node, 'K ' .. conn .. ' 4002') end
            return {'ended', rooms, origins}
            """
    )

    /// Ends a session from outside (the server API's `DELETE /v1/peers/{peer}`), wherever its connection is:
    /// the node holding it is told to close it with 4003 (`kicked`). ARGV: channel prefix. Returns `{'gone'}`
    /// or `{'ended', rooms, origins}` (as ``end``).
    static let kick = RedisScript(
        common + """
            if redis.call('EXISTS', KEYS[1]) == 0 then return {'gone'} end
            local rooms, node, conn, away, origins = endSession(KEYS)
            if away == '0' and node ~= '' then notify(ARGV[1], node, 'K ' .. conn .. ' 4003') end
            return {'ended', rooms, origins}
            """
    )

    /// What the connection (node, conn) missed: every buffered message after `after`. ARGV: node, conn,
    /// after. Returns `{'gone'}` when it no longer owns the session, or `{'ok', {seq, message, …}}`. When
    /// `after` is above the session's `seq` (Redis lost writes in a failover that the connection had
    /// already received), `seq` is raised to `after`, so no later message reuses a number the client has.
    static let since = RedisScript(
        common + """
            if not owns(KEYS, ARGV[1], ARGV[2]) then return {'gone'} end
            local after = tonumber(ARGV[3])
            -- The connection has seen more than Redis remembers (a failover lost writes not yet replicated):
            -- number on from what it has seen, never reusing a seq it holds.
            if after > tonumber(redis.call('HGET', KEYS[1], 'seq')) then redis.call('HSET', KEYS[1], 'seq', after) end
            local msgs = redis.call('LRANGE', KEYS[2], 0, -1)
            local out = {}
            for i, meta in ipairs(redis.call('LRANGE', KEYS[3], 0, -1)) do
                local eseq = parseMeta(meta)
                if eseq > after then
                    table.insert(out, tostring(eseq))
                    table.insert(out, msgs[i])
                end
            end
            clearQueued(KEYS)
            return {'ok', out}
            """
    )

    /// Adds (`add`) or removes (`del`) a room in the session's room list, or (`grant`) replaces the
    /// session's room grant (``RoomGrant/clusterString``). ARGV: op, room or grant. Returns the list
    /// (comma-separated), or false when the session is gone.
    static let sessionRooms = RedisScript(
        """
        local rooms = redis.call('HGET', KEYS[1], 'rooms')
        if not rooms then return false end
        if ARGV[1] == 'grant' then
            redis.call('HSET', KEYS[1], 'grant', ARGV[2])
            return rooms
        end
        local list = {}
        for r in string.gmatch(rooms, '[^,]+') do
            if r ~= ARGV[2] then table.insert(list, r) end
        end
        if ARGV[1] == 'add' then table.insert(list, ARGV[2]) end
        local joined = table.concat(list, ',')
        redis.call('HSET', KEYS[1], 'rooms', joined)
        return joined
        """
    )

    /// Joins a room (its members hash). ARGV: peer, meta (raw JSON or empty), max peers. Returns
    /// `{'full'}` or `{'new' | 'again' | 'changed', {peer, meta, …}}` with every member, the joiner
    /// included: `changed` is a re-join whose meta differs from the stored one (compared as sent, no meta
    /// counting as `{}`: ``RoutingPolicy/rejoinUpdates(previous:meta:)``), which the others hear of.
    static let joinRoom = RedisScript(
        """
        local previous = redis.call('HGET', KEYS[1], ARGV[1])
        if not previous and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return {'full'} end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        local status = 'new'
        if previous then
            local function norm(meta) if meta == '' then return '{}' end return meta end
            status = 'again'
            if norm(previous) ~= norm(ARGV[2]) then status = 'changed' end
        end
        return {status, redis.call('HGETALL', KEYS[1])}
        """
    )

    /// Replaces a member's meta (an `update`). ARGV: peer, meta (raw JSON). Returns `{'absent'}` when the
    /// peer is not a member, else `{'updated', {members…}}` (every member, the peer included).
    static let updateMeta = RedisScript(
        """
        if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return {'absent'} end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        return {'updated', redis.call('HKEYS', KEYS[1])}
        """
    )

    /// Counts a room against its tenant (KEYS[1], the tenant's room set) before a join. ARGV: room, the most
    /// rooms. Returns 1 when the room is in the set (already, or added now), 0 when the set is full.
    static let reserveRoom = RedisScript(
        """
        if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
        if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
        redis.call('SADD', KEYS[1], ARGV[1])
        return 1
        """
    )

    /// Leaves a room. ARGV: peer. Returns `{removed (0/1), {remaining members…}}`.
    static let leaveRoom = RedisScript(
        """
        local removed = redis.call('HDEL', KEYS[1], ARGV[1])
        return {removed, redis.call('HKEYS', KEYS[1])}
        """
    )

    /// Removes a peer from the deadline index if its deadline has passed. KEYS: index. ARGV: peer, now.
    static let forgetDeadline = RedisScript(
        """
        local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
        if score and tonumber(score) <= tonumber(ARGV[2]) then return redis.call('ZREM', KEYS[1], ARGV[1]) end
        return 0
        """
    )

    static let all: [RedisScript] = [
        create, resume, deliver, deliverBatch, deliverShardBatch, detach, touch, touchBatch, end, kick, since,
        sessionRooms, joinRoom, updateMeta, leaveRoom, forgetDeadline, reserveRoom,
    ]
}
