/*
 * bikesense_frame.h -- reference encoder for the bikesense wire protocol v1.
 *
 * The specification is docs/protocol.md; section numbers below refer to it.
 * The golden vectors in tests/vectors/ (one JSON file per frame) are checked against this file,
 * byte for byte, by tests/firmware_protocol/test_c_encoder.py.
 *
 * Single-file library, C99, no heap, no libc beyond <stdint.h> / <stddef.h>,
 * independent of the host's byte order and alignment (every multi-byte value
 * is written one byte at a time, little-endian). Includes its own CRC-32 and
 * SHA-256 / HMAC-SHA256, so a kit needs no crypto library; if yours has
 * hardware SHA-256, replace bs_hmac_sha256() and keep the rest.
 *
 * Use: in exactly one .c file
 *
 *     #define BIKESENSE_FRAME_IMPLEMENTATION
 *     #include "bikesense_frame.h"
 *
 * and include it plainly everywhere else. Then:
 *
 *     static uint8_t frame[BS_FRAME_BYTES(60)];
 *     size_t len;
 *     int rc = bs_encode_readings(frame, sizeof frame, kit_id, boot_id, seq,
 *                                 readings, 60, kit_key, &len);
 *     if (rc == BS_OK) mqtt_publish("bikesense/v1/kits/<kit_id>/up", frame, len);
 *
 * Readings are given in wire units (integers, scaled as in §4.2); a sensor
 * with no value is given its BS_ABSENT_* sentinel, never 0.
 */
#ifndef BIKESENSE_FRAME_H
#define BIKESENSE_FRAME_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BS_VERSION 1u
#define BS_MSG_READINGS 1u

#define BS_HEADER_BYTES 20u  /* §3 */
#define BS_RECORD_BYTES 38u  /* §4.2 */
#define BS_CRC_BYTES 4u
#define BS_MAC_BYTES 16u     /* HMAC-SHA256 truncated to its first 16 bytes, §5 */
#define BS_KEY_BYTES 32u
/* header + base timestamp + trailer */
#define BS_OVERHEAD_BYTES (BS_HEADER_BYTES + 8u + BS_CRC_BYTES + BS_MAC_BYTES)
#define BS_MAX_READINGS 1024u
/* Size of a frame of n readings: size your buffer with it. */
#define BS_FRAME_BYTES(n) (BS_OVERHEAD_BYTES + BS_RECORD_BYTES * (size_t)(n))
#define BS_MAX_FRAME_BYTES BS_FRAME_BYTES(BS_MAX_READINGS)
/* Largest timestamp (2^53 - 1 ms) and largest span of one frame (2^32 - 1 ms). */
#define BS_MAX_TS_MS 9007199254740991ull
#define BS_MAX_SPAN_MS 4294967295ull

/* "No value" sentinels, §4.3. */
#define BS_ABSENT_I32 INT32_MIN   /* lat_e7, lon_e7 (both or neither) */
#define BS_ABSENT_U16 0xFFFFu     /* hdop, speed, PM, NO2, noise, humidity */
#define BS_ABSENT_I16 INT16_MIN   /* temperature */
#define BS_ABSENT_U8 0xFFu        /* satellites */

#define BS_LAT_MAX_E7 900000000L
#define BS_LON_MAX_E7 1800000000L
#define BS_RH_MAX_X10 1000u

/* gnss_fix values */
#define BS_FIX_NONE 0u
#define BS_FIX_2D 1u
#define BS_FIX_3D 2u

/* Status bits, §4.4. Bits 8..15 are reserved: send 0. */
#define BS_STATUS_WARMING_UP (1u << 0)
#define BS_STATUS_PM_FAULT (1u << 1)
#define BS_STATUS_NO2_FAULT (1u << 2)
#define BS_STATUS_NOISE_FAULT (1u << 3)
#define BS_STATUS_GNSS_FAULT (1u << 4)
#define BS_STATUS_LOW_BATTERY (1u << 5)
#define BS_STATUS_TH_FAULT (1u << 6)
#define BS_STATUS_CLOCK_UNSYNCED (1u << 7)

