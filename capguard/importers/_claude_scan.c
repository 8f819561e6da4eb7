/* The importer's line finder and field reader for Claude Code transcripts, compiled (optional: claude_scan.py
 * has the same loop in Python and uses it when this module is not built, or when CAPGUARD_PURE_PYTHON=1).
 *
 * `Lines(data, size)` walks the complete lines of `data[:size]` that mention `"usage"`, as claude_scan.scan does:
 * it skips a line that repeats the last counted reply (the same bytes from `"usage"` through the end of the
 * message, then a flat tail naming the same request id; `counted()` sets it, as `_repeat_of`), and yields
 * (start, at, end, fields) for the others. `fields` are the values decode.Line's msgspec decode would give to
 * decode.from_fields, or None when this reader is not certain of them: then Python decodes the line itself. It is
 * never certain of a line that is not strictly valid UTF-8 and strictly valid JSON (RFC 8259, as json.loads and
 * msgspec both read it) throughout, skipped content included, nor of one where a field read here repeats its key,
 * has a key or a string value with a backslash escape, has a type other than msgspec's (`str | None`,
 * `bool | None`, an object or null; counts: plain non-negative integers of at most 18 digits), nor of one nested
 * deeper than 64 levels, with a number longer than 40 characters or an escaped surrogate.
 *
 * `Lines.replies(...)` goes one step further for the common line: it applies decode.from_fields' rules and
 * max-wins itself and appends the FoundReply the Python loop would make (see "counting the common line here");
 * any line of a rarer shape is still handed to Python, which counts it as before.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem, memrchr */
#endif
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#define MAX_DEPTH 64
#define MAX_NUMBER 40

/* -- fields -------------------------------------------------------------------------------------------------- */

enum {
    F_TYPE, F_API_ERROR, F_COPIED_FROM, F_SESSION, F_MESSAGE_ID, F_MODEL, F_FIGURES, F_SPEED, F_GEO, F_REQUEST,
    F_REQUESTED_MODEL, F_ABORTED, F_TIMESTAMP, F_CWD, F_VERSION, N_FIELDS
};
enum { K_IN, K_OUT, K_READ, K_WRITE, K_1H, K_WEB, N_COUNTS };

typedef enum { V_ABSENT = 0, V_NULL, V_STR, V_TRUE, V_FALSE } Kind;

typedef struct {
    Kind kind;
    const char *s; /* V_STR: the string's bytes (no escapes), between its quotes */
    Py_ssize_t n;
} Value;

typedef struct {
    Value v[N_FIELDS];
    int message;      /* 0 absent/null, 1 object */
    int usage;        /* 0 absent/null, 1 object */
    long long counts[N_COUNTS];
    unsigned seen_top, seen_message, seen_usage, seen_creation, seen_tools; /* keys met, to refuse repeats */
} Fields;

typedef struct {
    const unsigned char *p, *end;
    int depth;
} Parser;

/* every function below returns 0 when the input is valid and read with certainty, -1 otherwise */

static int ws(Parser *ps) {
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\r' || *ps->p == '\n')) ps->p++;
    return 0;
}

static int hex(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* the first byte at or after p that ends a run of plain string bytes (printable ASCII other than `"` and `\\`):
 * a quote, a backslash, a control character or the first byte of a multi-byte character; `end` if none. Most of
 * a transcript's bytes are in long strings (tool output), read here 16 at a time with SSE2 (every x86-64). */
static const unsigned char *skip_plain(const unsigned char *p, const unsigned char *end) {
#ifdef __SSE2__
    const __m128i quote = _mm_set1_epi8('"'), backslash = _mm_set1_epi8('\\'), space = _mm_set1_epi8(0x20);
    while (end - p >= 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)p);
        /* signed: bytes >= 0x80 are negative, so "less than 0x20" also catches them */
        __m128i stop = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                                    _mm_cmplt_epi8(v, space));
        unsigned mask = (unsigned)_mm_movemask_epi8(stop);
        if (mask) return p + __builtin_ctz(mask);
        p += 16;
    }
#endif
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') p++;
    return p;
}

/* one JSON string, the opening quote at ps->p; *escaped says whether it had a backslash escape */
static int string(Parser *ps, const char **s, Py_ssize_t *n, int *escaped) {
    const unsigned char *p = ps->p + 1, *end = ps->end;
    *escaped = 0;
    *s = (const char *)p;
    for (;;) {
        p = skip_plain(p, end);
        if (p >= end) return -1;
        unsigned char c = *p;
        if (c == '"') break;
        if (c < 0x20) return -1;
        if (c == '\\') {
            *escaped = 1;
            if (p + 1 >= end) return -1;
            c = p[1];
            if (c == 'u') {
                if (p + 6 > end) return -1;
                int h0 = hex(p[2]), h1 = hex(p[3]), h2 = hex(p[4]), h3 = hex(p[5]);
                if (h0 < 0 || h1 < 0 || h2 < 0 || h3 < 0) return -1;
                int code = (h0 << 12) | (h1 << 8) | (h2 << 4) | h3;
                if (code >= 0xD800 && code <= 0xDFFF) return -1; /* msgspec and json.loads differ on these */
                p += 6;
            } else if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f' || c == 'n' || c == 'r' ||
                       c == 't') {
                p += 2;
            } else {
                return -1;
            }
            continue;
        }
        /* UTF-8, strictly as Python decodes it: no overlong forms, no surrogates, nothing above U+10FFFF */
        if (c >= 0xC2 && c <= 0xDF) {
            if (p + 2 > end || (p[1] & 0xC0) != 0x80) return -1;
            p += 2;
        } else if (c >= 0xE0 && c <= 0xEF) {
            if (p + 3 > end || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return -1;
            if (c == 0xE0 && p[1] < 0xA0) return -1;
            if (c == 0xED && p[1] > 0x9F) return -1;
            p += 3;
        } else if (c >= 0xF0 && c <= 0xF4) {
            if (p + 4 > end || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return -1;
            if (c == 0xF0 && p[1] < 0x90) return -1;
            if (c == 0xF4 && p[1] > 0x8F) return -1;
            p += 4;
        } else {
            return -1;
        }
    }
    *n = (Py_ssize_t)((const char *)p - *s);
    ps->p = p + 1;
    return 0;
}

/* one JSON number at ps->p; *plain says whether it is digits only (a non-negative integer), then *value holds it */
static int number(Parser *ps, int *plain, long long *value) {
    const unsigned char *p = ps->p, *end = ps->end, *begin = ps->p;
    *plain = 1;
    if (p < end && *p == '-') {
        *plain = 0;
        p++;
    }
    if (p >= end) return -1;
    if (*p == '0') {
        p++;
    } else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') p++;
    } else {
        return -1;
    }
    if (p < end && *p == '.') {
        *plain = 0;
        p++;
        if (p >= end || *p < '0' || *p > '9') return -1;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        *plain = 0;
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (p >= end || *p < '0' || *p > '9') return -1;
        while (p < end && *p >= '0' && *p <= '9') p++;
    }
    if (p - begin > MAX_NUMBER) return -1;
    if (*plain) {
        if (p - begin > 18) return -1;
        long long v = 0;
        for (const unsigned char *q = begin; q < p; q++) v = v * 10 + (*q - '0');
        *value = v;
    }
    ps->p = p;
    return 0;
}

