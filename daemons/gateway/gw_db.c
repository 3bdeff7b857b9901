/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The gateway registry in SQLite (stands in for upstream's WaveKV `inst/<instance_id>` keys,
 * spec host-side.md §4.3/§4.5, on one node): table `instances` (instance id, app id, compose
 * hash, WireGuard address, public key, registration time, latest handshake, and the port
 * policies of spec §4.5 InstanceData: `port_policy` as the instance reported it (JSON, NULL =
 * unknown), `port_policy_hash` (the compose hash it was learned against: a registration with
 * another compose hash drops it) and `admin_port_policy`, the operator's override, which
 * survives re-registration) whose UNIQUE constraints on `ip` and `public_key` make an address
 * or a key impossible to hand out twice, and table `meta` (node uuid, node status, node url).
 * Databases written before the port policy columns existed are migrated in place on open
 * (ALTER TABLE ADD COLUMN; PRAGMA user_version records the schema version). The database runs in
 * WAL mode with synchronous=FULL, and every registration is one BEGIN IMMEDIATE transaction (read
 * the current state, pick the address, write), so a crash leaves either the old or the new state
 * and concurrent gateways on the same file cannot pick the same address.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sqlite3.h>

#include "gw_ctl.h"

#define BUSY_TIMEOUT_MS 5000
#define SCHEMA_VERSION  2 /* 1: no port policy columns */

struct gw_db {
    sqlite3 *h;
};

static const char schema_sql[] =
    "CREATE TABLE IF NOT EXISTS instances ("
    " instance_id TEXT PRIMARY KEY NOT NULL,"
    " app_id TEXT NOT NULL,"
    " compose_hash TEXT NOT NULL DEFAULT '',"
    " ip TEXT NOT NULL UNIQUE,"
    " public_key TEXT NOT NULL UNIQUE,"
    " reg_time INTEGER NOT NULL,"
    " last_handshake INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY NOT NULL, value TEXT NOT NULL);";

/* Columns added after version 1, with their definitions for ALTER TABLE. */
static const struct {
    const char *name, *def;
} added_columns[] = {
    {"port_policy", "TEXT"},
    {"port_policy_hash", "TEXT NOT NULL DEFAULT ''"},
    {"admin_port_policy", "TEXT"},
};