/* One reading, in wire units (§4.2). */
typedef struct bs_reading {
    uint64_t ts_ms;        /* Unix epoch ms, UTC, 0 .. BS_MAX_TS_MS */
    int32_t lat_e7;        /* 1e-7 degree, -900000000 .. 900000000 */
    int32_t lon_e7;        /* 1e-7 degree, -1800000000 .. 1800000000 */
    uint16_t hdop_x100;    /* 0.01 */
    uint16_t speed_cm_s;   /* 0.01 m/s */
    uint16_t pm1_x10;      /* 0.1 ug/m3 */
    uint16_t pm25_x10;
    uint16_t pm10_x10;
    uint16_t no2_x10;
    uint16_t laeq_x10;     /* 0.1 dB(A) */
    uint16_t lamax_x10;
    uint16_t interval_ms;  /* 0: not reported */
    int16_t temp_x100;     /* 0.01 degC */
    uint16_t rh_x10;       /* 0.1 %, 0 .. 1000 */
    uint16_t status;       /* BS_STATUS_* */
    uint8_t gnss_fix;      /* BS_FIX_* */
    uint8_t satellites;    /* 0 .. 127 */
} bs_reading;

typedef enum bs_result {
    BS_OK = 0,
    BS_ERR_COUNT = -1,      /* n is 0 or above BS_MAX_READINGS */
    BS_ERR_BUFFER = -2,     /* out_cap < BS_FRAME_BYTES(n) */
    BS_ERR_TIMESTAMP = -3,  /* a ts_ms above BS_MAX_TS_MS */
    BS_ERR_SPAN = -4,       /* newest - oldest ts_ms above BS_MAX_SPAN_MS: split the batch */
    BS_ERR_VALUE = -5       /* a field outside its range (see bs_reading) */
} bs_result;

/*
 * Encode n readings as one authenticated frame into out[0 .. *out_len).
 * Returns BS_OK, or a negative bs_result and writes nothing useful.
 * If err_index is not NULL, the index of the offending reading is stored there.
 */
bs_result bs_encode_readings(uint8_t *out, size_t out_cap, uint32_t kit_id, uint32_t boot_id,
                             uint32_t seq, const bs_reading *readings, size_t n,
                             const uint8_t key[BS_KEY_BYTES], size_t *out_len,
                             size_t *err_index);

/* The building blocks, exposed for tests and for kits that check their own frames. */
uint32_t bs_crc32(const uint8_t *data, size_t len);
void bs_sha256(const uint8_t *data, size_t len, uint8_t digest[32]);
void bs_hmac_sha256(const uint8_t key[BS_KEY_BYTES], const uint8_t *data, size_t len,
                    uint8_t mac[32]);

#ifdef __cplusplus
}
#endif

#endif /* BIKESENSE_FRAME_H */

/* ------------------------------------------------------------------------- */
#ifdef BIKESENSE_FRAME_IMPLEMENTATION
#ifndef BIKESENSE_FRAME_IMPLEMENTED
#define BIKESENSE_FRAME_IMPLEMENTED

static void bs__put16(uint8_t *p, uint16_t v) {
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)(v >> 8);
}

static void bs__put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v & 0xFFu);
    p[1] = (uint8_t)((v >> 8) & 0xFFu);
    p[2] = (uint8_t)((v >> 16) & 0xFFu);
    p[3] = (uint8_t)(v >> 24);
}

static void bs__put64(uint8_t *p, uint64_t v) {
    bs__put32(p, (uint32_t)(v & 0xFFFFFFFFu));
    bs__put32(p + 4, (uint32_t)(v >> 32));
}

/* Two's complement bit pattern of a signed value, without implementation-defined casts. */
static uint32_t bs__bits32(int32_t v) {
    return v < 0 ? (uint32_t)(-(v + 1)) ^ 0xFFFFFFFFu : (uint32_t)v;
}