static int literal(Parser *ps, const char *word, Py_ssize_t n) {
    if (ps->end - ps->p < n || memcmp(ps->p, word, n) != 0) return -1;
    ps->p += n;
    return 0;
}

static int skip_value(Parser *ps);

static int skip_container(Parser *ps, unsigned char close) {
    if (++ps->depth > MAX_DEPTH) return -1;
    ps->p++;
    ws(ps);
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        ps->depth--;
        return 0;
    }
    for (;;) {
        if (close == '}') {
            const char *s;
            Py_ssize_t n;
            int escaped;
            if (ps->p >= ps->end || *ps->p != '"' || string(ps, &s, &n, &escaped) < 0) return -1;
            ws(ps);
            if (ps->p >= ps->end || *ps->p != ':') return -1;
            ps->p++;
            ws(ps);
        }
        if (skip_value(ps) < 0) return -1;
        ws(ps);
        if (ps->p >= ps->end) return -1;
        if (*ps->p == ',') {
            ps->p++;
            ws(ps);
            continue;
        }
        if (*ps->p != close) return -1;
        ps->p++;
        ps->depth--;
        return 0;
    }
}

static int skip_value(Parser *ps) {
    if (ps->p >= ps->end) return -1;
    const char *s;
    Py_ssize_t n;
    int escaped, plain;
    long long v;
    switch (*ps->p) {
        case '"': return string(ps, &s, &n, &escaped);
        case '{': return skip_container(ps, '}');
        case '[': return skip_container(ps, ']');
        case 't': return literal(ps, "true", 4);
        case 'f': return literal(ps, "false", 5);
        case 'n': return literal(ps, "null", 4);
        default: return number(ps, &plain, &v);
    }
}

/* a `str | None` field */
static int str_field(Parser *ps, Value *out) {
    if (ps->p < ps->end && *ps->p == '"') {
        int escaped;
        if (string(ps, &out->s, &out->n, &escaped) < 0 || escaped) return -1;
        out->kind = V_STR;
        return 0;
    }
    if (literal(ps, "null", 4) < 0) return -1;
    out->kind = V_NULL;
    return 0;
}

/* a `bool | None` field */
static int bool_field(Parser *ps, Value *out) {
    if (ps->p < ps->end && *ps->p == 't') {
        out->kind = V_TRUE;
        return literal(ps, "true", 4);
    }
    if (ps->p < ps->end && *ps->p == 'f') {
        out->kind = V_FALSE;
        return literal(ps, "false", 5);
    }
    out->kind = V_NULL;
    return literal(ps, "null", 4);
}

/* an `int` field (msgspec: no null, no float) */
static int count_field(Parser *ps, long long *out) {
    int plain;
    if (ps->p >= ps->end || !((*ps->p >= '0' && *ps->p <= '9') || *ps->p == '-')) return -1;
    if (number(ps, &plain, out) < 0 || !plain) return -1;
    return 0;
}

/* Which object is being read: the line, its message, the usage, usage.cache_creation, usage.server_tool_use. */
typedef enum { O_TOP, O_MESSAGE, O_USAGE, O_CREATION, O_TOOLS } Level;

static int object(Parser *ps, Fields *f, Level level);

/* an object-or-null field; *present says which */
static int object_field(Parser *ps, Fields *f, Level level, int *present) {
    if (ps->p < ps->end && *ps->p == '{') {
        *present = 1;
        return object(ps, f, level);
    }
    *present = 0;
    return literal(ps, "null", 4);
}

#define KEY(lit) (n == (Py_ssize_t)sizeof(lit) - 1 && memcmp(s, lit, sizeof(lit) - 1) == 0)

/* the value of key s[:n] in an object at `level`; *slot is a bit for the key read here (0: a key not read) */
static int member(Parser *ps, Fields *f, Level level, const char *s, Py_ssize_t n, unsigned *slot) {
    int present;
    *slot = 0;
    switch (level) {
        case O_TOP:
            if (KEY("type")) return *slot = 1u << 0, str_field(ps, &f->v[F_TYPE]);
            if (KEY("isApiErrorMessage")) return *slot = 1u << 1, bool_field(ps, &f->v[F_API_ERROR]);
            if (KEY("requestSessionId")) return *slot = 1u << 2, str_field(ps, &f->v[F_COPIED_FROM]);
            if (KEY("sessionId")) return *slot = 1u << 3, str_field(ps, &f->v[F_SESSION]);
            if (KEY("message")) return *slot = 1u << 4, object_field(ps, f, O_MESSAGE, &f->message);
            if (KEY("requestId")) return *slot = 1u << 5, str_field(ps, &f->v[F_REQUEST]);
            if (KEY("requestedModel")) return *slot = 1u << 6, str_field(ps, &f->v[F_REQUESTED_MODEL]);
            if (KEY("isAbortedMidStream")) return *slot = 1u << 7, bool_field(ps, &f->v[F_ABORTED]);
            if (KEY("timestamp")) return *slot = 1u << 8, str_field(ps, &f->v[F_TIMESTAMP]);
            if (KEY("cwd")) return *slot = 1u << 9, str_field(ps, &f->v[F_CWD]);
            if (KEY("version")) return *slot = 1u << 10, str_field(ps, &f->v[F_VERSION]);
            break;
        case O_MESSAGE:
            if (KEY("id")) return *slot = 1u << 0, str_field(ps, &f->v[F_MESSAGE_ID]);
            if (KEY("model")) return *slot = 1u << 1, str_field(ps, &f->v[F_MODEL]);
            if (KEY("usage")) return *slot = 1u << 2, object_field(ps, f, O_USAGE, &f->usage);
            break;
        case O_USAGE:
            if (KEY("input_tokens")) return *slot = 1u << 0, count_field(ps, &f->counts[K_IN]);
            if (KEY("output_tokens")) return *slot = 1u << 1, count_field(ps, &f->counts[K_OUT]);
            if (KEY("cache_read_input_tokens")) return *slot = 1u << 2, count_field(ps, &f->counts[K_READ]);
            if (KEY("cache_creation_input_tokens")) return *slot = 1u << 3, count_field(ps, &f->counts[K_WRITE]);
            if (KEY("cache_creation")) return *slot = 1u << 4, object_field(ps, f, O_CREATION, &present);
            if (KEY("server_tool_use")) return *slot = 1u << 5, object_field(ps, f, O_TOOLS, &present);
            if (KEY("speed")) return *slot = 1u << 6, str_field(ps, &f->v[F_SPEED]);
            if (KEY("inference_geo")) return *slot = 1u << 7, str_field(ps, &f->v[F_GEO]);
            break;
        case O_CREATION:
            if (KEY("ephemeral_1h_input_tokens")) return *slot = 1u << 0, count_field(ps, &f->counts[K_1H]);
            break;
        case O_TOOLS:
            if (KEY("web_search_requests")) return *slot = 1u << 0, count_field(ps, &f->counts[K_WEB]);
            break;
    }
    return skip_value(ps);
}

