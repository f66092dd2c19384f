-- bikesense core schema: everything that is the same on plain PostgreSQL and TimescaleDB.
-- Applied by storage.migrate; never edit a migration once released, add a new one.

-- Kits are pseudonymous (docs/design.md decision 4). The HMAC secret a kit signs its
-- frames with must be readable by the server to verify MACs, so it is stored
-- encrypted with AES-256-GCM under a server master key (storage/kits.py), never
-- in clear. secret_key_id names the master key so keys can be rotated.
CREATE TABLE kits (
    kit_id            bigint PRIMARY KEY CHECK (kit_id BETWEEN 0 AND 4294967295),
    pseudonym         text NOT NULL UNIQUE CHECK (pseudonym <> ''),
    secret_key_id     text NOT NULL,
    secret_nonce      bytea NOT NULL CHECK (octet_length(secret_nonce) = 12),
    secret_ciphertext bytea NOT NULL,
    status            text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'revoked')),
    registered_at     timestamptz NOT NULL DEFAULT now(),
    revoked_at        timestamptz,
    last_seen_at      timestamptz,
    battery_pct       real,
    firmware_version  text,
    last_status       jsonb,
    last_status_at    timestamptz
);

-- Frames ingest refused, kept with the reason so that nothing is silently dropped.
CREATE TABLE rejected_frames (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    received_at timestamptz NOT NULL,
    kit_id      bigint,
    reason      text NOT NULL,
    detail      text,
    topic       text,
    payload     bytea NOT NULL
);
CREATE INDEX rejected_frames_received_idx ON rejected_frames (received_at);
CREATE INDEX rejected_frames_reason_idx ON rejected_frames (reason, received_at);

-- Centres of the H3 cells that have aggregates, so that bbox queries need no
-- H3 extension in the database. Filled by the batch writer.
CREATE TABLE h3_cells (
    cell       bigint PRIMARY KEY,
    resolution smallint NOT NULL CHECK (resolution BETWEEN 0 AND 15),
    lat_deg    double precision NOT NULL,
    lon_deg    double precision NOT NULL
);
CREATE INDEX h3_cells_position_idx ON h3_cells (resolution, lat_deg, lon_deg);

-- Mergeable partial aggregates: exactly stream.core.partials.PARTIAL_DTYPE
-- (docs/design.md decision 1). Rows are merged in place by every batch that touches
-- their window, so leave room on each page for HOT updates.
CREATE TABLE window_partials (
    metric          smallint NOT NULL,
    resolution      smallint NOT NULL CHECK (resolution BETWEEN 0 AND 15),
    cell            bigint NOT NULL,
    window_s        integer NOT NULL CHECK (window_s > 0),
    window_start    timestamptz NOT NULL,
    n               bigint NOT NULL CHECK (n > 0),
    sum             double precision NOT NULL,
    sumsq           double precision NOT NULL,
    min             double precision NOT NULL,
    max             double precision NOT NULL,
    -- Noise only (0 otherwise): Σ tᵢ·10^(Lᵢ/10) and Σ tᵢ, docs/design.md decision 3.
    energy          double precision NOT NULL DEFAULT 0,
    duration_s      double precision NOT NULL DEFAULT 0,
    lamax_db        double precision,
    hist            integer[] NOT NULL,
    PRIMARY KEY (metric, resolution, window_s, window_start, cell)
) WITH (fillfactor = 70);
-- Time series of one cell.
CREATE INDEX window_partials_cell_idx ON window_partials (cell, metric, window_s, window_start);

-- One row per ride seen in a cell-window: distinct rides and days are counted
-- from these for the k-anonymity threshold (docs/design.md decision 4).
CREATE TABLE window_presence (
    resolution   smallint NOT NULL,
    cell         bigint NOT NULL,
    window_s     integer NOT NULL,
    window_start timestamptz NOT NULL,
    ride_id      bigint NOT NULL,
    day          integer NOT NULL,
    PRIMARY KEY (resolution, window_s, window_start, cell, ride_id, day)
);

-- Element-wise sum of two histograms of the same length (merging partials).
CREATE FUNCTION bikesense_hist_add(a integer[], b integer[]) RETURNS integer[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    out integer[] := a;
BEGIN
    IF a IS NULL THEN
        RETURN b;
    ELSIF b IS NULL THEN
        RETURN a;
    ELSIF cardinality(a) <> cardinality(b) THEN
        RAISE EXCEPTION 'histograms of different lengths (% and %) cannot be merged',
            cardinality(a), cardinality(b);
    END IF;
    FOR i IN 1 .. cardinality(a) LOOP
        out[i] := a[i] + b[i];
    END LOOP;
    RETURN out;
END
$$;

-- Query-time histogram sum in bigint: many windows together can exceed int4.
CREATE FUNCTION bikesense_hist_acc(acc bigint[], h integer[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF h IS NULL THEN
        RETURN acc;
    ELSIF acc IS NULL THEN
        RETURN h::bigint[];
    ELSIF cardinality(acc) <> cardinality(h) THEN
        RAISE EXCEPTION 'histograms of different lengths (% and %) cannot be merged',
            cardinality(acc), cardinality(h);
    END IF;
    FOR i IN 1 .. cardinality(h) LOOP
        acc[i] := acc[i] + h[i];
    END LOOP;
    RETURN acc;
END
$$;

CREATE FUNCTION bikesense_hist_comb(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF a IS NULL THEN
        RETURN b;
    ELSIF b IS NULL THEN
        RETURN a;
    END IF;
    FOR i IN 1 .. cardinality(a) LOOP
        a[i] := a[i] + b[i];
    END LOOP;
    RETURN a;
END
$$;

CREATE AGGREGATE bikesense_hist_sum(integer[]) (
    SFUNC = bikesense_hist_acc,
    STYPE = bigint[],
    COMBINEFUNC = bikesense_hist_comb,
    PARALLEL = SAFE
);
