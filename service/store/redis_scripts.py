"""The Lua scripts of ``RedisStore``, one per operation (semantics: ``service.store.base``).

Each touches the keys of one user (one hash slot), so it runs atomically on one master of a
single Redis or a Cluster. The tail is a list of chunks of 20-byte records; the dedup ring is
one string (layout: ``service.store.dedup_ring``) searched with a plain ``string.find`` (a
match counts only at an 8-byte boundary) and patched with ``SETRANGE``.
"""

from __future__ import annotations

__all__ = [
    "APPEND_BATCH_LUA",
    "APPEND_LUA",
    "COMMIT_LUA",
    "DELETE_LUA",
    "DURABLE_BATCH_LUA",
    "DURABLE_LUA",
    "READ_LUA",
    "RESTORE_LUA",
    "RETIRE_LUA",
]

# Shared Lua helpers. tail_read(key, want, chunk): the newest `want` records of a tail, or nil
# when it holds fewer or is malformed. tail_trim(key, len, keep): drop head records until
# `keep` remain; returns the new length.
_TAIL_LUA = """
local function tail_read(key, want, chunk)
  if want <= 0 then return '' end
  local data = table.concat(redis.call('LRANGE', key, -(math.floor(want * 20 / chunk) + 2), -1))
  if #data % 20 ~= 0 or #data < want * 20 then return nil end
  return string.sub(data, #data - want * 20 + 1)
end
local function tail_trim(key, len, keep)
  if keep <= 0 then
    redis.call('DEL', key)
    return 0
  end
  while len > keep do
    local head = redis.call('LINDEX', key, 0)
    if not head then return 0 end
    local excess, held = len - keep, math.floor(#head / 20)
    if held <= excess then
      redis.call('LPOP', key)
      len = len - held
    else
      redis.call('LSET', key, 0, string.sub(head, excess * 20 + 1))
      len = keep
    end
  end
  return len
end
"""

