import SwitchboardRedis

/// The scripts that make each cluster operation atomic in Redis. A stream's keys: a hash `meta` (`e`
/// epoch, `o` offset, `r` the `run_id` of the Redis process that made the epoch) and a list `history` of
/// publication entries (`ClusterWire`), newest last.
enum LuaScripts {
    /// Starts the stream's epoch afresh when it has none, or when it was made by another Redis process
    /// than the one running the script (ARGV[runID]): a restart may have come back from an older snapshot
    /// (RDB, AOF `everysec`), a promoted replica may have been behind, and either would reuse offsets that
    /// clients hold with other data. A new epoch makes every such client recover with `recovered: false`.
    /// The old history is dropped with it (its entries belong to the old epoch). Leaves `epoch` set.
    private static func currentEpoch(newEpoch: Int, runID: Int, ttl: Int?) -> String {
        """
        local epoch = redis.call('hget', KEYS[1], 'e')
        local stamped = redis.call('hget', KEYS[1], 'r')
        if epoch and ARGV[\(runID)] ~= '' then
          if not stamped then
            redis.call('hset', KEYS[1], 'r', ARGV[\(runID)])
          elseif stamped ~= ARGV[\(runID)] then
            epoch = false
            redis.call('del', KEYS[2])
          end
        end
        local fresh = false
        if not epoch then
          epoch = ARGV[\(newEpoch)]
          fresh = true
          redis.call('hset', KEYS[1], 'e', epoch, 'r', ARGV[\(runID)])
        end

        """
            + (ttl.map { "if fresh and ARGV[\($0)] ~= '0' then redis.call('expire', KEYS[1], ARGV[\($0)]) end\n" } ?? "")
    }

    /// Loaded on every connection as it connects.
    static let all = [
        publish, position, presenceAdd, presenceRemove, presenceRead, controlCommand, occupancyJoin, occupancySettle,
    ]

    /// Occupancy keys: a sorted set of the nodes with subscribers to the channel (score: when the entry
    /// expires, Redis's clock in ms, refreshed by its node), and a flag set while the channel is reported
    /// occupied. KEYS: nodes, flag. ARGV: node id, the node entry's TTL (ms), the flag's TTL (ms). Adds the
    /// node; returns 1 when that made the channel occupied (the flag was not set), else 0.
    static let occupancyJoin = RedisScript(
        """
        local time = redis.call('time')
        local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        redis.call('zremrangebyscore', KEYS[1], '-inf', '(' .. now)
        redis.call('zadd', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
        redis.call('pexpire', KEYS[1], ARGV[2])
        local fresh = redis.call('set', KEYS[2], '1', 'NX', 'PX', ARGV[3])
        if not fresh then redis.call('pexpire', KEYS[2], ARGV[3]) end
        if fresh then return 1 end
        return 0
        """)

    /// KEYS: nodes, flag. Returns 1 when no node has subscribers (expired entries dropped) and the channel
    /// was reported occupied: the flag is cleared, and the caller reports it vacated. Else 0.
    static let occupancySettle = RedisScript(
        """
        local time = redis.call('time')
        local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        redis.call('zremrangebyscore', KEYS[1], '-inf', '(' .. now)
        if redis.call('zcard', KEYS[1]) > 0 then return 0 end
        return redis.call('del', KEYS[2])
        """)

    /// KEYS: the control log (a stream). ARGV: the command (JSON), the log's length, its TTL (ms), the
    /// control channel. Appends the command to the log and publishes it with its log id ("id\nJSON"),
    /// atomically: a node that missed the message reads it from the log when its link is back.
    static let controlCommand = RedisScript(
        """
        local id = redis.call('xadd', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'm', ARGV[1])
        redis.call('pexpire', KEYS[1], ARGV[3])
        redis.call('publish', ARGV[4], id .. '\\n' .. ARGV[1])
        return id
        """)

    /// KEYS: meta, history, and for an idempotent publish its key. ARGV: pub/sub channel, publication
    /// body, history size, history TTL (s), stream TTL (s), an epoch for a stream that has none, the
    /// idempotency window (ms; 0 without a key), the Redis `run_id`. Returns {offset, epoch, repeated}:
    /// a key seen within its window publishes nothing and returns the first publish's offset and epoch,
    /// the same on every node (the key lives beside the channel's stream, on its instance).
    ///
    /// The epoch lives in the same hash as the offset: if Redis loses the hash (flushed, restarted
    /// without persistence, evicted) the offset restarts under a new epoch, never under the old one; and
    /// if the hash comes back from another Redis process (`currentEpoch`), so does the epoch.
    static let publish = RedisScript(
        currentEpoch(newEpoch: 6, runID: 8, ttl: nil) + """
            if KEYS[3] then
              local first = redis.call('get', KEYS[3])
              if first then
                local o, e = string.match(first, '^(%d+),(.*)$')
                if o and e == epoch then return {tonumber(o), e, 1} end
              end
            end
            local offset = redis.call('hincrby', KEYS[1], 'o', 1)
            if ARGV[5] ~= '0' then redis.call('expire', KEYS[1], ARGV[5]) end
            local message = 'p' .. offset .. ',' .. epoch .. ',' .. ARGV[2]
            local size = tonumber(ARGV[3])
            if size > 0 then
              redis.call('rpush', KEYS[2], message)
              redis.call('ltrim', KEYS[2], -size, -1)
              if ARGV[4] ~= '0' then redis.call('expire', KEYS[2], ARGV[4]) end
            end
            redis.call('publish', ARGV[1], message)
            if KEYS[3] then redis.call('set', KEYS[3], offset .. ',' .. epoch, 'PX', ARGV[7]) end
            return {offset, epoch, 0}
            """)