static int object(Parser *ps, Fields *f, Level level) {
    unsigned *seen = level == O_TOP       ? &f->seen_top
                     : level == O_MESSAGE ? &f->seen_message
                     : level == O_USAGE   ? &f->seen_usage
                     : level == O_CREATION ? &f->seen_creation
                                           : &f->seen_tools;
    if (*seen) return -1; /* read a second time (a repeated key one level up) */
    if (++ps->depth > MAX_DEPTH) return -1;
    ps->p++;
    ws(ps);
    if (ps->p < ps->end && *ps->p == '}') {
        ps->p++;
        ps->depth--;
        *seen |= 1u << 31;
        return 0;
    }
    for (;;) {
        const char *s;
        Py_ssize_t n;
        int escaped;
        unsigned slot;
        if (ps->p >= ps->end || *ps->p != '"' || string(ps, &s, &n, &escaped) < 0) return -1;
        if (escaped) return -1; /* `"typ\u0065"` is "type" */
        ws(ps);
        if (ps->p >= ps->end || *ps->p != ':') return -1;
        ps->p++;
        ws(ps);
        if (member(ps, f, level, s, n, &slot) < 0) return -1;
        if (slot) {
            if (*seen & slot) return -1; /* a repeated key: which value wins is not ours to say */
            *seen |= slot;
        }
        ws(ps);
        if (ps->p >= ps->end) return -1;
        if (*ps->p == ',') {
            ps->p++;
            ws(ps);
            continue;
        }
        if (*ps->p != '}') return -1;
        ps->p++;
        ps->depth--;
        *seen |= 1u << 31;
        return 0;
    }
}

/* the whole line: whitespace, one object, whitespace */
static int read_line(const unsigned char *p, const unsigned char *end, Fields *f) {
    Parser ps = {p, end, 0};
    memset(f, 0, sizeof(*f));
    ws(&ps);
    if (ps.p >= ps.end || *ps.p != '{') return -1;
    if (object(&ps, f, O_TOP) < 0) return -1;
    ws(&ps);
    return ps.p == ps.end ? 0 : -1;
}

/* -- the scanner --------------------------------------------------------------------------------------------- */

typedef struct {
    const char *s;
    Py_ssize_t n;
    PyObject *obj;
} Cached; /* the last string made for a field: the next line mostly repeats it */

typedef struct {
    PyObject_HEAD
    Py_buffer buf;
    Py_ssize_t size, pos;
    Py_ssize_t at, end;             /* the last line yielded: its first `"usage"`, its end */
    Py_ssize_t repeat_at, repeat_n; /* the last counted reply's bytes from `"usage"` through its message's end */
    PyObject *marker;               /* and its `"requestId":"<id>"`, bytes */
    Cached cache[N_FIELDS];
    PyObject *first_at, *last_at;   /* the earliest and latest time of a reply counted by `replies` (folded too) */
} Lines;

static const char USAGE[] = "\"usage\"";
static const char REQUEST[] = "\"requestId\"";
static const char MESSAGE[] = "\"message\"";

static Py_ssize_t find(const char *data, Py_ssize_t from, Py_ssize_t to, const char *what, Py_ssize_t n) {
    if (to - from < n) return -1;
    const char *hit = memmem(data + from, to - from, what, n);
    return hit ? hit - data : -1;
}

static Py_ssize_t count(const char *data, Py_ssize_t from, Py_ssize_t to, const char *what, Py_ssize_t n) {
    Py_ssize_t found = 0, at;
    while ((at = find(data, from, to, what, n)) >= 0) {
        found++;
        from = at + n;
    }
    return found;
}

/* the first `"usage"` in data[from:to]: most of the bytes of a transcript are in lines without one, and this
 * search is most of the time spent on them. With SSE2 (every x86-64), 16 positions at a time are tested for the
 * needle's `u` and `g`, and only those that have both are compared whole. */
static Py_ssize_t find_usage(const char *data, Py_ssize_t from, Py_ssize_t to) {
#ifdef __SSE2__
    const __m128i u = _mm_set1_epi8('u'), g = _mm_set1_epi8('g');
    Py_ssize_t i = from;
    for (; i + 20 <= to; i += 16) {
        __m128i a = _mm_loadu_si128((const __m128i *)(data + i + 1));
        __m128i b = _mm_loadu_si128((const __m128i *)(data + i + 4));
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_and_si128(_mm_cmpeq_epi8(a, u), _mm_cmpeq_epi8(b, g)));
        while (mask) {
            Py_ssize_t at = i + __builtin_ctz(mask);
            if (at + 7 <= to && memcmp(data + at, USAGE, 7) == 0) return at;
            mask &= mask - 1;
        }
    }
    return find(data, i, to, USAGE, sizeof(USAGE) - 1);
#else
    return find(data, from, to, USAGE, sizeof(USAGE) - 1);
#endif
}

/* the offset just after the last newline before `at` (0 if none) */
static Py_ssize_t line_start(const char *data, Py_ssize_t at) {
#ifdef __GLIBC__
    const char *before = memrchr(data, '\n', at);
    return before ? before - data + 1 : 0;
#else
    while (at > 0 && data[at - 1] != '\n') at--;
    return at;
#endif
}

/* claude_scan._flat_tail */
static int flat_tail(Lines *self, Py_ssize_t tail, Py_ssize_t end) {
    const char *data = self->buf.buf;
    if (tail > end) return 0;
    return memchr(data + tail, '{', end - tail) == NULL && count(data, tail, end, "}", 1) == 1 &&
           count(data, tail, end, REQUEST, sizeof(REQUEST) - 1) == 1 &&
           find(data, tail, end, PyBytes_AS_STRING(self->marker), PyBytes_GET_SIZE(self->marker)) >= 0 &&
           find(data, tail, end, MESSAGE, sizeof(MESSAGE) - 1) < 0;
}

static PyObject *text(Lines *self, int field, const Value *v) {
    if (v->kind != V_STR) Py_RETURN_NONE;
    Cached *c = &self->cache[field];
    if (c->obj != NULL && c->n == v->n && memcmp(c->s, v->s, v->n) == 0) return Py_NewRef(c->obj);
    PyObject *obj = PyUnicode_DecodeUTF8(v->s, v->n, "strict");
    if (obj == NULL) return NULL;
    Py_XSETREF(c->obj, Py_NewRef(obj));
    c->s = v->s;
    c->n = v->n;
    return obj;
}

static PyObject *flag(const Value *v) {
    if (v->kind == V_TRUE) Py_RETURN_TRUE;
    if (v->kind == V_FALSE) Py_RETURN_FALSE;
    Py_RETURN_NONE;
}

/* (type, isApiErrorMessage, requestSessionId, sessionId, message.id, message.model, figures or None, speed,
 * inference_geo, requestId, requestedModel, isAbortedMidStream, timestamp, cwd, version): decode.from_fields' */
static PyObject *fields_tuple(Lines *self, Fields *f) {
    PyObject *t = PyTuple_New(N_FIELDS);
    if (t == NULL) return NULL;
    for (int i = 0; i < N_FIELDS; i++) {
        PyObject *item;
        if (i == F_FIGURES) {
            if (!f->usage) {
                item = Py_NewRef(Py_None);
            } else {
                item = PyList_New(N_COUNTS);
                if (item != NULL) {
                    for (int k = 0; k < N_COUNTS; k++) {
                        PyObject *c = PyLong_FromLongLong(f->counts[k]);
                        if (c == NULL) {
                            Py_CLEAR(item);
                            break;
                        }
                        PyList_SET_ITEM(item, k, c);
                    }
                }
            }
        } else if (i == F_API_ERROR || i == F_ABORTED) {
            item = flag(&f->v[i]);
        } else if ((i == F_MESSAGE_ID || i == F_MODEL || i == F_SPEED || i == F_GEO) &&
                   (i <= F_MODEL ? !f->message : !f->usage)) {
            item = Py_NewRef(Py_None);
        } else {
            item = text(self, i, &f->v[i]);
        }
        if (item == NULL) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, i, item);
    }
    return t;
}

