-- API keys (api/keys.py). Numbered 0100 to stay out of storage's own sequence:
-- the api owns versions 0100-0199. Only a hash of each key is stored: HMAC-SHA256
-- of the whole key (which carries 256 random bits), compared in constant time.
CREATE TABLE api_keys (
    key_id       text PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{12}$'),
    key_hash     bytea NOT NULL CHECK (octet_length(key_hash) = 32),
    role         text NOT NULL CHECK (role IN ('officer', 'researcher', 'admin')),
    label        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    revoked_at   timestamptz,
    last_used_at timestamptz
);
