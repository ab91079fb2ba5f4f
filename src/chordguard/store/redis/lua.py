"""Every Lua script of the Redis store, in one place. Each runs as one atomic call on the
keys of one chord, barrier, lease, letter or breaker — one hash tag, so one slot of a
Redis Cluster (the indexes are written next, by the caller: see ``keys``).

Journal: ``RECORD`` (a chord once), ``FINISH`` (end an open chord once). Leases:
``SWAP_LEASE`` (the one compare-and-set). Dead letters: ``SETTLE``. Breakers:
``REPLACE_BREAKER`` (by version). Barriers: ``CREATE``, ``COMPLETE`` (record a part and
count down: one round trip per completion), ``GROW`` (one more part), ``TRANSITION`` (finish,
fail, reclaim),
``MARK_DISPATCHED``; ``RESCORE`` (a due index entry, unless someone moved it meanwhile).
"""

# KEYS: chord hash; ARGV: data json, state, polls, duplicates; when ended: reason, ended_at,
# ttl. Returns the chord's state (the first record's, when it was already there).
RECORD = """
if redis.call('HSETNX', KEYS[1], 'data', ARGV[1]) == 0 then
  return redis.call('HGET', KEYS[1], 'state')
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], 'polls', ARGV[3], 'duplicates', ARGV[4])
if ARGV[2] ~= 'open' then
  redis.call('HSET', KEYS[1], 'reason', ARGV[5], 'ended_at', ARGV[6])
  redis.call('EXPIRE', KEYS[1], ARGV[7])
end
return ARGV[2]
"""

# KEYS: chord hash; ARGV: state, reason, ended_at, retention
FINISH = """
if redis.call('HGET', KEYS[1], 'state') ~= 'open' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[1], 'reason', ARGV[2], 'ended_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS: breaker; ARGV: expected version, new json
REPLACE_BREAKER = """
local cur = redis.call('GET', KEYS[1])
local version = 0
if cur then version = cjson.decode(cur)['version'] end
if tostring(version) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
return 1
"""

# KEYS: letter; ARGV: new json
SETTLE = """
local cur = redis.call('GET', KEYS[1])
if not cur or cjson.decode(cur)['state'] ~= 'dead' then return 0 end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""

# KEYS: barrier hash, header ids   ARGV: ttl, header ids json, then field, value pairs.
# Returns 0 (writing nothing) when the barrier exists.
CREATE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[1])
return 1
"""

# KEYS: barrier, parts   ARGV: index, envelope, failed 0/1, now, token, reason
COMPLETE = """
local b = KEYS[1]
local f = redis.call('HMGET', b, 'state', 'policy', 'total', 'by_reference')
local state = f[1]
if not state then return {'missing'} end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return {'duplicate'} end
if redis.call('HLEN', KEYS[2]) == 1 then
  redis.call('EXPIRE', KEYS[2], math.max(redis.call('TTL', b), 1))
end
local remaining = redis.call('HINCRBY', b, 'remaining', -1)
if ARGV[3] == '1' then redis.call('HINCRBY', b, 'failed', 1) end
if state ~= 'waiting' then
  redis.call('HSET', b, 'updated_at', ARGV[4])
  return {'late'}
end
if ARGV[3] == '1' and f[2] == 'fail' then
  redis.call('HSET', b, 'updated_at', ARGV[4], 'state', 'failed', 'claim_token', ARGV[5],
             'claimed_at', ARGV[4], 'finished_at', ARGV[4],
             'reason', ARGV[6])
  return {'fail', cjson.encode(redis.call('HGETALL', b))}
end
if remaining <= 0 then
  redis.call('HSET', b, 'updated_at', ARGV[4], 'state', 'dispatching', 'claim_token', ARGV[5],
             'claimed_at', ARGV[4])
  local out = {'dispatch', cjson.encode(redis.call('HGETALL', b))}
  if f[4] == '0' then
    for i = 0, tonumber(f[3]) - 1 do
      out[#out + 1] = redis.call('HGET', KEYS[2], tostring(i)) or ''
    end
  end
  return out
end
redis.call('HSET', b, 'updated_at', ARGV[4])
return {'counted'}
"""

# KEYS: barrier, parts, header
# ARGV: from-states (comma list), to-state, now, token, reason, outcome,
#       ends ('1': the barrier is over), keep seconds, stale-claim-before ('' = any)
TRANSITION = """
local b = KEYS[1]
local state = redis.call('HGET', b, 'state')
if not state then return false end
if not string.find(',' .. ARGV[1] .. ',', ',' .. state .. ',', 1, true) then return false end
if ARGV[9] ~= '' then
  local claimed = tonumber(redis.call('HGET', b, 'claimed_at') or '0')
  if claimed >= tonumber(ARGV[9]) then return false end
end
redis.call('HSET', b, 'state', ARGV[2], 'updated_at', ARGV[3])
if ARGV[4] ~= '' then redis.call('HSET', b, 'claim_token', ARGV[4], 'claimed_at', ARGV[3]) end
if ARGV[5] ~= '' then redis.call('HSET', b, 'reason', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', b, 'outcome', ARGV[6]) end
if ARGV[7] == '1' then
  redis.call('HSET', b, 'finished_at', ARGV[3])
  for _, key in ipairs({b, KEYS[2], KEYS[3]}) do redis.call('EXPIRE', key, ARGV[8]) end
end
return cjson.encode(redis.call('HGETALL', b))
"""

# KEYS: barrier. Returns the new part's index, or -1 when the barrier is not waiting.
GROW = """
if redis.call('HGET', KEYS[1], 'state') ~= 'waiting' then return -1 end
redis.call('HINCRBY', KEYS[1], 'remaining', 1)
return redis.call('HINCRBY', KEYS[1], 'total', 1) - 1
"""

# KEYS: barrier   ARGV: token, now
MARK_DISPATCHED = """
if redis.call('HGET', KEYS[1], 'claim_token') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'dispatching' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'dispatched', 'updated_at', ARGV[2])
return redis.call('HMGET', KEYS[1], 'app', 'deadline_at')
"""

# KEYS: lease   ARGV: new holder ('' = release), ttl ms, then the expected holders
# ('' = nobody: no key, or it expired)
SWAP_LEASE = """
local current = redis.call('GET', KEYS[1]) or ''
for i = 3, #ARGV do
  if ARGV[i] == current then
    if ARGV[1] == '' then redis.call('DEL', KEYS[1])
    else redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2]) end
    return 1
  end
end
return 0
"""

# KEYS: due zset   ARGV: id, the score read, the new score (an entry moved since: kept)
RESCORE = """
if tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1])) ~= tonumber(ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1
"""