/* the next line to read (a repeat of the reply just counted is skipped): 1, with its start and end, and whether
 * `f` holds its fields (0: this reader is not certain of them); 0 at the end of the bytes */
static int next_line(Lines *self, Py_ssize_t *start, Py_ssize_t *end, Fields *f, int *typed) {
    const char *data = self->buf.buf;
    Py_ssize_t size = self->size;
    for (;;) {
        Py_ssize_t at = find_usage(data, self->pos, size);
        if (at < 0) {
            self->pos = size;
            return 0;
        }
        const char *nl = memchr(data + at, '\n', size - at);
        *end = nl ? nl - data : size;
        self->pos = *end + 1;
        if (self->repeat_n && at + self->repeat_n <= *end &&
            memcmp(data + at, data + self->repeat_at, self->repeat_n) == 0 &&
            flat_tail(self, at + self->repeat_n, *end))
            continue; /* the next content block of the reply just counted */
        *start = line_start(data, at);
        self->at = at;
        self->end = *end;
        *typed = read_line((const unsigned char *)data + *start, (const unsigned char *)data + *end, f) == 0;
        return 1;
    }
}

/* (start, at, end, fields or None) of a line, as the iterator yields it */
static PyObject *line_tuple(Lines *self, Py_ssize_t start, Py_ssize_t end, Fields *f, int typed) {
    PyObject *fields = typed ? fields_tuple(self, f) : Py_NewRef(Py_None);
    if (fields == NULL) return NULL;
    return Py_BuildValue("(nnnN)", start, self->at, end, fields);
}

static PyObject *Lines_next(Lines *self) {
    Py_ssize_t start, end;
    int typed;
    Fields f;
    if (!next_line(self, &start, &end, &f, &typed)) return NULL; /* StopIteration */
    return line_tuple(self, start, end, &f, typed);
}

/* the reply of the last line read was counted, its request id id[:n] (n = 0: none): skip the lines that repeat it,
 * as claude_scan._repeat_of; -1 on an error */
static int set_repeat(Lines *self, const char *id, Py_ssize_t n) {
    const char *data = self->buf.buf;
    self->repeat_n = 0;
    Py_CLEAR(self->marker);
    if (n == 0) return 0;
    char *m = PyMem_Malloc(n + 14);
    if (m == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(m, "\"requestId\":\"", 13);
    memcpy(m + 13, id, n);
    m[13 + n] = '"';
    PyObject *marker = PyBytes_FromStringAndSize(m, n + 14);
    PyMem_Free(m);
    if (marker == NULL) return -1;
    self->marker = marker;
    Py_ssize_t at = self->at, end = self->end;
    Py_ssize_t found = find(data, at, end, PyBytes_AS_STRING(marker), PyBytes_GET_SIZE(marker));
    Py_ssize_t close = -1;
    if (found >= 0) {
        for (Py_ssize_t i = found - 1; i >= at; i--)
            if (data[i] == '}') {
                close = i;
                break;
            }
    }
    if (close < 0 || !flat_tail(self, close + 1, end)) {
        Py_CLEAR(self->marker);
        return 0;
    }
    self->repeat_at = at;
    self->repeat_n = close + 1 - at;
    return 0;
}

/* counted(request_id): the reply of the last line yielded was counted; as claude_scan._repeat_of */
static PyObject *Lines_counted(Lines *self, PyObject *request_id) {
    Py_ssize_t n = 0;
    const char *id = NULL;
    if (PyUnicode_Check(request_id) && PyUnicode_GET_LENGTH(request_id) > 0) {
        id = PyUnicode_AsUTF8AndSize(request_id, &n);
        if (id == NULL) { /* a lone surrogate (from an escape): no line's bytes name it so */
            PyErr_Clear();
            n = 0;
        }
    }
    if (set_repeat(self, id, n) < 0) return NULL;
    Py_RETURN_NONE;
}

/* -- counting the common line here ----------------------------------------------------------------------------
 *
 * `replies(seen, subagent, base, out, want_session, fold)` reads lines as the iterator does and counts a line of
 * the common shape itself, as claude_scan's loop would (decode.from_fields, claude_scan._count, ReplyCounter.count,
 * logs.max_wins): a reply or a correction is appended to `out` as a FoundReply, the max-wins state in `seen`
 * (key -> [the 6 largest figures, corrections made]) is the Python loop's, and a counted reply's next content
 * blocks are skipped. With `fold` (a dict: request key -> its row's index in `out`), a correction is added into
 * its request's row instead, as claude_files.folded does. It returns the first line it leaves to Python, as the
 * iterator yields it (Python counts it and calls again), the file's (session, cwd, version) from the first line
 * naming a session while `want_session`, or None at the end. Left to Python: a line not typed here, any line
 * from_fields would answer UNUSUAL for or count as suspicious (a figure at the bound), a name that may be too
 * long, a timestamp not in Claude Code's own form, a max-wins state of another shape, and, when folding, a key
 * holding a `+`. `first_at` and `last_at` keep the span of the replies counted here, folded ones included. */

static struct {
    PyObject *reply_type; /* claude_scan.FoundReply */
    PyObject *details_of; /* decode.details_of */
    PyObject *models;     /* decode.MODEL_NAMES: one str object per model name */
    PyObject *synthetic;  /* decode.SYNTHETIC_MODEL, as bytes */
    long long max_tokens; /* sanitize.MAX_TOKENS */
    Py_ssize_t max_name;  /* sanitize.MAX_NAME */
} cfg;

static PyObject *configure(PyObject *module, PyObject *args) {
    PyObject *reply_type, *details_of, *models, *synthetic;
    long long max_tokens;
    Py_ssize_t max_name;
    if (!PyArg_ParseTuple(args, "O!OO!SLn", &PyType_Type, &reply_type, &details_of, &PyDict_Type, &models,
                          &synthetic, &max_tokens, &max_name))
        return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)reply_type, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "the reply type must be a tuple subclass");
        return NULL;
    }
    Py_XSETREF(cfg.reply_type, Py_NewRef(reply_type));
    Py_XSETREF(cfg.details_of, Py_NewRef(details_of));
    Py_XSETREF(cfg.models, Py_NewRef(models));
    Py_XSETREF(cfg.synthetic, Py_NewRef(synthetic));
    cfg.max_tokens = max_tokens;
    cfg.max_name = max_name;
    Py_RETURN_NONE;
}

static int is_str(const Value *v) { return v->kind == V_STR; }
static int nonempty(const Value *v) { return v->kind == V_STR && v->n > 0; }
static int same_text(const Value *a, const Value *b) { return a->n == b->n && memcmp(a->s, b->s, a->n) == 0; }

