-- 0003: the store's clock. Lease expiries and heartbeats are stamped, and judged, with the
-- server's time: the one clock every silo shares, whatever its own says (silos send
-- durations). anu_now_us(NULL) is the server's time in microseconds since the Unix epoch,
-- taken at the start of the transaction, so that one statement sees one instant; a
-- non-NULL argument is returned as it is, which lets tests pin the store's time.
CREATE FUNCTION anu_now_us(pinned bigint) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT COALESCE(pinned, (extract(epoch FROM now()) * 1000000)::bigint) $$;
