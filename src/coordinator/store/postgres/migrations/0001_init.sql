-- The coordinator's state, shared by every coordinator of a mesh.
-- Text keys use the "C" collation so that they sort by bytes, as the
-- embedded store's keys do (pages of keys, token id prefixes).

-- Clusters: git-annex cluster UUIDs and their unique names.
CREATE TABLE clusters (
    uuid text COLLATE "C" PRIMARY KEY,
    name text COLLATE "C" NOT NULL UNIQUE
);

-- Nodes (agents) as they last registered; names are unique.
CREATE TABLE nodes (
    uuid text COLLATE "C" PRIMARY KEY,
    name text COLLATE "C" NOT NULL UNIQUE,
    cluster_uuid text COLLATE "C" NOT NULL,
    address text NOT NULL
);

-- What operators set on a node (preferred content, draining, cost), as
-- JSON, apart from `nodes` so that a registration never resets it.
CREATE TABLE node_settings (
    uuid text COLLATE "C" PRIMARY KEY,
    settings jsonb NOT NULL
);

-- What operators set on a cluster (minimum copies, space reserve), as JSON.
CREATE TABLE cluster_settings (
    uuid text COLLATE "C" PRIMARY KEY,
    settings jsonb NOT NULL
);

-- Nodes removed from the mesh: their identity may not register again.
-- `record` is the removed node with when and how it was removed, as JSON.
CREATE TABLE removed_nodes (
    uuid text COLLATE "C" PRIMARY KEY,
    record jsonb NOT NULL
);

-- Access tokens of the front-ends, by the hex SHA-256 of the token (never
-- the token itself); a user name, when set, is unique.
CREATE TABLE tokens (
    sha256 text COLLATE "C" PRIMARY KEY,
    mode text NOT NULL,
    label text NOT NULL,
    created_unix_ms bigint NOT NULL,
    user_name text COLLATE "C" UNIQUE
);

-- Join tokens, by the hex SHA-256 of their secret: for which role, until
-- when, and how many joins are left.
CREATE TABLE join_tokens (
    sha256 text COLLATE "C" PRIMARY KEY,
    role text NOT NULL,
    expires_unix_ms bigint NOT NULL,
    uses_left integer NOT NULL
);

-- Admin tokens, by the hex SHA-256 of the token.
CREATE TABLE admin_tokens (
    sha256 text COLLATE "C" PRIMARY KEY,
    created_unix_ms bigint NOT NULL
);

-- Agent UUIDs a certificate was issued for by joining, and when.
CREATE TABLE joined_agents (
    node_uuid text COLLATE "C" PRIMARY KEY,
    issued_unix_ms bigint NOT NULL
);

-- Named counters kept across restarts (e.g. the cluster clock's lease).
CREATE TABLE meta (
    name text COLLATE "C" PRIMARY KEY,
    value bigint NOT NULL
);

-- The location log: per key and node, the newest entry. `stamp` is when it
-- last changed, from the location stamp counter below: unique, and
-- committed in increasing order, so that reading on from the last stamp
-- seen misses nothing.
CREATE TABLE locations (
    key text COLLATE "C" NOT NULL,
    node_uuid text COLLATE "C" NOT NULL,
    stamp bigint NOT NULL,
    present boolean NOT NULL,
    PRIMARY KEY (key, node_uuid)
);
CREATE INDEX locations_stamp ON locations (stamp);

-- The location stamp counter, one row: the largest stamp ever given. Each
-- recording transaction raises it first (which locks the row until it
-- commits), so recording transactions commit one at a time, in stamp order.
CREATE TABLE location_clock (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    stamp bigint NOT NULL
);
INSERT INTO location_clock (stamp) VALUES (0);

-- The cluster clock, one row: the largest value any coordinator handed out
-- (Unix milliseconds), so that it never runs backwards across coordinators
-- and restarts.
CREATE TABLE cluster_clock (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    ms bigint NOT NULL
);
INSERT INTO cluster_clock (ms) VALUES (0);

-- Each node's last health report (JSON) and when it was written, by the
-- database's clock, so that coordinators' clocks need not agree.
CREATE TABLE node_health (
    node_uuid text COLLATE "C" PRIMARY KEY,
    health jsonb NOT NULL,
    seen timestamptz NOT NULL
);

-- Coordinators as they announce themselves (JSON) and when they last did.
CREATE TABLE coordinators (
    id text COLLATE "C" PRIMARY KEY,
    record jsonb NOT NULL,
    seen timestamptz NOT NULL
);