/* a key's seen figures as max_wins keeps them; 0 when they are not a list of 7 ints this reader can hold */
static int old_figures(PyObject *old, long long out[N_COUNTS + 1]) {
    if (!PyList_CheckExact(old) || PyList_GET_SIZE(old) != N_COUNTS + 1) return 0;
    for (int i = 0; i <= N_COUNTS; i++) {
        PyObject *item = PyList_GET_ITEM(old, i);
        if (!PyLong_CheckExact(item)) return 0;
        int overflow;
        out[i] = PyLong_AsLongLongAndOverflow(item, &overflow);
        if (overflow || (out[i] == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            return 0;
        }
        if (out[i] < 0 || out[i] > (1LL << 60)) return 0;
    }
    return 1;
}

/* the values as a list (`as_list`) or a tuple of ints */
static PyObject *ints(const long long *values, int n, int as_list) {
    PyObject *out = as_list ? PyList_New(n) : PyTuple_New(n);
    if (out == NULL) return NULL;
    for (int i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLongLong(values[i]);
        if (v == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        if (as_list)
            PyList_SET_ITEM(out, i, v);
        else
            PyTuple_SET_ITEM(out, i, v);
    }
    return out;
}

/* FoundReply(key, occurred_utc, model, figures, offset, step, details), made as tuple.__new__ makes a tuple
 * subclass's instance; steals key, at and figures */
static PyObject *found_reply(PyObject *key, PyObject *at, PyObject *model, PyObject *figures, Py_ssize_t offset,
                             int step, PyObject *details) {
    PyObject *items[7] = {key, at, Py_NewRef(model), figures, PyLong_FromSsize_t(offset),
                          Py_NewRef(step ? Py_True : Py_False), Py_NewRef(details)};
    PyTypeObject *type = (PyTypeObject *)cfg.reply_type;
    PyObject *reply = items[4] == NULL ? NULL : type->tp_alloc(type, 7);
    if (reply == NULL) {
        for (int i = 0; i < 7; i++) Py_XDECREF(items[i]);
        return NULL;
    }
    for (int i = 0; i < 7; i++) PyTuple_SET_ITEM(reply, i, items[i]);
    return reply;
}

/* prefix + the string's text (valid UTF-8: read_line checked it) */
static PyObject *prefixed(const char *prefix, const Value *v) {
    Py_ssize_t p = (Py_ssize_t)strlen(prefix), n = p + v->n;
    char small[256], *buf = n <= (Py_ssize_t)sizeof(small) ? small : PyMem_Malloc(n);
    if (buf == NULL) return PyErr_NoMemory();
    memcpy(buf, prefix, p);
    memcpy(buf + p, v->s, v->n);
    PyObject *out = PyUnicode_DecodeUTF8(buf, n, "strict");
    if (buf != small) PyMem_Free(buf);
    return out;
}

/* the reply's time joins the span of the replies counted here (ISO text: the string order is the time order) */
static int note_time(Lines *self, PyObject *at) {
    if (at == Py_None) return 0;
    if (self->first_at == NULL || PyUnicode_Compare(at, self->first_at) < 0) Py_XSETREF(self->first_at, Py_NewRef(at));
    if (self->last_at == NULL || PyUnicode_Compare(at, self->last_at) > 0) Py_XSETREF(self->last_at, Py_NewRef(at));
    return PyErr_Occurred() ? -1 : 0;
}

/* claude_files.folded for one correction of request `key`: its figures added into the request's row out[fold[key]]
 * (the row's other fields stand); 1 when folded, 0 when the request's row is not in `out`, -1 on an error */
static int fold_into(PyObject *out, PyObject *fold, PyObject *key, PyObject *delta) {
    PyObject *index = PyDict_GetItemWithError(fold, key); /* borrowed */
    if (index == NULL) return PyErr_Occurred() ? -1 : 0;
    Py_ssize_t i = PyLong_AsSsize_t(index);
    if (i == -1 && PyErr_Occurred()) return -1;
    if (i < 0 || i >= PyList_GET_SIZE(out)) return 0;
    PyObject *row = PyList_GET_ITEM(out, i); /* borrowed */
    if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 7) return 0;
    PyObject *figures = PyTuple_GET_ITEM(row, 3);
    if (!PyTuple_Check(figures) || PyTuple_GET_SIZE(figures) != N_COUNTS) return 0;
    long long sum[N_COUNTS];
    for (int k = 0; k < N_COUNTS; k++) {
        PyObject *a = PyTuple_GET_ITEM(figures, k), *b = PyTuple_GET_ITEM(delta, k);
        int overflow_a, overflow_b;
        long long x = PyLong_AsLongLongAndOverflow(a, &overflow_a), y = PyLong_AsLongLongAndOverflow(b, &overflow_b);
        if (PyErr_Occurred()) return -1;
        if (overflow_a || overflow_b || x < 0 || y < 0 || x > (1LL << 60) || y > (1LL << 60)) return 0;
        sum[k] = x + y;
    }
    PyObject *summed = ints(sum, N_COUNTS, 0);
    if (summed == NULL) return -1;
    PyObject *items[7];
    for (int k = 0; k < 7; k++) items[k] = k == 3 ? summed : Py_NewRef(PyTuple_GET_ITEM(row, k));
    PyTypeObject *type = Py_TYPE(row);
    PyObject *folded = type->tp_alloc(type, 7);
    if (folded == NULL) {
        for (int k = 0; k < 7; k++) Py_DECREF(items[k]);
        return -1;
    }
    for (int k = 0; k < 7; k++) PyTuple_SET_ITEM(folded, k, items[k]);
    return PyList_SetItem(out, i, folded) < 0 ? -1 : 1; /* steals `folded` */
}

/* 1: the line is counted here (a reply appended to `out`, or none), 0: Python must count it, -1: an error */
static int count_line(Lines *self, Fields *f, Py_ssize_t start, PyObject *seen, int subagent, Py_ssize_t base,
                      PyObject *out, PyObject *fold) {
    Value *v = f->v;
    /* decode.from_fields, in its order */
    if (!(is_str(&v[F_TYPE]) && v[F_TYPE].n == 9 && memcmp(v[F_TYPE].s, "assistant", 9) == 0)) return 1;
    if (v[F_API_ERROR].kind == V_TRUE) return 1;
    if (is_str(&v[F_COPIED_FROM]) && !(is_str(&v[F_SESSION]) && same_text(&v[F_COPIED_FROM], &v[F_SESSION])))
        return 1; /* a fork's copy of its parent's reply */
    if (!f->message || !nonempty(&v[F_MESSAGE_ID]) || !f->usage) return 0;
    const Value *served = &v[F_MODEL];
    if (is_str(served) && served->n == PyBytes_GET_SIZE(cfg.synthetic) &&
        memcmp(served->s, PyBytes_AS_STRING(cfg.synthetic), served->n) == 0)
        return 1;
    long long figures[N_COUNTS];
    for (int i = 0; i < N_COUNTS; i++) {
        if (f->counts[i] >= cfg.max_tokens) return 0; /* out of bounds, or suspicious: Python says which */
        figures[i] = f->counts[i];
    }
    if (figures[K_1H] > figures[K_WRITE]) figures[K_1H] = figures[K_WRITE];
    const Value *model = nonempty(&v[F_REQUESTED_MODEL]) ? &v[F_REQUESTED_MODEL] : served;
    if ((is_str(model) && model->n > cfg.max_name) || (is_str(served) && served->n > cfg.max_name)) return 0;
    const Value *stamp = &v[F_TIMESTAMP];
    if (is_str(stamp)) { /* claude_scan._count's common case; any other text goes through canonical_utc */
        if (stamp->n != 24 || stamp->s[23] != 'Z' || stamp->s[19] != '.' || stamp->s[10] != 'T') return 0;
        for (int i = 0; i < 24; i++)
            if ((unsigned char)stamp->s[i] >= 0x80) return 0;
    }
    const Value *request = &v[F_REQUEST];
    PyObject *key = NULL, *model_obj = NULL, *served_obj = NULL, *geo = NULL, *speed = NULL, *details = NULL,
             *at = NULL, *reply_key = NULL, *delta_obj = NULL;
    long long old[N_COUNTS + 1];
    int step, result = -1;
    /* the reply's key: claude:<requestId>, else claude:msg:<message.id> */
    key = nonempty(request) ? prefixed("claude:", request) : prefixed("claude:msg:", &v[F_MESSAGE_ID]);
    if (key == NULL) goto done;
    if (fold != NULL && PyUnicode_FindChar(key, '+', 0, PyUnicode_GET_LENGTH(key), 1) != -1) {
        result = 0; /* claude_files.folded would read it as a correction: Python folds it */
        goto done;
    }
    PyObject *seen_figures = PyDict_GetItemWithError(seen, key); /* borrowed */
    if (seen_figures == NULL && PyErr_Occurred()) goto done;
    if (seen_figures != NULL) {
        if (!old_figures(seen_figures, old)) {
            result = 0;
            goto done;
        }
        int same = 1;
        for (int i = 0; i < N_COUNTS; i++) same &= old[i] == figures[i];
        if (same) { /* the next content block of a reply already counted */
            result = 1;
            goto done;
        }
    }
    /* the model and details, as from_fields gives them */
    model_obj = text(self, model == served ? F_MODEL : F_REQUESTED_MODEL, model);
    if (model_obj == NULL) goto done;
    if (model_obj != Py_None) {
        PyObject *interned = PyDict_SetDefault(cfg.models, model_obj, model_obj); /* borrowed */
        if (interned == NULL) goto done;
        Py_SETREF(model_obj, Py_NewRef(interned));
    }
    int differs = nonempty(served) && model != served && !same_text(model, served);
    served_obj = differs ? text(self, F_MODEL, served) : Py_NewRef(Py_None);
    geo = nonempty(&v[F_GEO]) ? text(self, F_GEO, &v[F_GEO]) : Py_NewRef(Py_None);
    speed = nonempty(&v[F_SPEED]) ? text(self, F_SPEED, &v[F_SPEED]) : Py_NewRef(Py_None);
    if (served_obj == NULL || geo == NULL || speed == NULL) goto done;
    details = PyObject_CallFunctionObjArgs(cfg.details_of, geo, speed,
                                           v[F_ABORTED].kind == V_TRUE ? Py_True : Py_False, served_obj, NULL);
    if (details == NULL) goto done;
    if (is_str(stamp)) {
        char canonical[27];
        memcpy(canonical, stamp->s, 23);
        memcpy(canonical + 23, "000Z", 4);
        at = PyUnicode_FromStringAndSize(canonical, 27);
    } else {
        at = Py_NewRef(Py_None);
    }
    if (at == NULL) goto done;
    /* ReplyCounter.count and logs.max_wins */
    if (seen_figures == NULL) {
        long long first[N_COUNTS + 1];
        memcpy(first, figures, sizeof(figures));
        first[N_COUNTS] = 0;
        PyObject *kept = ints(first, N_COUNTS + 1, 1);
        if (kept == NULL) goto done;
        int failed = PyDict_SetItem(seen, key, kept);
        Py_DECREF(kept);
        if (failed) goto done;
        delta_obj = ints(figures, N_COUNTS, 0);
        reply_key = Py_NewRef(key);
        step = !subagent;
    } else {
        long long delta[N_COUNTS];
        int any = 0;
        for (int i = 0; i < N_COUNTS; i++) delta[i] = figures[i] > old[i] ? figures[i] - old[i] : 0;
        if (delta[K_1H] > delta[K_WRITE]) delta[K_1H] = delta[K_WRITE];
        for (int i = 0; i < N_COUNTS; i++) any |= delta[i] != 0;
        if (!any) { /* adds nothing */
            result = 1;
            goto done;
        }
        for (int i = 0; i < N_COUNTS; i++) {
            if (figures[i] > old[i]) {
                PyObject *value = PyLong_FromLongLong(figures[i]);
                if (value == NULL || PyList_SetItem(seen_figures, i, value) < 0) goto done;
            }
        }
        PyObject *corrections = PyLong_FromLongLong(old[N_COUNTS] + 1);
        if (corrections == NULL || PyList_SetItem(seen_figures, N_COUNTS, corrections) < 0) goto done;
        delta_obj = ints(delta, N_COUNTS, 0);
        reply_key = PyUnicode_FromFormat("%U+%lld", key, old[N_COUNTS] + 1);
        step = 0;
    }
    if (delta_obj == NULL || reply_key == NULL) goto done;
    if (note_time(self, at) < 0) goto done;
    if (fold != NULL && seen_figures != NULL) { /* a correction: into its request's row, when that is in `out` */
        int folded = fold_into(out, fold, key, delta_obj);
        if (folded < 0) goto done;
        if (folded) {
            result = set_repeat(self, request->s, nonempty(request) ? request->n : 0) < 0 ? -1 : 1;
            goto done;
        }
    }
    if (fold != NULL && seen_figures == NULL) { /* a request's row: where its corrections fold */
        PyObject *index = PyLong_FromSsize_t(PyList_GET_SIZE(out));
        int failed = index == NULL || PyDict_SetItem(fold, key, index) < 0;
        Py_XDECREF(index);
        if (failed) goto done;
    }
    PyObject *reply = found_reply(reply_key, at, model_obj, delta_obj, base + start, step, details);
    reply_key = at = delta_obj = NULL; /* stolen */
    if (reply == NULL) goto done;
    int failed = PyList_Append(out, reply);
    Py_DECREF(reply);
    if (failed || set_repeat(self, request->s, nonempty(request) ? request->n : 0) < 0) goto done;
    result = 1;
done:
    Py_XDECREF(key);
    Py_XDECREF(model_obj);
    Py_XDECREF(served_obj);
    Py_XDECREF(geo);
    Py_XDECREF(speed);
    Py_XDECREF(details);
    Py_XDECREF(at);
    Py_XDECREF(reply_key);
    Py_XDECREF(delta_obj);
    return result;
}

static PyObject *Lines_replies(Lines *self, PyObject *args) {
    PyObject *seen, *out, *fold;
    int subagent, want_session;
    Py_ssize_t base;
    if (!PyArg_ParseTuple(args, "O!pnO!pO", &PyDict_Type, &seen, &subagent, &base, &PyList_Type, &out,
                          &want_session, &fold))
        return NULL;
    if (fold != Py_None && !PyDict_Check(fold)) {
        PyErr_SetString(PyExc_TypeError, "fold must be a dict or None");
        return NULL;
    }
    if (cfg.reply_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "call configure() first");
        return NULL;
    }
    Py_ssize_t start, end;
    int typed;
    Fields f;
    while (next_line(self, &start, &end, &f, &typed)) {
        int done = typed ? count_line(self, &f, start, seen, subagent, base, out, fold == Py_None ? NULL : fold) : 0;
        if (done < 0) return NULL;
        if (!done) return line_tuple(self, start, end, &f, typed);
        if (want_session && nonempty(&f.v[F_SESSION])) { /* the file's facts, from the first line naming them */
            PyObject *session = text(self, F_SESSION, &f.v[F_SESSION]);
            PyObject *cwd = session ? text(self, F_CWD, &f.v[F_CWD]) : NULL;
            PyObject *version = cwd ? text(self, F_VERSION, &f.v[F_VERSION]) : NULL;
            if (version == NULL) {
                Py_XDECREF(session);
                Py_XDECREF(cwd);
                return NULL;
            }
            return Py_BuildValue("(NNN)", session, cwd, version);
        }
    }
    Py_RETURN_NONE;
}