# append_user(K, recs, digs, W, chunk, B, create): one user's append. K: its keys tail, pos,
# ring; recs, digs: its records and digests; W: window; chunk: chunk bytes; B: block;
# create: a user without keys may be created. Returns {-1}: repair first; {-3}: unknown user,
# not created; else {accepted, duplicates, refused, seq, applied, durable, undurable records}.
# too_late(not_after): the step runs after `not_after` (unix s, '' for none).
_APPEND_USER_LUA = (
    _TAIL_LUA
    + """
local function too_late(not_after)
  if not_after == '' then return false end
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1e6 > tonumber(not_after)
end
local function append_user(KEYS, recs, digs, W, chunk, B, create)
  local nb = W / B
  local dsize = W * 8
  local p = redis.call('HMGET', KEYS[2], 'seq', 'applied', 'len', 'durable')
  local seq, applied = tonumber(p[1] or '0'), tonumber(p[2] or '0')
  local len, durable = tonumber(p[3] or '0'), tonumber(p[4] or '0')
  local ring = redis.call('GET', KEYS[3])
  if not p[1] then
    if ring or redis.call('EXISTS', KEYS[1]) > 0 then return {-1} end
    if not create then return {-3} end
  elseif ring then
    if #ring ~= dsize + nb * 8 + 8 then return {-1} end
  elseif seq > 0 then
    return {-1}
  end
  if seq - len > durable or (len > 0 and redis.call('EXISTS', KEYS[1]) == 0) then
    return {-1}  -- the tail lacks records its length promises (lost or trimmed by hand)
  end
  local prior = tail_read(KEYS[1], seq - durable, chunk)
  if not prior then return {-1} end
  local created = not ring
  if created then ring = string.rep('\0', dsize + nb * 8) .. struct.pack('<d', -math.huge) end
  local wm = struct.unpack('<d', ring, dsize + nb * 8 + 1)
  local bmax, seen, fresh, digests = {}, {}, {}, {}
  local dups, refused, first = 0, 0, seq
  for i = 0, #recs / 20 - 1 do
    local d = string.sub(digs, i * 8 + 1, i * 8 + 8)
    local dup = seen[d]
    if not dup then
      local from = 1
      while true do
        local at = string.find(ring, d, from, true)
        if not at or at > dsize then break end
        if (at - 1) % 8 == 0 then
          dup = true
          break
        end
        from = at + 1
      end
    end
    if dup then
      dups = dups + 1
    else
      local ts = struct.unpack('<d', recs, i * 20 + 1)
      if ts <= wm then
        refused = refused + 1
      else
        seen[d] = true
        seq = seq + 1
        fresh[#fresh + 1] = string.sub(recs, i * 20 + 1, i * 20 + 20)
        digests[#digests + 1] = d
        local slot = (seq - 1) % W
        local b = math.floor(slot / B)
        local m = bmax[b] or struct.unpack('<d', ring, dsize + b * 8 + 1)
        if seq > W and slot % B == 0 then
          if m > wm then wm = m end
          m = ts
        elseif ts > m then
          m = ts
        end
        bmax[b] = m
      end
    end
  end
  local k = #fresh
  if k > 0 then
    if created then redis.call('SET', KEYS[3], ring) end
    local skip = math.max(0, k - W)
    local d = table.concat(digests, '', skip + 1, k)
    local slot0 = (first + skip) % W
    local head = math.min(#d, (W - slot0) * 8)
    redis.call('SETRANGE', KEYS[3], slot0 * 8, string.sub(d, 1, head))
    if #d > head then redis.call('SETRANGE', KEYS[3], 0, string.sub(d, head + 1)) end
    local region = {}
    for b = 0, nb - 1 do
      region[b + 1] = bmax[b] and struct.pack('<d', bmax[b])
        or string.sub(ring, dsize + b * 8 + 1, dsize + b * 8 + 8)
    end
    region[nb + 1] = struct.pack('<d', wm)
    redis.call('SETRANGE', KEYS[3], dsize, table.concat(region))
    local data = table.concat(fresh)
    local tail = redis.call('LINDEX', KEYS[1], -1)
    if tail and #tail < chunk then
      local room = chunk - #tail
      redis.call('LSET', KEYS[1], -1, tail .. string.sub(data, 1, room))
      data = string.sub(data, room + 1)
    end
    while #data > 0 do
      redis.call('RPUSH', KEYS[1], string.sub(data, 1, chunk))
      data = string.sub(data, chunk + 1)
    end
    redis.call('HSET', KEYS[2], 'seq', seq, 'len', len + k, 'durable', durable)
    redis.call('PERSIST', KEYS[2])
    prior = prior .. table.concat(fresh)
  end
  return {k, dups, refused, seq, applied, durable, prior}
end
"""
)

# KEYS: tail, pos, ring. ARGV: records, digests, window, chunk bytes, block,
# not-after (unix s, '' for none), '1' if a user without keys may be created. Returns {-2}:
# too late, else ``append_user``'s answer.
APPEND_LUA = (
    _APPEND_USER_LUA
    + """
if too_late(ARGV[6]) then return {-2} end
return append_user(KEYS, ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]),
                   tonumber(ARGV[5]), ARGV[7] == '1')
"""
)