static int has_column(sqlite3 *h, const char *name, bool *out)
{
    sqlite3_stmt *st = NULL;
    int rc;
    *out = false;
    if (sqlite3_prepare_v2(h, "SELECT name FROM pragma_table_info('instances')", -1, &st, NULL) !=
        SQLITE_OK) {
        return -DS_E_IO;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const unsigned char *t = sqlite3_column_text(st, 0);
        if (t && strcmp((const char *)t, name) == 0) {
            *out = true;
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -DS_E_IO;
}

/* Bring an older database up to SCHEMA_VERSION (one transaction). */
static int migrate(sqlite3 *h, char **msg)
{
    char sql[256];
    if (sqlite3_exec(h, "BEGIN IMMEDIATE", NULL, NULL, msg) != SQLITE_OK) {
        return -DS_E_IO;
    }
    for (size_t i = 0; i < DS_ARRAY_SIZE(added_columns); i++) {
        bool have;
        if (has_column(h, added_columns[i].name, &have) < 0) {
            goto fail;
        }
        if (have) {
            continue;
        }
        snprintf(sql, sizeof(sql), "ALTER TABLE instances ADD COLUMN %s %s", added_columns[i].name,
                 added_columns[i].def);
        if (sqlite3_exec(h, sql, NULL, NULL, msg) != SQLITE_OK) {
            goto fail;
        }
    }
    snprintf(sql, sizeof(sql), "PRAGMA user_version = %d", SCHEMA_VERSION);
    if (sqlite3_exec(h, sql, NULL, NULL, msg) != SQLITE_OK ||
        sqlite3_exec(h, "COMMIT", NULL, NULL, msg) != SQLITE_OK) {
        goto fail;
    }
    return 0;
fail:
    sqlite3_exec(h, "ROLLBACK", NULL, NULL, NULL);
    return -DS_E_IO;
}

int gw_db_open(const char *path, struct gw_db **out, char *err, size_t err_size)
{
    struct gw_db *db = calloc(1, sizeof(*db));
    char *msg = NULL;
    int r = -ENOMEM;
    if (!db) {
        goto out;
    }
    if (sqlite3_open_v2(path, &db->h, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, NULL) !=
        SQLITE_OK) {
        snprintf(err, err_size, "open %s: %s", path, db->h ? sqlite3_errmsg(db->h) : "no memory");
        r = -DS_E_IO;
        goto out;
    }
    sqlite3_busy_timeout(db->h, BUSY_TIMEOUT_MS);
    if (sqlite3_exec(db->h,
                     "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
                     NULL, NULL, &msg) != SQLITE_OK ||
        sqlite3_exec(db->h, schema_sql, NULL, NULL, &msg) != SQLITE_OK ||
        migrate(db->h, &msg) < 0) {
        snprintf(err, err_size, "%s: %s", path, msg ? msg : "schema");
        r = -DS_E_IO;
        goto out;
    }
    *out = db;
    db = NULL;
    r = 0;
out:
    sqlite3_free(msg);
    gw_db_close(db);
    return r;
}

void gw_db_close(struct gw_db *db)
{
    if (db) {
        sqlite3_close(db->h);
        free(db);
    }
}

static void copy_col(sqlite3_stmt *st, int col, char *out, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(out, size, "%s", t ? (const char *)t : "");
}

#define SELECT_COLS                                                                                \
    "SELECT instance_id, app_id, compose_hash, ip, public_key, reg_time, last_handshake "          \
    "FROM instances "

static void row_to_instance(sqlite3_stmt *st, struct gw_instance *o)
{
    memset(o, 0, sizeof(*o));
    copy_col(st, 0, o->instance_id, sizeof(o->instance_id));
    copy_col(st, 1, o->app_id, sizeof(o->app_id));
    copy_col(st, 2, o->compose_hash, sizeof(o->compose_hash));
    copy_col(st, 3, o->ip, sizeof(o->ip));
    copy_col(st, 4, o->public_key, sizeof(o->public_key));
    o->reg_time = sqlite3_column_int64(st, 5);
    o->last_handshake = sqlite3_column_int64(st, 6);
}

/* One row by a column ("instance_id" or "public_key"). Returns 0, -ENOENT or -DS_E_IO. */
static int get_by(struct gw_db *db, const char *col, const char *value, struct gw_instance *out)
{
    char sql[256];
    sqlite3_stmt *st = NULL;
    snprintf(sql, sizeof(sql), SELECT_COLS "WHERE %s = ?1", col);
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
        return -DS_E_IO;
    }
    sqlite3_bind_text(st, 1, value, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int r = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : -DS_E_IO;
    if (r == 0) {
        row_to_instance(st, out);
    }
    sqlite3_finalize(st);
    return r;
}

int gw_db_get(struct gw_db *db, const char *instance_id, struct gw_instance *out)
{
    return get_by(db, "instance_id", instance_id, out);
}

/* The addresses in use, as a bitmap over the client range. */
struct used {
    const struct gw_net *net;
    uint8_t *bits;
};

static bool used_test(uint32_t ip, void *ctx)
{
    struct used *u = ctx;
    uint32_t off = ip - (u->net->range.addr & gw_cidr_mask(u->net->range.prefix));
    return (u->bits[off / 8] >> (off % 8)) & 1;
}

static int load_used(struct gw_db *db, struct used *u)
{
    sqlite3_stmt *st = NULL;
    size_t n = (size_t)1 << (32 - u->net->range.prefix);
    u->bits = calloc((n + 7) / 8, 1);
    if (!u->bits) {
        return -ENOMEM;
    }
    if (sqlite3_prepare_v2(db->h, "SELECT ip FROM instances", -1, &st, NULL) != SQLITE_OK) {
        return -DS_E_IO;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        uint32_t ip;
        const unsigned char *t = sqlite3_column_text(st, 0);
        if (t && gw_ip4_parse((const char *)t, &ip) == 0 && gw_cidr_contains(&u->net->range, ip)) {
            uint32_t off = ip - (u->net->range.addr & gw_cidr_mask(u->net->range.prefix));
            u->bits[off / 8] |= (uint8_t)(1u << (off % 8));
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : -DS_E_IO;
}

static int exec(struct gw_db *db, const char *sql)
{
    return sqlite3_exec(db->h, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -DS_E_IO;
}

int gw_db_register(struct gw_db *db, const struct gw_net *net, const char *app_id,
                   const char *instance_id, const char *compose_hash, const char *public_key,
                   const char *port_policy, int64_t now, struct gw_instance *out,
                   char out_old_key[GW_WG_KEY_B64_LEN + 1], char *err, size_t err_size)
{
    struct gw_instance cur, other;
    struct used u = {.net = net, .bits = NULL};
    sqlite3_stmt *st = NULL;
    bool exists = false;
    char ip[GW_IP4_TEXT_MAX] = "";
    int r;
    if (exec(db, "BEGIN IMMEDIATE") < 0) {
        snprintf(err, err_size, "registry busy: %s", sqlite3_errmsg(db->h));
        return -DS_E_IO;
    }
    r = get_by(db, "public_key", public_key, &other);
    if (r == 0 && strcmp(other.instance_id, instance_id) != 0) {
        snprintf(err, err_size, "WireGuard public key is already used by another instance");
        r = -EEXIST;
        goto out;
    }
    if (r < 0 && r != -ENOENT) {
        goto io;
    }
    r = get_by(db, "instance_id", instance_id, &cur);
    if (r < 0 && r != -ENOENT) {
        goto io;
    }
    exists = r == 0;
    if (exists && strcmp(cur.app_id, app_id) != 0) {
        snprintf(err, err_size, "instance %s is registered to another app", instance_id);
        r = -DS_E_MISMATCH;
        goto out;
    }
    uint32_t addr;
    if (exists && gw_ip4_parse(cur.ip, &addr) == 0 && gw_net_assignable(net, addr)) {
        snprintf(ip, sizeof(ip), "%s", cur.ip);
    } else {
        r = load_used(db, &u);
        if (r < 0) {
            goto io;
        }
        r = gw_net_allocate(net, used_test, &u, &addr);
        if (r < 0) {
            snprintf(err, err_size, "no free WireGuard address left in the client range");
            goto out;
        }
        gw_ip4_text(addr, ip);
    }
    /* Spec §4.3: a new compose hash invalidates the cached instance policy; a reported one
     * replaces it; no report keeps it (the background fetch fills an unknown one). The admin
     * override is left alone. */
    const char *sql =
        exists ? "UPDATE instances SET compose_hash = ?3, ip = ?4, public_key = ?5, reg_time = ?6, "
                 "port_policy = CASE WHEN ?7 IS NOT NULL THEN ?7 "
                 "WHEN port_policy_hash <> ?3 THEN NULL ELSE port_policy END, "
                 "port_policy_hash = ?3 WHERE instance_id = ?1 AND app_id = ?2"
               : "INSERT INTO instances (instance_id, app_id, compose_hash, ip, public_key, "
                 "reg_time, port_policy, port_policy_hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?3)";
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
        goto io;
    }
    sqlite3_bind_text(st, 1, instance_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, app_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, compose_hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 4, ip, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, public_key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, now);
    if (port_policy != NULL) {
        sqlite3_bind_text(st, 7, port_policy, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(st, 7);
    }
    if (sqlite3_step(st) != SQLITE_DONE) {
        goto io;
    }
    if (exec(db, "COMMIT") < 0) {
        goto io;
    }
    r = get_by(db, "instance_id", instance_id, out);
    if (r == 0) {
        snprintf(out_old_key, GW_WG_KEY_B64_LEN + 1, "%s",
                 exists && strcmp(cur.public_key, public_key) != 0 ? cur.public_key : "");
    }
    sqlite3_finalize(st);
    free(u.bits);
    return r;
io:
    snprintf(err, err_size, "registry: %s", sqlite3_errmsg(db->h));
    r = -DS_E_IO;
out:
    sqlite3_finalize(st);
    free(u.bits);
    (void)exec(db, "ROLLBACK");
    return r;
}

int gw_db_list(struct gw_db *db, struct gw_instance **out, size_t *out_count)
{
    sqlite3_stmt *st = NULL;
    struct gw_instance *v = NULL;
    size_t n = 0, cap = 0;
    int rc, r = -DS_E_IO;
    if (sqlite3_prepare_v2(db->h, SELECT_COLS "ORDER BY reg_time, instance_id", -1, &st, NULL) !=
        SQLITE_OK) {
        return -DS_E_IO;
    }
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (n == GW_INSTANCES_MAX) {
            r = -DS_E_LIMIT;
            goto out;
        }
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 16;
            struct gw_instance *nv = realloc(v, nc * sizeof(*v));
            if (!nv) {
                r = -ENOMEM;
                goto out;
            }
            v = nv;
            cap = nc;
        }
        row_to_instance(st, &v[n++]);
    }
    if (rc != SQLITE_DONE) {
        goto out;
    }
    *out = v;
    *out_count = n;
    v = NULL;
    r = 0;
out:
    sqlite3_finalize(st);
    free(v);
    return r;
}

/* Run a one-statement write with up to two text and one integer parameter. */
static int write1(struct gw_db *db, const char *sql, const char *a, const char *b, int64_t i,
                  bool need_change)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
        return -DS_E_IO;
    }
    sqlite3_bind_text(st, 1, a, -1, SQLITE_STATIC);
    if (b) {
        sqlite3_bind_text(st, 2, b, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_int64(st, 2, i);
    }
    int r = sqlite3_step(st) == SQLITE_DONE ? 0 : -DS_E_IO;
    if (r == 0 && need_change && sqlite3_changes(db->h) == 0) {
        r = -ENOENT;
    }
    sqlite3_finalize(st);
    return r;
}

int gw_db_remove(struct gw_db *db, const char *instance_id)
{
    return write1(db, "DELETE FROM instances WHERE instance_id = ?1 AND ?2 = 0", instance_id, NULL,
                  0, true);
}

int gw_db_set_handshake(struct gw_db *db, const char *public_key, int64_t ts)
{
    return write1(db,
                  "UPDATE instances SET last_handshake = ?2 WHERE public_key = ?1 AND "
                  "last_handshake <> ?2",
                  public_key, NULL, ts, false);
}

int gw_db_meta_get(struct gw_db *db, const char *key, char *out, size_t out_size)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->h, "SELECT value FROM meta WHERE key = ?1", -1, &st, NULL) !=
        SQLITE_OK) {
        return -DS_E_IO;
    }
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int r = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : -DS_E_IO;
    if (r == 0) {
        copy_col(st, 0, out, out_size);
    }
    sqlite3_finalize(st);
    return r;
}

