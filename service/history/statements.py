"""The history table and every SQL statement on it (``{table}`` is the qualified name).

Table ``(user_id text, last_seq bigint, first_seq bigint, data bytea)``, primary key
``(user_id, last_seq)``: one row per segment, the events ``first_seq..last_seq`` of a user,
``data`` a ``codec`` blob. The key serves every query: a user's segments in order
(``read``), the last one (``last_seq``), those after a seq (``read(after_seq=)``).

Writers of one user serialise on a transaction-scoped advisory lock (``LOCK``): the key is
``hashtextextended(user_id, LOCK_SEED)``, taken in key order so that two batches sharing
users cannot deadlock.
"""

from __future__ import annotations

__all__ = [
    "APPEND",
    "CREATE",
    "DELETE",
    "INSERT",
    "LAST_SEQ",
    "LOCK",
    "LOCK_SEED",
    "READ",
    "REMOVE",
    "SMALL_SEGMENTS",
    "USERS",
]

LOCK_SEED = 19  # advisory-lock namespace of the history (hashtextextended's seed)

CREATE = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE {table} (
    user_id text NOT NULL,
    last_seq bigint NOT NULL,
    first_seq bigint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (user_id, last_seq)
);
-- segments are deflated already: no second (pglz) compression attempt when TOASTed
ALTER TABLE {table} ALTER COLUMN data SET STORAGE EXTERNAL;
"""

LOCK = """
SELECT pg_advisory_xact_lock(k)
FROM (SELECT DISTINCT hashtextextended(u, {seed}) AS k FROM unnest(%s::text[]) AS u) AS keys
ORDER BY k
"""

# Each input row with the user's stored last seq; the INSERT (a data-modifying CTE, always
# run) stores the rows that end after it unless some row starts after it + 1 (a gap); the
# gapped rows are returned.
APPEND = """
WITH input AS (
    SELECT i.user_id, i.first_seq, i.last_seq, i.data,
           coalesce((SELECT max(s.last_seq) FROM {table} AS s WHERE s.user_id = i.user_id), 0)
               AS stored
    FROM unnest(%(users)s::text[], %(firsts)s::bigint[], %(lasts)s::bigint[],
                %(data)s::bytea[]) AS i(user_id, first_seq, last_seq, data)
), gaps AS (
    SELECT user_id, first_seq, stored FROM input WHERE first_seq > stored + 1
), stored_rows AS (
    INSERT INTO {table} (user_id, last_seq, first_seq, data)
    SELECT user_id, last_seq, first_seq, data FROM input
    WHERE last_seq > stored AND NOT EXISTS (SELECT 1 FROM gaps)
    ON CONFLICT DO NOTHING
    RETURNING 1
)
SELECT user_id, first_seq, stored FROM gaps
"""

READ = """
SELECT first_seq, last_seq, data FROM {table}
WHERE user_id = %s AND last_seq > %s ORDER BY last_seq
"""

LAST_SEQ = "SELECT coalesce(max(last_seq), 0) FROM {table} WHERE user_id = %s"

DELETE = "DELETE FROM {table} WHERE user_id = %s"

# A page of the users with a history, in key order (the primary key's index: a backfill lists
# every user this way, page after page).
USERS = """
SELECT DISTINCT user_id FROM {table} WHERE user_id > %s ORDER BY user_id LIMIT %s
"""

SMALL_SEGMENTS = """
SELECT user_id, first_seq, last_seq, data FROM {table}
WHERE user_id = ANY(%s::text[]) AND last_seq - first_seq + 1 < %s ORDER BY user_id, last_seq
"""

REMOVE = """
DELETE FROM {table} AS t USING unnest(%s::text[], %s::bigint[]) AS r(user_id, last_seq)
WHERE t.user_id = r.user_id AND t.last_seq = r.last_seq
"""

# A merged segment can only collide with a kept full segment ending at the same seq, which
# then holds all of its seqs already (the first write): skipping it loses nothing.
INSERT = """
INSERT INTO {table} (user_id, last_seq, first_seq, data)
SELECT * FROM unnest(%s::text[], %s::bigint[], %s::bigint[], %s::bytea[])
ON CONFLICT DO NOTHING
"""