# Many users in one call (a single Redis; a cluster would need every key in one slot).
# KEYS: 3 per user, as APPEND_LUA's. ARGV: window, chunk bytes, block, not-after, create flag,
# then records and digests per user. Returns {-2}: too late; else {header, undurable}: header
# 8 little-endian doubles per user (status 0 / -1 repair / -3 unknown, accepted, duplicates,
# refused, seq, applied, durable, bytes of its undurable records), undurable the users'
# undurable records concatenated in order. Doubles are exact for these integers (< 2^53),
# and two strings cost the client far less to parse than 8 fields per user.
APPEND_BATCH_LUA = (
    _APPEND_USER_LUA
    + """
if too_late(ARGV[4]) then return {-2} end
local W, chunk, B, create = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]),
  ARGV[5] == '1'
local header, undurable = {}, {}
for u = 0, #KEYS / 3 - 1 do
  local K = {KEYS[u * 3 + 1], KEYS[u * 3 + 2], KEYS[u * 3 + 3]}
  local r = append_user(K, ARGV[6 + u * 2], ARGV[7 + u * 2], W, chunk, B, create)
  if #r == 1 then
    header[#header + 1] = struct.pack('<dddddddd', r[1], 0, 0, 0, 0, 0, 0, 0)
  else
    header[#header + 1] = struct.pack('<dddddddd', 0, r[1], r[2], r[3], r[4], r[5], r[6], #r[7])
    undurable[#undurable + 1] = r[7]
  end
end
return {table.concat(header), table.concat(undurable)}
"""
)


# allow-oom (shebang flags, Redis ≥ 7): at maxmemory under noeviction, marking durable,
# committing and deleting must still run: they are what trims tails and frees memory. The
# append is flagless, so its first write is refused with OOM (answered 503).
_ALLOW_OOM = "#!lua flags=allow-oom\n"

# durable_user(pos, tail, upto, chunk): the durable tier holds the user's events up to upto.
_DURABLE_USER_LUA = (
    _TAIL_LUA
    + """
local function durable_user(pos, tail, upto, chunk)
  local p = redis.call('HMGET', pos, 'seq', 'applied', 'len', 'durable')
  if not p[1] then return 0 end
  local seq, applied = tonumber(p[1]), tonumber(p[2] or '0')
  local len, durable = tonumber(p[3] or '0'), tonumber(p[4] or '0')
  upto = math.min(upto, seq)
  if upto <= durable then return 0 end
  len = tail_trim(tail, len, seq - math.min(applied, upto))
  redis.call('HSET', pos, 'durable', upto, 'len', len)
  return 1
end
"""
)

# KEYS: pos, tail. ARGV: seq, chunk bytes.
DURABLE_LUA = (
    _ALLOW_OOM
    + _DURABLE_USER_LUA
    + """
return durable_user(KEYS[1], KEYS[2], tonumber(ARGV[1]), tonumber(ARGV[2]))
"""
)

# Many users in one call (a single Redis). KEYS: pos, tail per user. ARGV: chunk bytes, then
# one seq per user.
DURABLE_BATCH_LUA = (
    _ALLOW_OOM
    + _DURABLE_USER_LUA
    + """
local chunk = tonumber(ARGV[1])
for u = 0, #KEYS / 2 - 1 do
  durable_user(KEYS[u * 2 + 1], KEYS[u * 2 + 2], tonumber(ARGV[u + 2]), chunk)
end
return 1
"""
)

# KEYS: tail, pos[, state of the version]. ARGV: "unapplied" | "all", chunk bytes, the
# version's position field ('' : the log and position only). A state blob counts only with
# its position field: a blob left without one (a position lost and re-created) is ignored.
READ_LUA = (
    _TAIL_LUA
    + """
local field = ARGV[3] ~= '' and ARGV[3] or 'seq'
local p = redis.call('HMGET', KEYS[2], 'seq', 'len', 'gen', 'durable', field)
local seq, len = tonumber(p[1] or '0'), tonumber(p[2] or '0')
local gen, durable = tonumber(p[3] or '0'), tonumber(p[4] or '0')
local applied, state = 0, false
if ARGV[3] ~= '' and p[5] then
  applied = tonumber(p[5])
  state = redis.call('GET', KEYS[3]) or false
end
local want = len
if ARGV[1] == 'unapplied' then want = math.min(len, seq - applied) end
local records = tail_read(KEYS[1], want, tonumber(ARGV[2])) or false
return {state, seq, applied, gen, len, records, durable, p[1] and 1 or 0}
"""
)