int gw_db_meta_set(struct gw_db *db, const char *key, const char *value)
{
    return write1(db, "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)", key, value, 0,
                  false);
}

/* ---- port policies -------------------------------------------------------------------------- */

static char *dup_col(sqlite3_stmt *st, int col, int *r)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    if (t == NULL) {
        return NULL;
    }
    char *s = strdup((const char *)t);
    if (s == NULL) {
        *r = -ENOMEM;
    }
    return s;
}

int gw_db_get_policies(struct gw_db *db, const char *instance_id, struct gw_db_policies *out)
{
    sqlite3_stmt *st = NULL;
    struct gw_db_policies p = {0};
    if (sqlite3_prepare_v2(db->h,
                           "SELECT port_policy, admin_port_policy, port_policy_hash FROM instances "
                           "WHERE instance_id = ?1",
                           -1, &st, NULL) != SQLITE_OK) {
        return -DS_E_IO;
    }
    sqlite3_bind_text(st, 1, instance_id, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    int r = rc == SQLITE_ROW ? 0 : rc == SQLITE_DONE ? -ENOENT : -DS_E_IO;
    if (r == 0) {
        p.reported = dup_col(st, 0, &r);
        p.admin = dup_col(st, 1, &r);
        copy_col(st, 2, p.hash, sizeof(p.hash));
    }
    sqlite3_finalize(st);
    if (r == 0) {
        *out = p;
    } else {
        gw_db_policies_done(&p);
    }
    return r;
}

void gw_db_policies_done(struct gw_db_policies *p)
{
    free(p->reported);
    free(p->admin);
    p->reported = p->admin = NULL;
}

static int set_policy(struct gw_db *db, const char *sql, const char *instance_id, const char *json)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db->h, sql, -1, &st, NULL) != SQLITE_OK) {
        return -DS_E_IO;
    }
    sqlite3_bind_text(st, 1, instance_id, -1, SQLITE_STATIC);
    if (json != NULL) {
        sqlite3_bind_text(st, 2, json, -1, SQLITE_STATIC);
    } else {
        sqlite3_bind_null(st, 2);
    }
    int r = sqlite3_step(st) == SQLITE_DONE ? 0 : -DS_E_IO;
    if (r == 0 && sqlite3_changes(db->h) == 0) {
        r = -ENOENT;
    }
    sqlite3_finalize(st);
    return r;
}

int gw_db_set_fetched_policy(struct gw_db *db, const char *instance_id, const char *json)
{
    return set_policy(db,
                      "UPDATE instances SET port_policy = ?2 WHERE instance_id = ?1 AND "
                      "port_policy IS NULL",
                      instance_id, json);
}

int gw_db_set_admin_policy(struct gw_db *db, const char *instance_id, const char *json)
{
    return set_policy(db, "UPDATE instances SET admin_port_policy = ?2 WHERE instance_id = ?1",
                      instance_id, json);
}