static uint16_t bs__bits16(int16_t v) {
    return v < 0 ? (uint16_t)((uint16_t)(-(v + 1)) ^ 0xFFFFu) : (uint16_t)v;
}

/* CRC-32 as in zlib / IEEE 802.3 (§5): reflected polynomial 0xEDB88320,
 * initial value and final XOR 0xFFFFFFFF. Four bits at a time from a
 * 16-entry table (entry i = i run through 4 rounds of the bitwise CRC):
 * 64 bytes of ROM instead of 1 KiB, still fast enough for a 38 KiB frame. */
uint32_t bs_crc32(const uint8_t *data, size_t len) {
    static const uint32_t table[16] = {
        0x00000000u, 0x1db71064u, 0x3b6e20c8u, 0x26d930acu, 0x76dc4190u, 0x6b6b51f4u,
        0x4db26158u, 0x5005713cu, 0xedb88320u, 0xf00f9344u, 0xd6d6a3e8u, 0xcb61b38cu,
        0x9b64c2b0u, 0x86d3d2d4u, 0xa00ae278u, 0xbdbdf21cu,
    };
    uint32_t crc = 0xFFFFFFFFu;
    size_t i;
    for (i = 0; i < len; i++) {
        crc ^= data[i];
        crc = (crc >> 4) ^ table[crc & 0x0Fu];
        crc = (crc >> 4) ^ table[crc & 0x0Fu];
    }
    return crc ^ 0xFFFFFFFFu;
}

/* SHA-256, FIPS 180-4 §6.2. Constants: §4.2.2 (K) and §5.3.3 (H0). */
typedef struct bs__sha256 {
    uint32_t h[8];
    uint8_t block[64];
    size_t used;     /* bytes in block */
    uint64_t total;  /* bytes hashed so far */
} bs__sha256;

static const uint32_t bs__k[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u,
    0x923f82a4u, 0xab1c5ed5u, 0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u,
    0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u, 0xe49b69c1u, 0xefbe4786u,
    0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u,
    0x06ca6351u, 0x14292967u, 0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u,
    0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u, 0xa2bfe8a1u, 0xa81a664bu,
    0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au,
    0x5b9cca4fu, 0x682e6ff3u, 0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u,
    0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u,
};

static uint32_t bs__rotr(uint32_t x, unsigned n) {
    return (x >> n) | (x << (32u - n));
}

