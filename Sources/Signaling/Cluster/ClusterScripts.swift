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
    /// Lua functions shared by the session scripts (also those of `ClusterScripts+Delivery.swift`).
    static let common = """
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
            -- The fields every delivery reads (`node`, `conn`, `away`, `seq`, `bb`) first: a small hash is a list
            -- Redis scans field by field, in the order they were first written.
            redis.call('HSET', KEYS[1], 'node', ARGV[2], 'conn', ARGV[3], 'away', '0', 'seq', 0, 'bb', 0, 'tok', ARGV[1],
                'dl', ARGV[4], 'dropped', 0, 'qn', 0, 'qb', 0, 'rooms', '', 'grant', ARGV[7])
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
            -- A delivered message's descriptor (`seq|2|length||`) says how long it is; when one does not
            -- (written by an earlier build), the messages are read to count their bytes.
            local bytes, sized = 0, true
            for _, meta in ipairs(metas) do
                local seq, q, len = string.match(meta, '^(%d+)|(%d)|([^|]*)')
                if q == '1' or tonumber(seq) > through then break end
                n = n + 1
                if q == '2' then bytes = bytes + tonumber(len) else sized = false end
            end
            if n == 0 then return 0 end
            if not sized then
                bytes = 0
                for _, msg in ipairs(redis.call('LRANGE', k2, 0, n - 1)) do bytes = bytes + #msg end
            end
            redis.call('LTRIM', k2, n, -1)
            redis.call('LTRIM', k3, n, -1)
            redis.call('HINCRBY', k1, 'bb', -bytes)
            return n
        end

        """

    /// The owning connection dropped without ending its session: it waits for a resume until `deadline`.
    /// ARGV: node, conn, deadline, ttl, and optionally what the client confirmed since the last refresh
    /// (``trimFunction``) and the address the session is counted under while it waits (`dfrom`: the node
    /// that resumes it, maybe from another address, takes it out of that address's count). Returns 1, or
    /// 0 when (node, conn) no longer owns it.
    static let detach = RedisScript(
        common + trimFunction + """
            if not owns(KEYS, ARGV[1], ARGV[2]) then return 0 end
            trimThrough(KEYS[1], KEYS[2], KEYS[3], tonumber(ARGV[5] or '0'))
            if ARGV[6] and ARGV[6] ~= '' then
                redis.call('HSET', KEYS[1], 'away', '1', 'dl', ARGV[3], 'dfrom', ARGV[6])
            else
                redis.call('HSET', KEYS[1], 'away', '1', 'dl', ARGV[3])
            end
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

    /// Ends a session: mode `close` (its owning connection (ARGV[2], ARGV[3]) closed it), `evict` (only when
    /// it still waits for a resume with the deadline ARGV[4] it got when it was detached: at a bound of
    /// sessions waiting, ``boundDetached``), or `expire` (only when its deadline ARGV[4] ms has passed; a
    /// node still holding it is told to close with 4002).
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
            elseif ARGV[1] == 'evict' then
                if f[3] ~= '1' or tonumber(f[4]) ~= tonumber(ARGV[4]) then return {'alive'} end
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

    /// Counts a session waiting for a resume in a sorted set of those waiting (``ClusterKeys/detached``, or
    /// one address's) and picks who must end for the set to stay within its bound. KEYS: the set. ARGV:
    /// peer, its deadline (ms), now (ms), the bound, the set's expiry (ms). Sessions whose deadline passed
    /// leave the set (they expire, or resumed and are gone). Returns the oldest beyond the bound, taken out
    /// of the set, as `{peer, deadline, …}` (``end`` in `evict` mode then ends each that still waits).
    static let boundDetached = RedisScript(
        """
        redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
        redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
        redis.call('PEXPIRE', KEYS[1], ARGV[5])
        local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[4])
        if over <= 0 then return {} end
        return redis.call('ZPOPMIN', KEYS[1], over)
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