static int Lines_init(Lines *self, PyObject *args, PyObject *kwds) {
    static char *names[] = {"data", "size", NULL};
    Py_buffer buf;
    Py_ssize_t size = -1;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*|n", names, &buf, &size)) return -1;
    if (self->buf.obj != NULL) PyBuffer_Release(&self->buf);
    self->buf = buf;
    self->size = size < 0 || size > buf.len ? buf.len : size;
    self->pos = self->at = self->end = self->repeat_at = self->repeat_n = 0;
    Py_CLEAR(self->marker);
    Py_CLEAR(self->first_at);
    Py_CLEAR(self->last_at);
    return 0;
}

static void Lines_dealloc(Lines *self) {
    if (self->buf.obj != NULL) PyBuffer_Release(&self->buf);
    Py_XDECREF(self->marker);
    Py_XDECREF(self->first_at);
    Py_XDECREF(self->last_at);
    for (int i = 0; i < N_FIELDS; i++) Py_XDECREF(self->cache[i].obj);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Lines_iter(PyObject *self) { return Py_NewRef(self); }

static PyMethodDef Lines_methods[] = {
    {"counted", (PyCFunction)Lines_counted, METH_O,
     "counted(request_id): the last line's reply was counted; skip the lines that repeat it"},
    {"replies", (PyCFunction)Lines_replies, METH_VARARGS,
     "replies(seen, subagent, base, out, want_session, fold): count the common lines into `out` (corrections"
     " folded into their request's row when `fold` is a dict); the first line left to Python, as the iterator"
     " yields it, the file's (session, cwd, version) once while `want_session`, or None at the end"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Lines_members[] = {
    {"first_at", T_OBJECT, offsetof(Lines, first_at), READONLY, "the earliest time of a reply `replies` counted"},
    {"last_at", T_OBJECT, offsetof(Lines, last_at), READONLY, "the latest time of a reply `replies` counted"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject LinesType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "capguard.importers._claude_scan.Lines",
    .tp_basicsize = sizeof(Lines),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Lines(data, size=-1): the lines of data[:size] that mention \"usage\", as (start, at, end, fields)",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Lines_init,
    .tp_dealloc = (destructor)Lines_dealloc,
    .tp_iter = Lines_iter,
    .tp_iternext = (iternextfunc)Lines_next,
    .tp_methods = Lines_methods,
    .tp_members = Lines_members,
};

static PyObject *read_fields(PyObject *module, PyObject *arg) {
    /* the fields of one line (bytes), or None: for the tests */
    Py_buffer buf;
    if (PyObject_GetBuffer(arg, &buf, PyBUF_SIMPLE) < 0) return NULL;
    Lines *lines = PyObject_New(Lines, &LinesType);
    if (lines == NULL) {
        PyBuffer_Release(&buf);
        return NULL;
    }
    memset((char *)lines + sizeof(PyObject), 0, sizeof(Lines) - sizeof(PyObject));
    lines->buf = buf;
    lines->size = buf.len;
    Fields f;
    PyObject *result;
    if (read_line(buf.buf, (const unsigned char *)buf.buf + buf.len, &f) < 0)
        result = Py_NewRef(Py_None);
    else
        result = fields_tuple(lines, &f);
    Py_DECREF(lines);
    return result;
}

/* -- listing transcripts ------------------------------------------------------------------------------------ */

#if defined(__unix__) || defined(__APPLE__)
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#define CAN_WALK 1
#ifdef __APPLE__
#define MTIME(st) ((st).st_mtimespec)
#else
#define MTIME(st) ((st).st_mtim)
#endif
#define MAX_WALK_DEPTH 256

/* A found transcript, before it is a Python object: the walk runs without the GIL, on a few threads (a listing is
 * a system call per file and several per folder: the kernel's work, which two cores do in about half the time). */
typedef struct {
    char *path; /* bytes in the file system's encoding, NUL-terminated */
    long long size, ns;
    unsigned long long ino;
    double mtime;
} Found;

typedef struct {
    Found *items;
    size_t n, cap;
    int failed; /* out of memory */
} Bag;

static void bag_add(Bag *bag, const char *path, size_t len, const struct stat *st) {
    if (bag->failed) return;
    if (bag->n == bag->cap) {
        size_t cap = bag->cap ? bag->cap * 2 : 256;
        Found *items = realloc(bag->items, cap * sizeof(Found));
        if (items == NULL) {
            bag->failed = 1;
            return;
        }
        bag->items = items;
        bag->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (copy == NULL) {
        bag->failed = 1;
        return;
    }
    memcpy(copy, path, len);
    copy[len] = 0;
    Found *f = &bag->items[bag->n++];
    f->path = copy;
    f->size = (long long)st->st_size;
    f->ns = (long long)MTIME(*st).tv_sec * 1000000000LL + MTIME(*st).tv_nsec;
    f->ino = (unsigned long long)st->st_ino;
    f->mtime = (double)MTIME(*st).tv_sec + MTIME(*st).tv_nsec * 1e-9;
}

static void bag_free(Bag *bag) {
    for (size_t i = 0; i < bag->n; i++) free(bag->items[i].path);
    free(bag->items);
    bag->items = NULL;
    bag->n = bag->cap = 0;
}

/* `folder`'s entry `name`: 1 a folder to enter (not through a symlink), 0 not, -1 cannot tell (skipped) */
static int entry_is_dir(int dirfd, const struct dirent *entry) {
    if (entry->d_type == DT_DIR) return 1;
    if (entry->d_type != DT_UNKNOWN) return 0;
    struct stat lst;
    if (fstatat(dirfd, entry->d_name, &lst, AT_SYMLINK_NOFOLLOW) != 0) return -1;
    return S_ISDIR(lst.st_mode);
}

static int is_jsonl(const char *name, size_t n) { return n >= 6 && memcmp(name + n - 6, ".jsonl", 6) == 0; }

/* claude._walk, in bytes and without Python: below the directory `dirfd` (path prefix[:len]), every `*.jsonl`
 * that is a regular file (a symlink followed, as reading it will) into `bag`; folders entered but not through a
 * symlink; an entry that cannot be read is skipped. Closes dirfd. */
static void walk(int dirfd, const char *prefix, size_t len, Bag *bag, int depth) {
    DIR *dir = fdopendir(dirfd);
    if (dir == NULL) {
        close(dirfd);
        return;
    }
    int sep = !(len > 0 && prefix[len - 1] == '/');
    size_t cap = len + 256;
    char *path = malloc(cap);
    if (path == NULL) {
        bag->failed = 1;
        closedir(dir);
        return;
    }
    memcpy(path, prefix, len);
    if (sep) path[len] = '/';
    size_t base = len + sep;
    struct dirent *entry;
    while (!bag->failed && (entry = readdir(dir)) != NULL) {
        const char *name = entry->d_name;
        if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) continue;
        size_t n = strlen(name);
        int dir_entry = entry_is_dir(dirfd, entry);
        if (dir_entry < 0 || (!dir_entry && !is_jsonl(name, n))) continue;
        if (base + n + 1 > cap) {
            char *grown = realloc(path, base + n + 256);
            if (grown == NULL) {
                bag->failed = 1;
                break;
            }
            path = grown;
            cap = base + n + 256;
        }
        memcpy(path + base, name, n);
        if (dir_entry) {
            int fd = depth < MAX_WALK_DEPTH ? openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
            if (fd >= 0) walk(fd, path, base + n, bag, depth + 1);
        } else {
            struct stat st;
            if (fstatat(dirfd, name, &st, 0) == 0 && S_ISREG(st.st_mode)) bag_add(bag, path, base + n, &st);
        }
    }
    free(path);
    closedir(dir);
}

#include <pthread.h>
#define WALKERS 2

typedef struct {
    int rootfd;
    const char *prefix;
    size_t len;
    char **folders; /* the root's sub-folders, each walked by one thread */
    size_t count;
    size_t next;
    pthread_mutex_t lock;
    Bag bags[WALKERS];
} Walk;

typedef struct {
    Walk *walk;
    Bag *bag;
} Walker;

static void *walker(void *arg) {
    Walker *w = arg;
    Walk *all = w->walk;
    size_t cap = all->len + 256;
    char *path = malloc(cap);
    if (path == NULL) {
        w->bag->failed = 1;
        return NULL;
    }
    memcpy(path, all->prefix, all->len);
    int sep = !(all->len > 0 && all->prefix[all->len - 1] == '/');
    if (sep) path[all->len] = '/';
    size_t base = all->len + sep;
    for (;;) {
        pthread_mutex_lock(&all->lock);
        size_t i = all->next++;
        pthread_mutex_unlock(&all->lock);
        if (i >= all->count || w->bag->failed) break;
        const char *name = all->folders[i];
        size_t n = strlen(name);
        if (base + n + 1 > cap) {
            char *grown = realloc(path, base + n + 256);
            if (grown == NULL) {
                w->bag->failed = 1;
                break;
            }
            path = grown;
            cap = base + n + 256;
        }
        memcpy(path + base, name, n);
        int fd = openat(all->rootfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (fd >= 0) walk(fd, path, base + n, w->bag, 1);
    }
    free(path);
    return NULL;
}

/* the root's own transcripts into bags[0], its folders' on WALKERS threads; 0, or -1 when memory ran out */
static int walk_root(int rootfd, const char *prefix, size_t len, Bag bags[WALKERS]) {
    Walk all = {.rootfd = rootfd, .prefix = prefix, .len = len};
    size_t cap = 0;
    int failed = 0;
    DIR *dir = fdopendir(dup(rootfd));
    if (dir == NULL) return 0;
    int sep = !(len > 0 && prefix[len - 1] == '/');
    struct dirent *entry;
    while (!failed && (entry = readdir(dir)) != NULL) {
        const char *name = entry->d_name;
        if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) continue;
        size_t n = strlen(name);
        int dir_entry = entry_is_dir(rootfd, entry);
        if (dir_entry < 0 || (!dir_entry && !is_jsonl(name, n))) continue;
        if (dir_entry) {
            if (all.count == cap) {
                cap = cap ? cap * 2 : 64;
                char **grown = realloc(all.folders, cap * sizeof(char *));
                if (grown == NULL) {
                    failed = 1;
                    break;
                }
                all.folders = grown;
            }
            all.folders[all.count] = strdup(name);
            if (all.folders[all.count] == NULL) failed = 1;
            else all.count++;
        } else {
            struct stat st;
            char *path = malloc(len + sep + n + 1);
            if (path == NULL) {
                failed = 1;
                break;
            }
            memcpy(path, prefix, len);
            if (sep) path[len] = '/';
            memcpy(path + len + sep, name, n);
            if (fstatat(rootfd, name, &st, 0) == 0 && S_ISREG(st.st_mode)) bag_add(&bags[0], path, len + sep + n, &st);
            free(path);
        }
    }
    closedir(dir);
    if (!failed && all.count) {
        pthread_mutex_init(&all.lock, NULL);
        Walker walkers[WALKERS];
        pthread_t threads[WALKERS];
        int started[WALKERS] = {0};
        for (int t = 0; t < WALKERS; t++) {
            walkers[t] = (Walker){&all, &bags[t]};
            started[t] = t > 0 && pthread_create(&threads[t], NULL, walker, &walkers[t]) == 0;
        }
        walker(&walkers[0]); /* this thread is the first walker; a thread that could not start leaves its share */
        for (int t = 1; t < WALKERS; t++)
            if (started[t]) pthread_join(threads[t], NULL);
        pthread_mutex_destroy(&all.lock);
    }
    for (size_t i = 0; i < all.count; i++) free(all.folders[i]);
    free(all.folders);
    for (int t = 0; t < WALKERS; t++) failed |= bags[t].failed;
    return failed ? -1 : 0;
}

static PyObject *list_jsonl(PyObject *module, PyObject *folder) {
    /* [(path, size, mtime_ns, inode, mtime)] below `folder` (a str), as claude._walk finds them */
    if (!PyUnicode_Check(folder)) {
        PyErr_SetString(PyExc_TypeError, "folder must be a str");
        return NULL;
    }
    PyObject *encoded = PyUnicode_EncodeFSDefault(folder);
    if (encoded == NULL) return NULL;
    Bag bags[WALKERS];
    memset(bags, 0, sizeof(bags));
    int failed = 0;
    const char *prefix = PyBytes_AS_STRING(encoded);
    size_t len = (size_t)PyBytes_GET_SIZE(encoded);
    Py_BEGIN_ALLOW_THREADS
    int fd = open(prefix, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        failed = walk_root(fd, prefix, len, bags) < 0;
        close(fd);
    }
    Py_END_ALLOW_THREADS
    Py_DECREF(encoded);
    PyObject *out = failed ? PyErr_NoMemory() : PyList_New(0);
    for (int t = 0; t < WALKERS && out != NULL; t++) {
        for (size_t i = 0; i < bags[t].n; i++) {
            Found *f = &bags[t].items[i];
            PyObject *path = PyUnicode_DecodeFSDefault(f->path);
            PyObject *item = path == NULL ? NULL : Py_BuildValue("(NLLKd)", path, f->size, f->ns, f->ino, f->mtime);
            if (item == NULL || PyList_Append(out, item) < 0) {
                Py_XDECREF(item);
                Py_CLEAR(out);
                break;
            }
            Py_DECREF(item);
        }
    }
    for (int t = 0; t < WALKERS; t++) bag_free(&bags[t]);
    return out;
}
#endif /* CAN_WALK: elsewhere the module has no list_jsonl, and claude.py walks in Python */

static PyMethodDef module_methods[] = {
    {"read_fields", read_fields, METH_O, "read_fields(line): the fields Lines yields for one line, or None"},
#ifdef CAN_WALK
    {"list_jsonl", list_jsonl, METH_O,
     "list_jsonl(folder): [(path, size, mtime_ns, inode, mtime)] of the *.jsonl files below it (claude._walk)"},
#endif
    {"configure", configure, METH_VARARGS,
     "configure(FoundReply, details_of, MODEL_NAMES, SYNTHETIC_MODEL as bytes, MAX_TOKENS, MAX_NAME)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_claude_scan", NULL, -1, module_methods};

PyMODINIT_FUNC PyInit__claude_scan(void) {
    if (PyType_Ready(&LinesType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) return NULL;
    if (PyModule_AddObjectRef(m, "Lines", (PyObject *)&LinesType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
