-- 0002: small JSON documents about the store itself (a silo's declared jobs), by key.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