    /// KEYS: meta, history. ARGV: an epoch for a stream that has none, the TTL (s) of a stream made by
    /// this read, which history to return, and the Redis `run_id`. Returns {epoch, offset, entries}.
    /// The history to return: 'none'; 'newest:N' (the newest N entries); 'S' (every entry after offset S: a
    /// recovery reads what it missed); 'S:N' (the first N entries after offset S). Only those entries leave
    /// Redis: a page of a long history costs its own size, never the whole list's. Fixes the epoch of a stream that never published, so a subscriber's position
    /// stays valid across its first publication; such a stream lives only for the given TTL unless a
    /// publication extends it, so reads of made-up channel names do not fill Redis.
    static let position = RedisScript(
        currentEpoch(newEpoch: 1, runID: 4, ttl: 2) + """
            local offset = tonumber(redis.call('hget', KEYS[1], 'o') or '0')
            local entries = {}
            local length = redis.call('llen', KEYS[2])
            -- The pages below count from the end of the list, which holds this epoch's consecutive offsets
            -- ending at `offset`, unless a gap was left (history turned off for a while) or another
            -- epoch's entries outlived their hash: then the whole list goes, and the caller filters it.
            local whole = false
            if length > 0 and ARGV[3] ~= 'none' then
              local o, e = string.match(redis.call('lindex', KEYS[2], 0), '^p(%d+),([^,]*),')
              whole = tonumber(o) ~= offset - length + 1 or e ~= epoch
            end
            local newest = string.match(ARGV[3], '^newest:(%d+)$')
            if whole then
              entries = redis.call('lrange', KEYS[2], 0, -1)
            elseif newest then
              local count = math.min(tonumber(newest), length)
              if count > 0 then entries = redis.call('lrange', KEYS[2], length - count, -1) end
            elseif ARGV[3] ~= 'none' then
              local since, limit = string.match(ARGV[3], '^(%d+):?(%d*)$')
              local wanted = offset - tonumber(since)
              if wanted > 0 then
                -- Those after `since` are the list's last `wanted` (fewer where history was trimmed).
                local count = math.min(wanted, length)
                local first = length - count
                if limit ~= '' then count = math.min(count, tonumber(limit)) end
                if count > 0 then entries = redis.call('lrange', KEYS[2], first, first + count - 1) end
              end
            end
            return {epoch, offset, entries}
            """)

    /// Presence keys: a hash of members by client id, a sorted set of their expiry times, and a hash of
    /// connection counts by user (so counts read in O(1)). Expiry times are Redis's clock in milliseconds
    /// (one clock for every node). Expired members are removed first by every call.
    private static let presencePrelude = """
        local function userOf(v)
          local _, e, len = string.find(v, '^[^,]*,[^,]*,(%-?%d+):')
          if not e then return nil end
          len = tonumber(len)
          if len < 0 then return nil end
          return string.sub(v, e + 1, e + len)
        end
        local function forget(v)
          local u = userOf(v)
          if u and redis.call('hincrby', KEYS[3], u, -1) <= 0 then redis.call('hdel', KEYS[3], u) end
        end
        local time = redis.call('time')
        local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
        local stale = redis.call('zrangebyscore', KEYS[2], '-inf', '(' .. now)
        for _, field in ipairs(stale) do
          local v = redis.call('hget', KEYS[1], field)
          if v then
            redis.call('hdel', KEYS[1], field)
            forget(v)
          end
        end
        if #stale > 0 then redis.call('zremrangebyscore', KEYS[2], '-inf', '(' .. now) end

        """

    /// KEYS: members, expiry, users. ARGV: TTL (ms), then client id and member pairs. Adds or refreshes;
    /// returns the member count.
    static let presenceAdd = RedisScript(
        presencePrelude + """
            local ttl = tonumber(ARGV[1])
            for i = 2, #ARGV, 2 do
              if redis.call('hset', KEYS[1], ARGV[i], ARGV[i + 1]) == 1 then
                local u = userOf(ARGV[i + 1])
                if u then redis.call('hincrby', KEYS[3], u, 1) end
              end
              redis.call('zadd', KEYS[2], now + ttl, ARGV[i])
            end
            for i = 1, 3 do redis.call('pexpire', KEYS[i], ttl * 2) end
            return redis.call('hlen', KEYS[1])
            """)

    /// KEYS: members, expiry, users. ARGV: client id. Returns the member count after, or -1 when absent.
    static let presenceRemove = RedisScript(
        presencePrelude + """
            local v = redis.call('hget', KEYS[1], ARGV[1])
            redis.call('zrem', KEYS[2], ARGV[1])
            if not v then return -1 end
            redis.call('hdel', KEYS[1], ARGV[1])
            forget(v)
            return redis.call('hlen', KEYS[1])
            """)

    /// KEYS: members, expiry, users. ARGV: '1' to list members. Returns {connections, users, members}.
    static let presenceRead = RedisScript(
        presencePrelude + """
            local members = {}
            if ARGV[1] == '1' then members = redis.call('hvals', KEYS[1]) end
            return {redis.call('hlen', KEYS[1]), redis.call('hlen', KEYS[3]), members}
            """)
}