static void bs__sha256_block(bs__sha256 *s, const uint8_t *p) {
    uint32_t w[64];
    uint32_t a, b, c, d, e, f, g, h;
    unsigned t;
    for (t = 0; t < 16; t++) {
        w[t] = ((uint32_t)p[4 * t] << 24) | ((uint32_t)p[4 * t + 1] << 16) |
               ((uint32_t)p[4 * t + 2] << 8) | (uint32_t)p[4 * t + 3];
    }
    for (t = 16; t < 64; t++) {
        uint32_t s0 = bs__rotr(w[t - 15], 7) ^ bs__rotr(w[t - 15], 18) ^ (w[t - 15] >> 3);
        uint32_t s1 = bs__rotr(w[t - 2], 17) ^ bs__rotr(w[t - 2], 19) ^ (w[t - 2] >> 10);
        w[t] = w[t - 16] + s0 + w[t - 7] + s1;
    }
    a = s->h[0]; b = s->h[1]; c = s->h[2]; d = s->h[3];
    e = s->h[4]; f = s->h[5]; g = s->h[6]; h = s->h[7];
    for (t = 0; t < 64; t++) {
        uint32_t S1 = bs__rotr(e, 6) ^ bs__rotr(e, 11) ^ bs__rotr(e, 25);
        uint32_t ch = (e & f) ^ (~e & g);
        uint32_t t1 = h + S1 + ch + bs__k[t] + w[t];
        uint32_t S0 = bs__rotr(a, 2) ^ bs__rotr(a, 13) ^ bs__rotr(a, 22);
        uint32_t maj = (a & b) ^ (a & c) ^ (b & c);
        uint32_t t2 = S0 + maj;
        h = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    s->h[0] += a; s->h[1] += b; s->h[2] += c; s->h[3] += d;
    s->h[4] += e; s->h[5] += f; s->h[6] += g; s->h[7] += h;
}

static void bs__sha256_init(bs__sha256 *s) {
    static const uint32_t h0[8] = {
        0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
        0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u,
    };
    unsigned i;
    for (i = 0; i < 8; i++) {
        s->h[i] = h0[i];
    }
    s->used = 0;
    s->total = 0;
}

static void bs__sha256_update(bs__sha256 *s, const uint8_t *data, size_t len) {
    size_t i;
    s->total += len;
    for (i = 0; i < len; i++) {
        s->block[s->used++] = data[i];
        if (s->used == 64) {
            bs__sha256_block(s, s->block);
            s->used = 0;
        }
    }
}

static void bs__sha256_final(bs__sha256 *s, uint8_t digest[32]) {
    uint64_t bits = s->total * 8u;
    unsigned i;
    s->block[s->used++] = 0x80u;
    if (s->used > 56) {
        while (s->used < 64) {
            s->block[s->used++] = 0;
        }
        bs__sha256_block(s, s->block);
        s->used = 0;
    }
    while (s->used < 56) {
        s->block[s->used++] = 0;
    }
    for (i = 0; i < 8; i++) {  /* message length in bits, big-endian */
        s->block[56 + i] = (uint8_t)((bits >> (56u - 8u * i)) & 0xFFu);
    }
    bs__sha256_block(s, s->block);
    for (i = 0; i < 8; i++) {
        digest[4 * i] = (uint8_t)(s->h[i] >> 24);
        digest[4 * i + 1] = (uint8_t)((s->h[i] >> 16) & 0xFFu);
        digest[4 * i + 2] = (uint8_t)((s->h[i] >> 8) & 0xFFu);
        digest[4 * i + 3] = (uint8_t)(s->h[i] & 0xFFu);
    }
}

void bs_sha256(const uint8_t *data, size_t len, uint8_t digest[32]) {
    bs__sha256 s;
    bs__sha256_init(&s);
    bs__sha256_update(&s, data, len);
    bs__sha256_final(&s, digest);
}

/* HMAC, RFC 2104, with SHA-256 (block 64 bytes) and a 32-byte key. */
void bs_hmac_sha256(const uint8_t key[BS_KEY_BYTES], const uint8_t *data, size_t len,
                    uint8_t mac[32]) {
    uint8_t pad[64];
    uint8_t inner[32];
    bs__sha256 s;
    unsigned i;
    for (i = 0; i < 64; i++) {
        pad[i] = (uint8_t)((i < BS_KEY_BYTES ? key[i] : 0u) ^ 0x36u);
    }
    bs__sha256_init(&s);
    bs__sha256_update(&s, pad, 64);
    bs__sha256_update(&s, data, len);
    bs__sha256_final(&s, inner);
    for (i = 0; i < 64; i++) {
        pad[i] = (uint8_t)((i < BS_KEY_BYTES ? key[i] : 0u) ^ 0x5Cu);
    }
    bs__sha256_init(&s);
    bs__sha256_update(&s, pad, 64);
    bs__sha256_update(&s, inner, 32);
    bs__sha256_final(&s, mac);
}

static int bs__reading_ok(const bs_reading *r) {
    int lat_absent = r->lat_e7 == BS_ABSENT_I32;
    int lon_absent = r->lon_e7 == BS_ABSENT_I32;
    if (lat_absent != lon_absent) {
        return 0;
    }
    if (!lat_absent && (r->lat_e7 < -BS_LAT_MAX_E7 || r->lat_e7 > BS_LAT_MAX_E7 ||
                        r->lon_e7 < -BS_LON_MAX_E7 || r->lon_e7 > BS_LON_MAX_E7)) {
        return 0;
    }
    if (r->gnss_fix > BS_FIX_3D) {
        return 0;
    }
    if (r->satellites > 127u && r->satellites != BS_ABSENT_U8) {
        return 0;
    }
    if (r->rh_x10 > BS_RH_MAX_X10 && r->rh_x10 != BS_ABSENT_U16) {
        return 0;
    }
    return 1;
}

bs_result bs_encode_readings(uint8_t *out, size_t out_cap, uint32_t kit_id, uint32_t boot_id,
                             uint32_t seq, const bs_reading *readings, size_t n,
                             const uint8_t key[BS_KEY_BYTES], size_t *out_len,
                             size_t *err_index) {
    uint64_t base, newest;
    size_t i, frame_len, crc_at;
    uint8_t mac[32];
    uint8_t *p;

    if (n == 0 || n > BS_MAX_READINGS) {
        return BS_ERR_COUNT;
    }
    frame_len = BS_FRAME_BYTES(n);
    if (out_cap < frame_len) {
        return BS_ERR_BUFFER;
    }
    /* The base timestamp is the oldest reading's (§4.1), so every offset is >= 0. */
    base = readings[0].ts_ms;
    newest = readings[0].ts_ms;
    for (i = 0; i < n; i++) {
        const bs_reading *r = &readings[i];
        if (err_index != NULL) {
            *err_index = i;
        }
        if (r->ts_ms > BS_MAX_TS_MS) {
            return BS_ERR_TIMESTAMP;
        }
        if (!bs__reading_ok(r)) {
            return BS_ERR_VALUE;
        }
        if (r->ts_ms < base) {
            base = r->ts_ms;
        }
        if (r->ts_ms > newest) {
            newest = r->ts_ms;
        }
    }
    if (newest - base > BS_MAX_SPAN_MS) {
        return BS_ERR_SPAN;
    }

    /* §3: header */
    out[0] = 'B';
    out[1] = 'S';
    out[2] = (uint8_t)BS_VERSION;
    out[3] = (uint8_t)BS_MSG_READINGS;
    bs__put16(out + 4, (uint16_t)frame_len);
    bs__put16(out + 6, (uint16_t)n);
    bs__put32(out + 8, kit_id);
    bs__put32(out + 12, boot_id);
    bs__put32(out + 16, seq);
    /* §4.1: base timestamp */
    bs__put64(out + 20, base);
    /* §4.2: records */
    p = out + 28;
    for (i = 0; i < n; i++, p += BS_RECORD_BYTES) {
        const bs_reading *r = &readings[i];
        bs__put32(p + 0, (uint32_t)(r->ts_ms - base));
        bs__put32(p + 4, bs__bits32(r->lat_e7));
        bs__put32(p + 8, bs__bits32(r->lon_e7));
        bs__put16(p + 12, r->hdop_x100);
        bs__put16(p + 14, r->speed_cm_s);
        bs__put16(p + 16, r->pm1_x10);
        bs__put16(p + 18, r->pm25_x10);
        bs__put16(p + 20, r->pm10_x10);
        bs__put16(p + 22, r->no2_x10);
        bs__put16(p + 24, r->laeq_x10);
        bs__put16(p + 26, r->lamax_x10);
        bs__put16(p + 28, r->interval_ms);
        bs__put16(p + 30, bs__bits16(r->temp_x100));
        bs__put16(p + 32, r->rh_x10);
        bs__put16(p + 34, r->status);
        p[36] = r->gnss_fix;
        p[37] = r->satellites;
    }
    /* §5: CRC-32 over everything before it, then the MAC over everything before it */
    crc_at = frame_len - BS_CRC_BYTES - BS_MAC_BYTES;
    bs__put32(out + crc_at, bs_crc32(out, crc_at));
    bs_hmac_sha256(key, out, crc_at + BS_CRC_BYTES, mac);
    for (i = 0; i < BS_MAC_BYTES; i++) {
        out[crc_at + BS_CRC_BYTES + i] = mac[i];
    }
    *out_len = frame_len;
    return BS_OK;
}

#endif /* BIKESENSE_FRAME_IMPLEMENTED */
#endif /* BIKESENSE_FRAME_IMPLEMENTATION */
