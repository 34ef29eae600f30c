import SignalRedis

/// The delivery scripts: ``deliver`` (one message), ``deliverBatch`` (a node's pipelined signals, on one
/// Redis) and ``deliverShardBatch`` (the same per Redis Cluster primary), with the Lua they share
/// (`deliverOne`, `deliverGroup`, the bounds and the request-id memory).
extension ClusterScripts {
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
        -- Whole numbers are turned into text with `format('%d', n)`: `tostring` (and `..` with a number)
        -- formats with `%.14g`, which glibc does in multi-precision arithmetic, ~1,000 instructions more.
        local format = string.format
        -- Request ids already delivered to this peer are the members `sender|id` of the sorted set `kd`, scored
        -- `10 * seq + queued` (the peer's `seq` when it was delivered, with a digit appended: 1 when it was
        -- queued), so their status is the score's parity and the oldest go first; the score is the `seq`'s text
        -- and a digit, with no number to format. (Scores of earlier builds, `2 * seq + queued`, have the same
        -- parity and rank below.) A sorted set answers a lookup by hashing, where a field of the session hash
        -- would be a linear scan once it holds a few hundred ids. They are forgotten in chunks: every 32nd
        -- `seq`, whenever the delivery was queued and when the buffer was just created, the oldest beyond
        -- `maxn` go in one `ZREMRANGEBYRANK`, and the set gets the session's expiry (``touch`` keeps it alive
        -- after that).
        local function forget(k1, kd, maxn, ttl)
            redis.call('ZREMRANGEBYRANK', kd, 0, -(maxn + 1))
            ttl = ttl or redis.call('PTTL', k1)
            if ttl > 0 then redis.call('PEXPIRE', kd, ttl) end
        end
        -- A single delivery claims its request id before it is delivered: `ZADD NX` adds it (scored as if
        -- the delivery will go as planned) and says whether it was new, one command where a lookup and a
        -- later add were two. Nil when new; otherwise the reply for a resent request, from its score.
        local function claim(kd, dkey, score)
            if redis.call('ZADD', kd, 'NX', score, dkey) == 1 then return nil end
            if tonumber(redis.call('ZSCORE', kd, dkey)) % 2 == 1 then return 'dup queued' end
            return 'dup delivered'
        end
        -- The session's counters of what waits for it while away (`qn`, `qb`) and the last `seq` pushed out
        -- unread (`dropped`), read into `st` when first needed: a live delivery within the bounds (nearly
        -- all of them) needs none of them, and each field read is a string Redis makes and Lua hashes and
        -- turns into a number.
        local function counters(st)
            if st.qn == nil then
                local c = redis.call('HMGET', st.k1, 'qn', 'qb', 'dropped')
                st.qn, st.qb, st.dropped = tonumber(c[1]), tonumber(c[2]), tonumber(c[3])
            end
        end
        -- Notes the origin of a queued signal the bounds pushed out (`st.expired`, made when first needed).
        local function expire(st, origin)
            local expired = st.expired
            if not expired then expired = {}; st.expired = expired end
            expired[#expired + 1] = origin
        end
        -- After a push that left `n` messages in the buffer: the oldest go until it is within its bounds. A
        -- delivered message beyond the count bound: the buffer is trimmed in chunks, once it holds an eighth
        -- more than `maxn`, back to `maxn` in one `LRANGE`/`LTRIM` per list; the byte bound, and the bound of
        -- what waits for an away session (`queued`), one message at a time. `st` holds the session's `bb`,
        -- and its `qn`, `qb` and `dropped` once `counters(st)` has read them, updated here, and `expired`,
        -- which gets the origin of each queued signal pushed out (`expire`). Returns whether anything went.
        local function bound(k2, k3, n, queued, st, maxn, maxb)
            local trimmed = false
            if not queued and n > maxn + math.floor(maxn / 8) then
                counters(st)
                local c = n - maxn
                trimmed = true
                local ometas = redis.call('LRANGE', k3, 0, c - 1)
                local olds
                n = n - c
                for i = 1, c do
                    local meta = ometas[i]
                    local bar = string.find(meta, '|', 1, true)
                    local q = string.byte(meta, bar + 1)
                    local size
                    if q == 50 then
                        size = tonumber(string.sub(meta, bar + 3, string.find(meta, '|', bar + 3, true) - 1))
                    else
                        -- Written by an earlier build, or queued: the message itself says how long it is.
                        olds = olds or redis.call('LRANGE', k2, 0, c - 1)
                        size = #olds[i]
                    end
                    st.bb = st.bb - size
                    if q == 49 then
                        local oseq, oq, otyp, osender, orid = parseMeta(meta)
                        st.qn = st.qn - 1
                        st.qb = st.qb - size
                        if osender ~= '' then expire(st, osender .. '|' .. otyp .. '|' .. orid) end
                    end
                    if i == c then
                        local oseq = tonumber(string.sub(meta, 1, bar - 1))
                        if oseq > st.dropped then st.dropped = oseq end
                    end
                end
                redis.call('LTRIM', k2, c, -1)
                redis.call('LTRIM', k3, c, -1)
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
                counters(st)
                local old = redis.call('LPOP', k2)
                local oseq, oq, otyp, osender, orid = parseMeta(redis.call('LPOP', k3))
                n = n - 1
                st.bb = st.bb - #old
                if oseq > st.dropped then st.dropped = oseq end
                if oq == '1' then
                    st.qn = st.qn - 1
                    st.qb = st.qb - #old
                    if osender ~= '' then expire(st, osender .. '|' .. otyp .. '|' .. orid) end
                end
            end
            return trimmed
        end
        -- After the pushes that left `n` messages in the buffer (`created`: they created it): the lists get
        -- the session's expiry when new, the bounds are restored (`bound`), and the session's counters are
        -- written: `seq` and `bb` alone when nothing was queued or pushed out. Returns the expiry it read.
        local function settle(k1, k2, k3, n, created, queued, st, ss, maxn, maxb)
            local ttl
            if created then
                ttl = redis.call('PTTL', k1)
                if ttl > 0 then redis.call('PEXPIRE', k2, ttl); redis.call('PEXPIRE', k3, ttl) end
            end
            if bound(k2, k3, n, queued, st, maxn, maxb) or queued then
                redis.call('HSET', k1, 'seq', ss, 'qn', format('%d', st.qn), 'qb', format('%d', st.qb),
                    'bb', format('%d', st.bb), 'dropped', format('%d', st.dropped))
            else
                redis.call('HSET', k1, 'seq', ss, 'bb', format('%d', st.bb))
            end
            return ttl
        end
        -- Adds a message to `list`, the parts of an `N` message to a node (` conn seq length message` each).
        -- True once the list holds more than ~6 KB of messages: the caller then sends it and starts another,
        -- so Lua's `table.concat` builds each in one buffer (beyond its 8 KB buffer it makes, hashes and
        -- joins strings piece by piece: Redis's Lua hashes every byte of every string it makes).
        local function appendN(list, conn, seq, msg, len)
            list[#list + 1] = ' ' .. conn .. ' ' .. seq .. ' ' .. (len or format('%d', #msg)) .. ' '
            list[#list + 1] = msg
            list.bytes = (list.bytes or 0) + #msg
            return list.bytes > 6000
        end
        -- Why a signal may not reach a session in `rooms` (`,a,b,`): it names a room the session is not in
        -- (`not-in-room`), or the sender must share a room with it and shares none of `shared`
        -- (`not-shared`; `-`: no shared room required). Nil when it may.
        local function refused(rooms, room, shared)
            if room ~= '' then
                if not string.find(rooms, ',' .. room .. ',', 1, true) then return 'not-in-room' end
            elseif shared ~= '-' then
                for r in string.gmatch(shared, '[^,]+') do
                    if string.find(rooms, ',' .. r .. ',', 1, true) then return nil end
                end
                return 'not-shared'
            end
            return nil
        end
        local function deliverOne(k1, k2, k3, kd, prefix, typ, srid, room, shared, maxn, maxb, mode, publish, f)
            local volatile = mode == 'v'
            local signal = mode ~= '0'
            local dkey
            f = f or redis.call('HMGET', k1, 'node', 'conn', 'away', 'seq', 'bb')
            if not f[1] then return 'unavailable' end
            local away = f[3] == '1'
            if signal then
                if room ~= '' or shared ~= '-' then
                    local refusal = refused(',' .. redis.call('HGET', k1, 'rooms') .. ',', room, shared)
                    if refusal then return refusal end
                end
                -- `sender|id`, or the sender alone when the request has no id (nothing to remember): a peer
                -- id has no `|`, a request id may.
                if string.find(srid, '|', 1, true) then dkey = srid end
            end
            if volatile then
                if dkey then
                    local dup = claim(kd, dkey, f[4] .. '0')
                    if dup then return dup end
                end
                if away or publish(f[1], f[2], '0', prefix) == 0 then
                    if dkey then redis.call('ZREM', kd, dkey) end
                    return 'away'
                end
                if dkey and redis.call('ZCARD', kd) > maxn + 32 then forget(k1, kd, maxn, nil) end
                return 'delivered ' .. f[1]
            end
            local seq = tonumber(f[4]) + 1
            local ss = format('%d', seq)
            if dkey then
                local dup = claim(kd, dkey, ss .. (away and '1' or '0'))
                if dup then return dup end
            end
            local msg = prefix .. ss .. '}'
            local size = #msg
            local st = {k1 = k1, bb = tonumber(f[5]) + size}
            if away then
                counters(st)
                if signal and (st.qn >= maxn or st.qb + size > maxb) then
                    if dkey then redis.call('ZREM', kd, dkey) end
                    return 'queue-full'
                end
            end
            local len = format('%d', size)
            local receivers = 0
            if not away then receivers = publish(f[1], f[2], ss, msg, len) end
            local queued = away or receivers == 0
            if queued then
                counters(st)
                st.qn = st.qn + 1
                st.qb = st.qb + size
                -- Claimed as delivered, but its node did not take it: it waits.
                if dkey and not away then redis.call('ZADD', kd, 'XX', ss .. '1', dkey) end
            end
            local n = redis.call('RPUSH', k2, msg)
            -- Whom to tell if it expires matters only while a signal is queued: a delivered one's descriptor
            -- leaves it out.
            if signal and queued then
                redis.call('RPUSH', k3, ss .. '|1|' .. typ .. '|' .. srid .. (dkey and '' or '|'))
            elseif queued then
                redis.call('RPUSH', k3, ss .. '|1|||')
            else
                redis.call('RPUSH', k3, ss .. '|2|' .. len .. '||')
            end
            local ttl = settle(k1, k2, k3, n, n == 1, queued, st, ss, maxn, maxb)
            local status = 'delivered'
            if queued then status = 'queued' end
            if dkey and (queued or seq % 32 == 0 or ttl ~= nil) then forget(k1, kd, maxn, ttl) end
            if not st.expired then return status .. ' ' .. f[1] end
            return {status, f[1], st.expired}
        end
        -- Several deliveries to one session, in order (a batch's deliveries gathered by recipient: a peer's
        -- burst of trickled candidates arrives together), each decided as `deliverOne` decides it, but with
        -- the session read once, the request ids looked up in one `ZMSCORE`, and the buffer lists, the
        -- session and the request ids written once for all of them. Only for a session that is connected to
        -- a node that takes its messages (`takes(node)`: how many listen), what nearly every delivery finds:
        -- for any other it returns false before changing anything, and the caller has `deliverOne` decide
        -- each. `at[j]`: where the j-th delivery's arguments start in ARGV (see `deliverAt`); its reply goes
        -- to `results[slot[j]]`. Why it decides as one at a time would:
        -- nothing else runs during the script, the checks read the same session, a request id remembered
        -- earlier in the group is found as it would be in the set, `seq` counts on in order, and the bounds
        -- are restored after the pushes, oldest first, as after each push (the count bound is kept in chunks
        -- anyway). Each `seq` is formatted once: turning a number into text is a `sprintf` in this Lua.
        local function deliverGroup(k1, k2, k3, kd, at, slot, maxn, maxb, takes, publish, results, f)
            f = f or redis.call('HMGET', k1, 'node', 'conn', 'away', 'seq', 'bb')
            if not f[1] or f[3] ~= '0' or takes(f[1]) == 0 then return false end
            -- ARGV is a global: one local lookup instead of a global one per argument read.
            local argv = ARGV
            local node, conn, rooms = f[1], f[2], nil
            local status, dkeys, lookup = {}, {}, {}
            for j, a in ipairs(at) do
                local mode = argv[a]
                if mode ~= '0' then
                    if mode ~= 's' then
                        local room, shared = argv[a + 4], argv[a + 5]
                        if room ~= '' or shared ~= '-' then
                            rooms = rooms or ',' .. redis.call('HGET', k1, 'rooms') .. ','
                            status[j] = refused(rooms, room, shared)
                        end
                    end
                    local dkey = argv[a + 3]
                    if not status[j] and string.find(dkey, '|', 1, true) then
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
            local seq, ss, bb = seq0, f[4], tonumber(f[5])
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
                elseif argv[a] == 'v' then
                    publish(node, conn, '0', argv[a + 1])
                    if dkey then
                        known[dkey] = 0
                        zadd[#zadd + 1] = ss .. '0'
                        zadd[#zadd + 1] = dkey
                        volatile = true
                    end
                    status[j] = delivered
                else
                    seq = seq + 1
                    ss = format('%d', seq)
                    local msg = argv[a + 1] .. ss .. '}'
                    local len = format('%d', #msg)
                    publish(node, conn, ss, msg, len)
                    msgs[#msgs + 1] = msg
                    bb = bb + #msg
                    metas[#metas + 1] = ss .. '|2|' .. len .. '||'
                    if dkey then
                        known[dkey] = 0
                        zadd[#zadd + 1] = ss .. '0'
                        zadd[#zadd + 1] = dkey
                    end
                    status[j] = delivered
                    last = j
                end
            end
            local ttl, expired
            if #msgs > 0 then
                local n = redis.call('RPUSH', k2, unpack(msgs))
                redis.call('RPUSH', k3, unpack(metas))
                local st = {k1 = k1, bb = bb}
                ttl = settle(k1, k2, k3, n, n == #msgs, false, st, ss, maxn, maxb)
                expired = st.expired
            end
            if #zadd > 0 then
                redis.call('ZADD', kd, unpack(zadd))
                if ttl ~= nil or math.floor(seq / 32) > math.floor(seq0 / 32)
                    or (volatile and redis.call('ZCARD', kd) > maxn + 32) then
                    forget(k1, kd, maxn, ttl)
                end
            end
            for j = 1, #at do results[slot[j]] = status[j] end
            -- Queued signals the bounds pushed out: their origins ride on the last delivery's reply.
            if expired then results[slot[last]] = {'delivered', node, expired} end
            return true
        end
        -- A batch's delivery at ARGV[a]: its mode, then prefix, type and `sender|id` (the sender alone when
        -- the request has no id), then — unless the mode is `s` (an addressed signal with no room scope and
        -- no shared room required, nearly every one) — room and the sender's rooms (or `-`). `span(a)`: how
        -- many arguments it has.
        local function span(a)
            if ARGV[a] == 's' then return 4 end
            return 6
        end
        -- Decides the delivery at ARGV[a] (`deliverOne`; `f`: the session's fields when already read);
        -- returns its reply and where the next one starts.
        local function deliverAt(k1, k2, k3, kd, a, maxn, maxb, publish, f)
            local argv = ARGV
            local mode = argv[a]
            if mode == 's' then
                return deliverOne(k1, k2, k3, kd, argv[a + 1], argv[a + 2], argv[a + 3], '', '-', maxn, maxb, mode,
                    publish, f), a + 4
            end
            return deliverOne(k1, k2, k3, kd, argv[a + 1], argv[a + 2], argv[a + 3], argv[a + 4], argv[a + 5], maxn,
                maxb, mode, publish, f), a + 6
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
            local srid = ARGV[2]
            if ARGV[3] ~= '' then srid = srid .. '|' .. ARGV[3] end
            return deliverOne(KEYS[1], KEYS[2], KEYS[3], KEYS[4], ARGV[1], ARGV[4], srid, ARGV[5], ARGV[6],
                tonumber(ARGV[7]), tonumber(ARGV[8]), ARGV[9], publish)
            """
    )

    /// Many deliveries in one call, gathered by recipient (a node's pipelined signals, gathered while
    /// earlier batches were with Redis: ``DeliveryBatch`` lays them out): each exactly as ``deliver``
    /// decides it, a recipient's in the order they were sent, but every node gets one `PUBLISH` per batch
    /// (one per ~6 KB of messages), `N` followed by ` conn seq length message` per message; a batch of one
    /// delivery is published as ``deliver`` publishes it. KEYS: the first recipient's session hash. ARGV:
    /// max messages, max bytes, channel prefix, then per recipient its session hash (its other keys are
    /// the hash's name with the last letter replaced), how many deliveries it has and for each: mode (`s`,
    /// or `1`, `0` or `v` as for ``deliver``), prefix, type, `sender|id` (the sender alone without an id), and
    /// unless the mode is `s` (a signal with no room and no shared room required) room and the sender's
    /// rooms (or `-`). Returns one ``deliver`` reply per delivery, in the order of the arguments. Every
    /// argument is a string Redis allocates and its Lua hashes, so a recipient's key and count go once for
    /// its whole burst and a plain signal has four. The keys are in ARGV, as in ``deliverShardBatch`` (one
    /// layout for both), so a node writes a whole batch's arguments in one go; on one Redis a script may
    /// touch keys it does not declare.
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
            local function publish(node, conn, seq, msg, len)
                local n = takes(node)
                if n > 0 then
                    local list = out[node]
                    if not list then list = {'N'}; out[node] = list; order[#order + 1] = node end
                    if appendN(list, conn, seq, msg, len) then
                        redis.call('PUBLISH', channels .. node, table.concat(list))
                        out[node] = {'N'}
                    end
                end
                return n
            end
            -- A batch of one delivery (each signal travels alone at low load) is published as ``deliver``
            -- publishes it, `D conn seq message`: its `PUBLISH` says whether anyone listens, with no `NUMSUB`.
            local count = #ARGV
            if ARGV[5] == '1' and count == 5 + span(6) then
                publish = function(node, conn, seq, msg)
                    return redis.call('PUBLISH', channels .. node, 'D ' .. conn .. ' ' .. seq .. ' ' .. msg)
                end
            end
            -- Each recipient's deliveries come together, after its count: several are decided together
            -- (``deliverGroup``), a single one by ``deliverOne`` (no tables to build).
            local results = {}
            local a, d = 4, 0
            -- Each recipient: its session hash names its other keys (the last letter replaced, as
            -- ``ClusterKeys`` makes them), then its count and its deliveries. Written out here and in
            -- ``deliverShardBatch`` rather than in a shared function: a Lua call per recipient costs Redis
            -- ~0.6% of a delivery (`deliver-script --instructions`), reading the session through one ~0.9%.
            while a <= count do
                local k1, n = ARGV[a], tonumber(ARGV[a + 1])
                local base = string.sub(k1, 1, -2)
                local k2, k3, k4 = base .. 'b', base .. 'm', base .. 'r'
                a = a + 2
                if n == 1 then
                    d = d + 1
                    results[d], a = deliverAt(k1, k2, k3, k4, a, maxn, maxb, publish)
                else
                    local at, slot = {}, {}
                    for j = 1, n do at[j] = a; slot[j] = d + j; a = a + span(a) end
                    if not deliverGroup(k1, k2, k3, k4, at, slot, maxn, maxb, takes, publish, results) then
                        for j, ga in ipairs(at) do
                            results[d + j] = deliverAt(k1, k2, k3, k4, ga, maxn, maxb, publish)
                        end
                    end
                    d = d + n
                end
            end
            for _, node in ipairs(order) do
                if #out[node] > 1 then redis.call('PUBLISH', channels .. node, table.concat(out[node])) end
            end
            return results
            """
    )

    /// ``deliverBatch`` for a Redis Cluster, where a batch's recipients live in different slots: one call
    /// for the deliveries whose slots one primary serves. KEYS: the first recipient's session hash (it
    /// routes the call). ARGV: as ``deliverBatch``'s. The other session keys are not declared: a script may
    /// touch keys of other slots when this primary serves them. First every recipient's hash is read (the
    /// five fields a delivery reads first) with `pcall`; if one is not served here (the slot moved: a
    /// failover or resharding the node's slot map has not caught up with), the call does nothing and
    /// answers `moved`, and the node sends each delivery alone (following the redirect). Otherwise one
    /// ``deliver`` reply per delivery, in the order of the arguments; a recipient's deliveries are decided
    /// together as in ``deliverBatch`` and `SPUBLISH`ed to its channel in one `N` message; a recipient's
    /// single delivery goes as ``deliver`` sends it.
    static let deliverShardBatch = RedisScript(
        common + deliverFunction + """
            local maxn, maxb, channels = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
            local count = #ARGV
            -- Every recipient's session, read before anything is written: a key of a slot not served here
            -- fails its read, and the call then changes nothing. Deliveries to one recipient touch no other
            -- recipient's keys, so each read is what its first delivery would read.
            local sessions = {}
            local a = 4
            while a <= count do
                local f = redis.pcall('HMGET', ARGV[a], 'node', 'conn', 'away', 'seq', 'bb')
                if f.err then return 'moved' end
                sessions[#sessions + 1] = f
                local n = tonumber(ARGV[a + 1])
                a = a + 2
                for _ = 1, n do a = a + span(a) end
            end
            local results = {}
            local d = 0
            -- The recipient being decided: its session hash, its channel at its node (made once, when first
            -- needed) and the `N` message gathered for it. The functions are made once for the whole batch.
            local key, ch, out, to
            local cprefix = string.sub(channels, 2)
            local function channel(node)
                if not ch then ch = cprefix .. node .. ':' .. string.match(key, '{[^}]*}') end
                return ch
            end
            -- As `notify` publishes (`SPUBLISH` to the node's channel for the peer).
            local function publish(node, conn, seq, msg)
                return redis.call('SPUBLISH', channel(node), 'D ' .. conn .. ' ' .. seq .. ' ' .. msg)
            end
            local function takes(node) return redis.call('PUBSUB', 'SHARDNUMSUB', channel(node))[2] end
            local function gathered(node, conn, seq, msg, len)
                to = node
                if appendN(out, conn, seq, msg, len) then
                    redis.call('SPUBLISH', channel(node), table.concat(out))
                    out = {'N'}
                end
                return 1
            end
            a = 4
            local r = 0
            while a <= count do
                local n = tonumber(ARGV[a + 1])
                r = r + 1
                local f = sessions[r]
                key = ARGV[a]
                local base = string.sub(key, 1, -2)
                local k2, k3, k4 = base .. 'b', base .. 'm', base .. 'r'
                ch = nil
                a = a + 2
                if n == 1 then
                    d = d + 1
                    results[d], a = deliverAt(key, k2, k3, k4, a, maxn, maxb, publish, f)
                else
                    -- The group's messages go in one `SPUBLISH` (`N …`) to the recipient's channel of its node.
                    out, to = {'N'}, nil
                    local at, slot = {}, {}
                    for j = 1, n do at[j] = a; slot[j] = d + j; a = a + span(a) end
                    if deliverGroup(key, k2, k3, k4, at, slot, maxn, maxb, takes, gathered, results, f) then
                        if to and #out > 1 then redis.call('SPUBLISH', channel(to), table.concat(out)) end
                    else
                        -- The group changed nothing: the first delivery finds the session as read.
                        for j, ga in ipairs(at) do
                            results[d + j] = deliverAt(key, k2, k3, k4, ga, maxn, maxb, publish, j == 1 and f or nil)
                        end
                    end
                    d = d + n
                end
            end
            return results
            """
    )
}