# KEYS: state of the version, pos, tail. ARGV: state blob, gen, expected applied, new
# applied, chunk bytes, the version's position field. `applied` (what the tail may drop) is
# the highest position of any version: a lagging version reads the durable tier instead.
# Returns 0: fenced off; 1: written; 2: written, the version's first state of the user.
COMMIT_LUA = (
    _ALLOW_OOM
    + _TAIL_LUA
    + """
local p = redis.call('HMGET', KEYS[2], 'seq', 'applied', 'gen', 'len', 'durable', ARGV[6])
local seq, top, gen = tonumber(p[1] or '0'), tonumber(p[2] or '0'), tonumber(p[3] or '0')
local len, durable = tonumber(p[4] or '0'), tonumber(p[5] or '0')
local new = tonumber(ARGV[4])
if gen ~= tonumber(ARGV[2]) or tonumber(p[6] or '0') ~= tonumber(ARGV[3]) or seq < new
   or new > durable then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
if new > top then top = new end
len = tail_trim(KEYS[3], len, seq - math.min(top, durable))
redis.call('HSET', KEYS[2], ARGV[6], new, 'applied', top, 'len', len)
if p[6] then return 1 end
return 2
"""
)

# KEYS: tail, pos, ring. ARGV: fence ttl (s), the user's state-key prefix. Every version's
# state (named by the position's applied:<version> fields) goes; the position stays as a
# fence with no version field. Returns {keys that existed, the versions whose state went}.
DELETE_LUA = (
    _ALLOW_OOM
    + """
local existed = redis.call('EXISTS', KEYS[1], KEYS[3])
local pos = redis.call('HGETALL', KEYS[2])
local seq, gen, gone = 0, 0, {}
for i = 1, #pos, 2 do
  local f = pos[i]
  if f == 'seq' then seq = tonumber(pos[i + 1]) end
  if f == 'gen' then gen = tonumber(pos[i + 1]) end
  if string.sub(f, 1, 8) == 'applied:' and redis.call('DEL', ARGV[2] .. string.sub(f, 9)) > 0 then
    existed = existed + 1
    gone[#gone + 1] = string.sub(f, 9)
  end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if seq > 0 or existed > 0 then
  redis.call('HSET', KEYS[2], 'seq', 0, 'applied', 0, 'len', 0, 'durable', 0, 'gen', gen + 1)
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[1]))
end
return {existed, unpack(gone)}
"""
)

# KEYS: tail, pos, ring. ARGV: expected seq ('' = no position), seq, ring, the user's
# state-key prefix. A version whose state covers more than seq loses its state.
RESTORE_LUA = """
local pos = redis.call('HGETALL', KEYS[2])
local p = {}
for i = 1, #pos, 2 do p[pos[i]] = pos[i + 1] end
if (p['seq'] or '') ~= ARGV[1] then return 0 end
local seq, top = tonumber(ARGV[2]), 0
for f, v in pairs(p) do
  if string.sub(f, 1, 8) == 'applied:' then
    if tonumber(v) > seq then
      redis.call('DEL', ARGV[4] .. string.sub(f, 9))
      redis.call('HDEL', KEYS[2], f)
    elseif tonumber(v) > top then
      top = tonumber(v)
    end
  end
end
redis.call('DEL', KEYS[1])
redis.call('SET', KEYS[3], ARGV[3])
redis.call('HSET', KEYS[2], 'seq', seq, 'applied', top, 'durable', seq, 'len', 0)
redis.call('PERSIST', KEYS[2])
return 1
"""

# KEYS: state of the version, pos. ARGV: the version's position field. Forget one user's
# state under a retired version.
RETIRE_LUA = (
    _ALLOW_OOM
    + """
redis.call('HDEL', KEYS[2], ARGV[1])
return redis.call('DEL', KEYS[1])
"""
)
