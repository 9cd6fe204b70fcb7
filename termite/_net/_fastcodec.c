/* termite._net._fastcodec: the common cases of termite/_net/codec.py, in C.
 *
 * _codec.py's docstring specifies the wire format: msgpack, with a tuple as
 * the array [ext 1, *items], a Pid as ext 2, a Tag as ext 3 and a NodeRef as
 * ext 4.  The Python path (msgpack with Python hooks called per tuple and
 * per pid) stays the reference; this module does the same work without the
 * hooks, byte for byte and object for object:
 *
 *   init(Pid, Tag, NodeRef, TUPLE_MARK, node_payloads, nodes, node_payload,
 *        node, ext, ext_untrusted, timestamp)
 *       the objects of _codec.py that both directions need; called once.
 *   encode(obj) -> bytes, or None
 *       what msgpack.Packer(default=_default, strict_types=True,
 *       use_bin_type=True) makes of obj, for exact None, bool, int (64-bit),
 *       float, str, bytes, bytearray, list, dict, tuple, Pid, Tag and
 *       NodeRef.  None means "not mine": anything else anywhere in obj (a
 *       subclass, a set, a big int, a str with lone surrogates, nesting
 *       deeper than ENC_DEPTH), and the caller runs the Python path, which
 *       pickles what needs pickling.
 *   decode(data, trusted, max_decoded=None) -> obj
 *       what msgpack.unpackb(data, ext_hook=..., list_hook=_array,
 *       strict_map_key=False) gives; bad data raises ValueError (or
 *       whatever a Python hook raised), never reads out of bounds.
 *   decode_from(data, offset, limit, max_decoded[, left]) -> (obj, end[, left])
 *       one object of a batch, as msgpack.Unpacker(max_buffer_size=limit)
 *       would read it (trusted); Truncated when the data ends inside it.
 *       `left` is the frame's budget not spent by the objects before (None
 *       for the first), given back for the next.
 *   take_sends(data, here, procs, deliver, Down, limit, full, peer, max_decoded)
 *       -> None, a list, or False
 *       termite/_net/endpoint.py's _Inbox for one frame, the common
 *       part: data decoded as codec.decode_frame does (trusted), then each
 *       message, from the first, that is a plain SEND (the exact tuple
 *       (1, pid, msg)) to a pid whose node is `here` (the very object) and
 *       whose serial names a process in the dict `procs` whose `order` is
 *       None, with a msg that is not a `Down`, is handed to deliver(proc,
 *       msg), and full(proc, peer) is called if proc.mailbox then holds
 *       more than `limit`.  None: every message was delivered so; a list:
 *       the messages from the first other one on, in order, for the Python
 *       path; False: nothing was done (data not bytes, or not a frame
 *       decode_frame reads: the Python path reads it again and says why).
 *       A frame past its budget raises OverBudget, nothing delivered, with
 *       `decoded` the messages of the batch before (decode_frame's
 *       MalformedMessage.decoded).  What deliver or full raise propagates.
 *
 *   Inbox(here, procs, moved, deliver, Down, limit, full, max_decoded, got,
 *         apply) -> inbox
 *       termite/_net/endpoint.py's _Inbox, step for step: inbox(peer,
 *       frames), for each frame `data` in turn: got(peer, len(data)); then,
 *       if the dict `moved` is empty, take_sends(data, inbox.here, procs,
 *       deliver, Down, limit, full, peer, max_decoded), and taken is what it
 *       returned or the OverBudget it raised; else taken is False.  Unless
 *       taken is None, apply(peer, data, taken).  inbox.here is settable.
 *       What got, take_sends (but OverBudget) and apply raise propagates,
 *       and the frames after are not read.
 *
 *   Counter(flows, cls, count, mark, room, slow) -> counter
 *       termite/_net/flow.py's FlowControl.wrote and .got, the common case.
 *       counter(node, size): if the dict `flows` holds an object of class
 *       `cls` at id(node), whose `count` and `mark` (two __slots__ of `cls`,
 *       read and written at their offsets) are ints, and `size` an int, with
 *       count + size - mark < room, then that object's `count` becomes
 *       count + size, and None.  In every other case (no such object,
 *       past the room, numbers C's long long cannot hold): slow(node,
 *       size)'s result, nothing done before.
 *
 *   Outbox(kernel, pids, peers, numbered, kind, send_frame, wrote, slow_send,
 *          batch, flush_batches, out, batch_bytes) -> outbox
 *       termite/_net/endpoint.py's _Outbox, step for step: outbox.send(pid,
 *       msg), outbox.post(node, data), outbox.flush(), outbox.one (the frame
 *       held, or None) and outbox.numbered (settable) as that class's
 *       docstring says.  send encodes as encode_message does.  One step
 *       less than the Python: post remembers the last (sent_to set, node)
 *       it noted, and does not look that node up in that same set again
 *       (sent_to sets only grow; a migration replaces them by None).
 *
 * The budget bounds what decoding may allocate: each object is charged an
 * estimate of its CPython size (the COST_ table below; codec.py's _Budget
 * charges the msgpack path the same), and OverBudget is raised as soon as
 * the charges pass the budget: EXPANSION bytes per byte of data plus
 * EXPANSION_FLOOR, at most max_decoded (None: no budget).  A container is
 * charged before it is allocated, so a header claiming 60 million items
 * costs nothing but the refusal.
 *
 * Ext codes 1-4 are decoded here; every other code goes to the Python hook
 * (_ext or _ext_untrusted), and ext -1 to msgpack's Timestamp, as msgpack
 * does before any hook.  Limits are msgpack's: at most DEC_DEPTH nested
 * containers, an array of at most `limit` items and a map of `limit / 2`.
 *
 * Only the public C API, so it builds on any CPython >= 3.11.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* msgpack's Packer stops at 1024 levels since 1.1 and at 511 before: this
 * gives up at the lower one, and the Python path does what the installed
 * msgpack does with deeper messages. */
#define ENC_DEPTH 511
/* msgpack's unpacker holds at most 1024 open containers (its stack). */
#define DEC_DEPTH 1024
/* msgpack refuses lengths over 2**32 - 1 (its ITEM_LIMIT). */
#define ITEM_LIMIT 0xffffffffULL

/* What a decoded object is charged: about its CPython 3.11 size in bytes.
 * Objects CPython shares (small ints, 0- and 1-byte str and bytes, None,
 * True, False, the nodes of the codec's cache) cost nothing; the length of a
 * str or bytes is not charged (it is never more than its bytes on the wire).
 * Keep in step with codec.py's COST_* (tests/test_codec_limits.py checks). */
#define COST_ARRAY 56     /* a list or a tuple, */
#define COST_SLOT 8       /* and per item declared */
#define COST_MAP 64       /* a dict, */
#define COST_MAP_TABLE 112 /* its first key table, with its first entry, */
#define COST_ENTRY 48     /* and per entry */
#define COST_INT 32       /* outside -5..256 */
#define COST_FLOAT 24
#define COST_STR 56       /* of 2 or more bytes of UTF-8 */
#define COST_BYTES 40     /* of 2 or more bytes */
#define COST_PID 88       /* the Pid and its serial */
#define COST_TAG 120      /* the Tag and its two ints */
#define EXPANSION 32
#define EXPANSION_FLOOR (1 << 20)

#define EXT_TUPLE 1
#define EXT_PID 2
#define EXT_TAG 3
#define EXT_NODE 4
#define EXT_TIMESTAMP (-1)

/* -- what init() gets ---------------------------------------------------- */

static PyTypeObject *Pid_type, *Tag_type, *NodeRef_type;
static PyObject *tuple_mark;
static PyObject *node_payloads; /* dict: NodeRef -> bytes (msgpack [host, port, incarnation]) */
static PyObject *nodes;         /* dict: bytes -> NodeRef */
static PyObject *node_payload_fn, *node_fn, *ext_hook, *ext_untrusted_hook, *timestamp_fn;
/* Where Pid's slots are, read and written at their offsets without an attribute
 * lookup; -1 if Pid is not a plain __slots__ class any more. */
static Py_ssize_t pid_node = -1, pid_serial = -1, pid_proc = -1;
static int pid_fast; /* Pid() == object.__new__(Pid) plus its three slots set */

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))
static int tag_fast; /* Tag() == tuple(), in a Tag */
static PyObject *empty_tuple;
static PyObject *Truncated; /* ValueError: the data ends inside an object */
static PyObject *OverBudget; /* ValueError: what is decoded would pass the budget */

static int
ready(void)
{
    if (Pid_type != NULL) {
        return 1;
    }
    PyErr_SetString(PyExc_RuntimeError, "termite._net._fastcodec.init() was not called");
    return 0;
}

/* -- encode -------------------------------------------------------------- */

typedef struct {
    unsigned char *buf;
    Py_ssize_t len, cap;
    unsigned char small[512]; /* most messages fit: no malloc */
} Enc;

static int
grow(Enc *e, Py_ssize_t more)
{
    if (more > PY_SSIZE_T_MAX / 2 - e->len) {
        return -1;
    }
    Py_ssize_t cap = e->cap * 2;
    if (cap < e->len + more) {
        cap = e->len + more;
    }
    unsigned char *b;
    if (e->buf == e->small) {
        b = PyMem_Malloc(cap);
        if (b != NULL) {
            memcpy(b, e->small, e->len);
        }
    }
    else {
        b = PyMem_Realloc(e->buf, cap);
    }
    if (b == NULL) {
        return -1; /* the Python path will say MemoryError if it is one */
    }
    e->buf = b;
    e->cap = cap;
    return 0;
}

static inline int
put(Enc *e, const void *data, Py_ssize_t n)
{
    if (e->cap - e->len < n && grow(e, n) < 0) {
        return -1;
    }
    memcpy(e->buf + e->len, data, n);
    e->len += n;
    return 0;
}

static inline int
put1(Enc *e, unsigned char c)
{
    return put(e, &c, 1);
}

/* A type byte, then the low `n` bytes of v, big-endian. */
static inline int
put_be(Enc *e, unsigned char first, uint64_t v, int n)
{
    unsigned char b[9];
    b[0] = first;
    for (int i = n; i >= 1; i--) {
        b[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
    return put(e, b, n + 1);
}

static inline void
store_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)(v & 0xff);
        v >>= 8;
    }
}

/* The choices of msgpack-c's pack_template.h (msgpack_pack_real_uint64 and
 * _int64): the shortest form, unsigned forms for values >= 0. */
static int
put_uint(Enc *e, uint64_t v)
{
    if (v < 0x80) {
        return put1(e, (unsigned char)v);
    }
    if (v < 0x100) {
        return put_be(e, 0xcc, v, 1);
    }
    if (v < 0x10000) {
        return put_be(e, 0xcd, v, 2);
    }
    if (v < 0x100000000ULL) {
        return put_be(e, 0xce, v, 4);
    }
    return put_be(e, 0xcf, v, 8);
}

static int
put_negative(Enc *e, int64_t v)
{
    if (v >= -32) {
        return put1(e, (unsigned char)(v & 0xff));
    }
    if (v >= -128) {
        return put_be(e, 0xd0, (uint64_t)v, 1);
    }
    if (v >= -32768) {
        return put_be(e, 0xd1, (uint64_t)v, 2);
    }
    if (v >= -2147483648LL) {
        return put_be(e, 0xd2, (uint64_t)v, 4);
    }
    return put_be(e, 0xd3, (uint64_t)v, 8);
}

/* A header whose size form depends on n: `fix` (or'ed with n) below
 * `fix_limit`, then 8-bit (if `t8`), 16-bit and 32-bit forms. */
static int
put_size(Enc *e, uint64_t n, int fix, uint64_t fix_limit, int t8, int t16, int t32)
{
    if (n > ITEM_LIMIT) {
        return -1; /* msgpack raises ValueError, and the Python path pickles */
    }
    if (n < fix_limit) {
        return put1(e, (unsigned char)(fix | n));
    }
    if (t8 && n < 0x100) {
        return put_be(e, (unsigned char)t8, n, 1);
    }
    if (n < 0x10000) {
        return put_be(e, (unsigned char)t16, n, 2);
    }
    return put_be(e, (unsigned char)t32, n, 4);
}

#define put_str_head(e, n) put_size(e, n, 0xa0, 32, 0xd9, 0xda, 0xdb)
#define put_bin_head(e, n) put_size(e, n, 0, 0, 0xc4, 0xc5, 0xc6)
#define put_array_head(e, n) put_size(e, n, 0x90, 16, 0, 0xdc, 0xdd)
#define put_map_head(e, n) put_size(e, n, 0x80, 16, 0, 0xde, 0xdf)

/* msgpack_pack_ext: fixext for 1, 2, 4, 8 and 16 bytes, else ext 8/16/32. */
static int
put_ext_head(Enc *e, int code, uint64_t n)
{
    unsigned char b[6];
    int k;
    switch (n) {
    case 1: b[0] = 0xd4; k = 1; break;
    case 2: b[0] = 0xd5; k = 1; break;
    case 4: b[0] = 0xd6; k = 1; break;
    case 8: b[0] = 0xd7; k = 1; break;
    case 16: b[0] = 0xd8; k = 1; break;
    default:
        if (n > ITEM_LIMIT) {
            return -1;
        }
        if (n < 0x100) {
            b[0] = 0xc7;
            b[1] = (unsigned char)n;
            k = 2;
        }
        else if (n < 0x10000) {
            b[0] = 0xc8;
            b[1] = (unsigned char)(n >> 8);
            b[2] = (unsigned char)n;
            k = 3;
        }
        else {
            b[0] = 0xc9;
            b[1] = (unsigned char)(n >> 24);
            b[2] = (unsigned char)(n >> 16);
            b[3] = (unsigned char)(n >> 8);
            b[4] = (unsigned char)n;
            k = 5;
        }
    }
    b[k] = (unsigned char)code;
    return put(e, b, k + 1);
}

static int
put_int(Enc *e, PyObject *o)
{
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (overflow == 0) {
        if (v == -1 && PyErr_Occurred()) {
            return -1;
        }
        return v >= 0 ? put_uint(e, (uint64_t)v) : put_negative(e, v);
    }
    if (overflow < 0) {
        return -1; /* below -2**63: pickled */
    }
    unsigned long long u = PyLong_AsUnsignedLongLong(o);
    if (u == (unsigned long long)-1 && PyErr_Occurred()) {
        return -1; /* 2**64 and beyond: pickled */
    }
    return put_uint(e, u);
}

/* The payload of a node's ext (msgpack [host, port, incarnation]), as
 * _default finds it: the cache, else _node_payload(node), which returns
 * None for a node that goes by pickle.  A new reference, or NULL. */
/* The nodes encoded last and their payloads, found by identity: messages to
 * a peer name the same NodeRef objects again and again, and a lookup in
 * _node_payloads calls NodeRef.__hash__ (Python), and __eq__ for an equal
 * copy of the key. */
#define ENC_NODES 8
static PyObject *enc_nodes[ENC_NODES], *enc_payloads[ENC_NODES];
static unsigned int next_enc_node;

static PyObject *
payload_of(PyObject *node)
{
    for (int i = 0; i < ENC_NODES && enc_nodes[i] != NULL; i++) {
        if (enc_nodes[i] == node) {
            return Py_NewRef(enc_payloads[i]);
        }
    }
    PyObject *data = PyDict_GetItemWithError(node_payloads, node); /* may run NodeRef.__hash__ */
    if (data != NULL && PyBytes_CheckExact(data) && PyBytes_GET_SIZE(data) > 0) {
        Py_INCREF(data);
    }
    else if (PyErr_Occurred()) {
        return NULL;
    }
    else {
        data = PyObject_CallOneArg(node_payload_fn, node);
        if (data == NULL || !PyBytes_CheckExact(data)) {
            Py_XDECREF(data);
            return NULL;
        }
    }
    Py_XSETREF(enc_nodes[next_enc_node], Py_NewRef(node));
    Py_XSETREF(enc_payloads[next_enc_node], Py_NewRef(data));
    next_enc_node = (next_enc_node + 1) % ENC_NODES;
    return data;
}

/* pid.<name> (a new reference): read at its slot's offset `off` when pid is a Pid, else getattr. */
static PyObject *
get_slot(PyObject *pid, Py_ssize_t off, const char *name)
{
    if (off >= 0 && Py_TYPE(pid) == Pid_type && SLOT(pid, off) != NULL) {
        return Py_NewRef(SLOT(pid, off));
    }
    return PyObject_GetAttrString(pid, name);
}

/* An ext of `head` (a pid's serial, or nothing) and a node's payload. */
static int
put_ext_node(Enc *e, int code, const unsigned char *head, Py_ssize_t head_len, PyObject *payload)
{
    Py_ssize_t n = PyBytes_GET_SIZE(payload);
    if (put_ext_head(e, code, (uint64_t)head_len + (uint64_t)n) < 0 || (head_len && put(e, head, head_len) < 0)) {
        return -1;
    }
    return put(e, PyBytes_AS_STRING(payload), n);
}

static int
put_pid(Enc *e, PyObject *pid)
{
    PyObject *node = get_slot(pid, pid_node, "node");
    if (node == NULL) {
        return -1;
    }
    PyObject *payload = payload_of(node);
    Py_DECREF(node);
    if (payload == NULL) {
        return -1;
    }
    int r = -1;
    PyObject *serial = get_slot(pid, pid_serial, "serial");
    if (serial != NULL && PyLong_CheckExact(serial)) {
        unsigned long long s = PyLong_AsUnsignedLongLong(serial); /* OverflowError below 0 too */
        if (!(s == (unsigned long long)-1 && PyErr_Occurred())) {
            unsigned char head[8];
            store_be64(head, s);
            r = put_ext_node(e, EXT_PID, head, 8, payload);
        }
    }
    Py_XDECREF(serial);
    Py_DECREF(payload);
    return r;
}

static int
put_tag(Enc *e, PyObject *tag)
{
    if (PyTuple_GET_SIZE(tag) != 2) {
        return -1;
    }
    unsigned char b[18] = {0xd8, EXT_TAG};
    for (int i = 0; i < 2; i++) {
        PyObject *item = PyTuple_GET_ITEM(tag, i);
        if (!PyLong_CheckExact(item)) {
            return -1; /* struct.pack would take an __index__: the Python path decides */
        }
        unsigned long long v = PyLong_AsUnsignedLongLong(item);
        if (v == (unsigned long long)-1 && PyErr_Occurred()) {
            return -1;
        }
        store_be64(b + 2 + 8 * i, v);
    }
    return put(e, b, sizeof b);
}

static int put_obj(Enc *e, PyObject *o, int depth);

/* Every object put_obj gets is held by a strong reference (the caller's, or
 * one taken here): Python code (NodeRef.__hash__, _node_payload) may run in
 * the middle, and another thread may then change a list or a dict.  A
 * change is seen by a count that no longer fits, and the Python path redoes
 * the message. */
static int
put_items(Enc *e, PyObject *seq, Py_ssize_t n, int is_list, int depth)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (is_list && i >= PyList_GET_SIZE(seq)) {
            return -1;
        }
        PyObject *item = is_list ? PyList_GET_ITEM(seq, i) : PyTuple_GET_ITEM(seq, i);
        Py_INCREF(item);
        int r = put_obj(e, item, depth);
        Py_DECREF(item);
        if (r < 0) {
            return -1;
        }
    }
    return is_list && PyList_GET_SIZE(seq) != n ? -1 : 0;
}

static int
put_dict(Enc *e, PyObject *dict, int depth)
{
    Py_ssize_t n = PyDict_GET_SIZE(dict), pos = 0, done = 0;
    PyObject *key, *value;
    if (put_map_head(e, (uint64_t)n) < 0) {
        return -1;
    }
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (done == n) {
            return -1;
        }
        Py_INCREF(key);
        Py_INCREF(value);
        int r = put_obj(e, key, depth + 1);
        if (r == 0) {
            r = put_obj(e, value, depth + 1);
        }
        Py_DECREF(key);
        Py_DECREF(value);
        if (r < 0) {
            return -1;
        }
        done++;
    }
    return done == n && PyDict_GET_SIZE(dict) == n ? 0 : -1;
}

/* 0, or -1 for "not mine" (with or without an exception set). */
static int
put_obj(Enc *e, PyObject *o, int depth)
{
    /* msgpack's Packer._pack: the limit applies to every object, and the
     * list a tuple turns into is packed at the tuple's level. */
    if (depth > ENC_DEPTH) {
        return -1;
    }
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyLong_Type) {
        return put_int(e, o);
    }
    if (t == &PyUnicode_Type) {
        Py_ssize_t n;
        const char *s = PyUnicode_AsUTF8AndSize(o, &n); /* lone surrogates: an error */
        if (s == NULL || put_str_head(e, (uint64_t)n) < 0) {
            return -1;
        }
        return put(e, s, n);
    }
    if (t == &PyTuple_Type) {
        /* [ext 1, *items]: the mark is one level down, like the items */
        Py_ssize_t n = PyTuple_GET_SIZE(o);
        static const unsigned char mark[3] = {0xc7, 0x00, EXT_TUPLE};
        if (depth + 1 > ENC_DEPTH || put_array_head(e, (uint64_t)n + 1) < 0 || put(e, mark, 3) < 0) {
            return -1;
        }
        return put_items(e, o, n, 0, depth + 1);
    }
    if (t == Pid_type) {
        return put_pid(e, o);
    }
    if (o == Py_None) {
        return put1(e, 0xc0);
    }
    if (o == Py_True) {
        return put1(e, 0xc3);
    }
    if (o == Py_False) {
        return put1(e, 0xc2);
    }
    if (t == &PyFloat_Type) {
        unsigned char b[9] = {0xcb};
        if (PyFloat_Pack8(PyFloat_AS_DOUBLE(o), (char *)b + 1, 0) < 0) { /* as msgpack: NaN bits kept */
            return -1;
        }
        return put(e, b, 9);
    }
    if (t == &PyBytes_Type || t == &PyByteArray_Type) {
        Py_ssize_t n = Py_SIZE(o);
        if (put_bin_head(e, (uint64_t)n) < 0) {
            return -1;
        }
        return put(e, t == &PyBytes_Type ? PyBytes_AS_STRING(o) : PyByteArray_AS_STRING(o), n);
    }
    if (t == &PyList_Type) {
        Py_ssize_t n = PyList_GET_SIZE(o);
        if (put_array_head(e, (uint64_t)n) < 0) {
            return -1;
        }
        return put_items(e, o, n, 1, depth + 1);
    }
    if (t == &PyDict_Type) {
        return put_dict(e, o, depth);
    }
    if (t == Tag_type) {
        return put_tag(e, o);
    }
    if (t == NodeRef_type) {
        PyObject *payload = payload_of(o);
        if (payload == NULL) {
            return -1;
        }
        int r = put_ext_node(e, EXT_NODE, NULL, 0, payload);
        Py_DECREF(payload);
        return r;
    }
    return -1;
}

static PyObject *
fast_encode(PyObject *module, PyObject *obj)
{
    if (!ready()) {
        return NULL;
    }
    Enc e;
    e.buf = e.small;
    e.len = 0;
    e.cap = sizeof e.small;
    PyObject *result;
    if (put_obj(&e, obj, 0) == 0) {
        result = PyBytes_FromStringAndSize((const char *)e.buf, e.len);
    }
    else if (PyErr_Occurred() && !PyErr_ExceptionMatches(PyExc_Exception)) {
        result = NULL; /* KeyboardInterrupt and the like: not ours to swallow */
    }
    else {
        PyErr_Clear(); /* the Python path will meet the same problem, and deal with it */
        result = Py_NewRef(Py_None);
    }
    if (e.buf != e.small) {
        PyMem_Free(e.buf);
    }
    return result;
}

/* encode(obj), or encode_py(obj) (init's) where that gives None: what
 * _codec.encode does, without a Python call in between. */
static PyObject *encode_py;

static PyObject *
fast_encode_message(PyObject *module, PyObject *obj)
{
    PyObject *data = fast_encode(module, obj);
    if (data != Py_None) {
        return data;
    }
    Py_DECREF(data);
    return PyObject_CallOneArg(encode_py, obj);
}

/* -- decode -------------------------------------------------------------- */

typedef struct {
    const unsigned char *p, *end;
    Py_ssize_t limit; /* max_array_len; max_map_len is limit / 2 */
    PyObject *hook;   /* _ext or _ext_untrusted */
    Py_ssize_t left;  /* the budget not spent yet; below 0: over it */
} Dec;

#define NO_BUDGET PY_SSIZE_T_MAX

#if defined(__GNUC__)
#define COLD __attribute__((cold, noinline))
#else
#define COLD
#endif

static COLD int
over_budget(void)
{
    PyErr_SetString(OverBudget, "the decoded objects pass the budget");
    return -1;
}

/* Spend `cost` of the budget; -1 (OverBudget) once it is passed. */
static inline int
charge(Dec *d, Py_ssize_t cost)
{
    d->left -= cost;
    return d->left >= 0 ? 0 : over_budget();
}

static inline int
charge_int(Dec *d, long long v)
{
    return v < -5 || v > 256 ? charge(d, COST_INT) : 0;
}

/* What a Python hook's result is charged: codec.py's _cost_of, for one object. */
static Py_ssize_t
cost_of(PyObject *o)
{
    PyTypeObject *t = Py_TYPE(o);
    if (t == &PyLong_Type) {
        int overflow;
        long long v = PyLong_AsLongLongAndOverflow(o, &overflow);
        return overflow || v < -5 || v > 256 ? COST_INT : 0;
    }
    if (t == &PyFloat_Type) {
        return COST_FLOAT;
    }
    if (t == &PyUnicode_Type) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(o);
        return n > 1 || (n == 1 && PyUnicode_READ_CHAR(o, 0) > 127) ? COST_STR : 0;
    }
    if (t == &PyBytes_Type) {
        return PyBytes_GET_SIZE(o) > 1 ? COST_BYTES : 0;
    }
    if (t == Pid_type) {
        return COST_PID;
    }
    if (t == Tag_type) {
        return COST_TAG;
    }
    return 0;
}

static PyObject *
truncated(void)
{
    PyErr_SetString(Truncated, "the data ends inside a message");
    return NULL;
}

/* n bytes from the input, or NULL (Truncated) if it has fewer left. */
static inline const unsigned char *
take(Dec *d, uint64_t n)
{
    if (n > (uint64_t)(d->end - d->p)) {
        truncated();
        return NULL;
    }
    const unsigned char *s = d->p;
    d->p += n;
    return s;
}

static inline uint64_t
load_be(const unsigned char *s, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++) {
        v = (v << 8) | s[i];
    }
    return v;
}

/* A length of n bytes (1, 2 or 4), big-endian; -1 if truncated. */
static inline int
take_size(Dec *d, int n, uint64_t *size)
{
    const unsigned char *s = take(d, n);
    if (s == NULL) {
        return -1;
    }
    *size = load_be(s, n);
    return 0;
}

static PyObject *dec_obj(Dec *d, int depth);

static int
check_container(Dec *d, uint64_t n, int is_map, int depth)
{
    if (depth >= DEC_DEPTH) {
        PyErr_Format(PyExc_ValueError, "containers nested deeper than %d", DEC_DEPTH);
        return -1;
    }
    uint64_t limit = (uint64_t)(is_map ? d->limit / 2 : d->limit);
    if (n > limit) {
        PyErr_Format(PyExc_ValueError, "%llu exceeds max_%s_len(%llu)", (unsigned long long)n,
                     is_map ? "map" : "array", (unsigned long long)limit);
        return -1;
    }
    return 0;
}

/* An array that cannot hold its n items in what is left: msgpack reads
 * items (calling the same hooks) until it fails; so does this, without
 * allocating n slots.  It always fails: each item takes a byte. */
static PyObject *
dec_doomed_array(Dec *d, int depth)
{
    for (;;) {
        PyObject *item = dec_obj(d, depth + 1);
        if (item == NULL) {
            return NULL;
        }
        Py_DECREF(item);
    }
}

/* An array is a list, or, when its first item is TUPLE_MARK, a tuple of the
 * others (_codec._array, msgpack's list_hook).  The container is not seen
 * by the garbage collector until it is full: hooks run Python code in
 * between, and gc.get_objects() must not hand out a half-made list. */
static PyObject *
dec_array(Dec *d, uint64_t n, int depth)
{
    /* charged before anything is allocated: n <= limit, no overflow */
    if (check_container(d, n, 0, depth) < 0 || charge(d, COST_ARRAY + COST_SLOT * (Py_ssize_t)n) < 0) {
        return NULL;
    }
    if (n == 0) {
        return PyList_New(0);
    }
    if (n > (uint64_t)(d->end - d->p)) {
        return dec_doomed_array(d, depth);
    }
    PyObject *first = dec_obj(d, depth + 1);
    if (first == NULL) {
        return NULL;
    }
    PyObject *seq;
    int is_tuple = first == tuple_mark;
    Py_ssize_t i = 0, size = (Py_ssize_t)n;
    if (is_tuple) {
        Py_DECREF(first);
        if (size == 1) {
            return PyTuple_New(0);
        }
        seq = PyTuple_New(size - 1);
    }
    else {
        seq = PyList_New(size);
    }
    if (seq == NULL) {
        if (!is_tuple) {
            Py_DECREF(first);
        }
        return NULL;
    }
    PyObject_GC_UnTrack(seq);
    if (!is_tuple) {
        PyList_SET_ITEM(seq, 0, first);
        i = 1;
    }
    for (; i < (is_tuple ? size - 1 : size); i++) {
        PyObject *item = dec_obj(d, depth + 1);
        if (item == NULL) {
            Py_DECREF(seq); /* the empty slots are NULL: dealloc skips them */
            return NULL;
        }
        if (is_tuple) {
            PyTuple_SET_ITEM(seq, i, item);
        }
        else {
            PyList_SET_ITEM(seq, i, item);
        }
    }
    PyObject_GC_Track(seq);
    return seq;
}

static PyObject *
dec_map(Dec *d, uint64_t n, int depth)
{
    if (check_container(d, n, 1, depth) < 0 || charge(d, COST_MAP) < 0) {
        return NULL;
    }
    PyObject *dict = PyDict_New();
    if (dict == NULL) {
        return NULL;
    }
    Py_ssize_t entries = 0; /* charged for: a repeated key makes none */
    /* No slots to allocate: a map longer than the data fails by itself. */
    for (uint64_t i = 0; i < n; i++) {
        PyObject *key = dec_obj(d, depth + 1);
        if (key == NULL) {
            goto fail;
        }
        PyObject *value = dec_obj(d, depth + 1);
        if (value == NULL) {
            Py_DECREF(key);
            goto fail;
        }
        if (PyUnicode_CheckExact(key)) {
            PyUnicode_InternInPlace(&key); /* as msgpack does */
        }
        int r = PyDict_SetItem(dict, key, value); /* an unhashable key raises TypeError */
        Py_DECREF(key);
        Py_DECREF(value);
        if (r < 0) {
            goto fail;
        }
        if (PyDict_GET_SIZE(dict) > entries) {
            entries++;
            if (charge(d, COST_ENTRY + (entries == 1 ? COST_MAP_TABLE : 0)) < 0) {
                goto fail;
            }
        }
    }
    return dict;
fail:
    Py_DECREF(dict);
    return NULL;
}

static PyObject *
dec_str(Dec *d, uint64_t n)
{
    const unsigned char *s = take(d, n);
    if (s == NULL || (n > 1 && charge(d, COST_STR) < 0)) {
        return NULL;
    }
    return PyUnicode_DecodeUTF8((const char *)s, (Py_ssize_t)n, NULL); /* strict, as msgpack */
}

static PyObject *
dec_bin(Dec *d, uint64_t n)
{
    const unsigned char *s = take(d, n);
    if (s == NULL || (n > 1 && charge(d, COST_BYTES) < 0)) {
        return NULL;
    }
    return PyBytes_FromStringAndSize((const char *)s, (Py_ssize_t)n);
}

/* The payloads of the nodes seen last, as the bytes objects that were
 * looked up in _nodes: a pid of one of them is looked up with that object,
 * which needs no new bytes and no hashing (bytes keep their hash).  The
 * lookup itself still goes to _nodes, so a cleared _nodes is seen. */
#define NODE_KEYS 8
static PyObject *node_keys[NODE_KEYS];
static unsigned int next_node_key;

/* The NodeRef of a payload: _nodes, else _node(payload) (which checks it,
 * caches it, and may raise MalformedMessage). */
static PyObject *
dec_node(const unsigned char *s, Py_ssize_t n)
{
    PyObject *key = NULL;
    for (int i = 0; i < NODE_KEYS && node_keys[i] != NULL; i++) {
        PyObject *known = node_keys[i];
        if (PyBytes_GET_SIZE(known) == n && memcmp(PyBytes_AS_STRING(known), s, n) == 0) {
            key = Py_NewRef(known);
            break;
        }
    }
    int known = key != NULL;
    if (!known && (key = PyBytes_FromStringAndSize((const char *)s, n)) == NULL) {
        return NULL;
    }
    PyObject *node = PyDict_GetItemWithError(nodes, key);
    if (node != NULL) {
        Py_INCREF(node);
    }
    else if (!PyErr_Occurred()) {
        node = PyObject_CallOneArg(node_fn, key); /* runs Python code: node_keys may change */
    }
    if (node != NULL && !known) {
        /* a real node (garbage raised above): remember its payload */
        Py_XSETREF(node_keys[next_node_key], Py_NewRef(key));
        next_node_key = (next_node_key + 1) % NODE_KEYS;
    }
    Py_DECREF(key);
    return node;
}

static PyObject *
make_pid(PyObject *node, PyObject *serial)
{
    if (!pid_fast) {
        return PyObject_CallFunctionObjArgs((PyObject *)Pid_type, node, serial, NULL);
    }
    /* Pid(node, serial) without running its __init__ in Python (which would
     * cost more than the rest of a frame's decoding): the same object. */
    PyObject *pid = Pid_type->tp_new(Pid_type, empty_tuple, NULL);
    if (pid == NULL) {
        return NULL;
    }
    SLOT(pid, pid_node) = Py_NewRef(node); /* a new object's slots are empty */
    SLOT(pid, pid_serial) = Py_NewRef(serial);
    SLOT(pid, pid_proc) = Py_NewRef(Py_None);
    return pid;
}

static PyObject *
dec_ext(Dec *d, int code, uint64_t n)
{
    const unsigned char *s = take(d, n);
    if (s == NULL) {
        return NULL;
    }
    Py_ssize_t size = (Py_ssize_t)n;
    switch (code) {
    case EXT_TUPLE:
        return Py_NewRef(tuple_mark);
    case EXT_PID: {
        if (size < 8) {
            PyErr_Format(PyExc_ValueError, "a pid of %zd bytes", size);
            return NULL;
        }
        if (charge(d, COST_PID) < 0) {
            return NULL;
        }
        PyObject *node = dec_node(s + 8, size - 8);
        if (node == NULL) {
            return NULL;
        }
        PyObject *serial = PyLong_FromUnsignedLongLong(load_be(s, 8));
        PyObject *pid = serial == NULL ? NULL : make_pid(node, serial);
        Py_DECREF(node);
        Py_XDECREF(serial);
        return pid;
    }
    case EXT_TAG: {
        if (size != 16) {
            PyErr_Format(PyExc_ValueError, "a tag of %zd bytes", size);
            return NULL;
        }
        if (charge(d, COST_TAG) < 0) {
            return NULL;
        }
        PyObject *origin = PyLong_FromUnsignedLongLong(load_be(s, 8));
        PyObject *serial = origin == NULL ? NULL : PyLong_FromUnsignedLongLong(load_be(s + 8, 8));
        PyObject *tag = NULL;
        if (serial != NULL && tag_fast) {
            /* Tag((origin, serial)) as tuple.__new__ makes it for a subclass */
            tag = Tag_type->tp_alloc(Tag_type, 2);
            if (tag != NULL) {
                PyTuple_SET_ITEM(tag, 0, Py_NewRef(origin));
                PyTuple_SET_ITEM(tag, 1, Py_NewRef(serial));
            }
        }
        else if (serial != NULL) {
            PyObject *pair = PyTuple_Pack(2, origin, serial);
            tag = pair == NULL ? NULL : PyObject_CallOneArg((PyObject *)Tag_type, pair);
            Py_XDECREF(pair);
        }
        Py_XDECREF(origin);
        Py_XDECREF(serial);
        return tag;
    }
    case EXT_NODE:
        return dec_node(s, size);
    }
    PyObject *data = PyBytes_FromStringAndSize((const char *)s, size);
    if (data == NULL) {
        return NULL;
    }
    PyObject *result;
    if (code == EXT_TIMESTAMP) {
        result = PyObject_CallOneArg(timestamp_fn, data); /* msgpack decodes ext -1 before any hook */
    }
    else {
        PyObject *py_code = PyLong_FromLong(code);
        if (py_code == NULL) {
            Py_DECREF(data);
            return NULL;
        }
        PyObject *args[2] = {py_code, data};
        result = PyObject_Vectorcall(d->hook, args, 2, NULL);
        Py_DECREF(py_code);
    }
    Py_DECREF(data);
    if (result != NULL && charge(d, cost_of(result)) < 0) {
        Py_CLEAR(result);
    }
    return result;
}

static PyObject *
dec_float32(Dec *d)
{
    const unsigned char *s = take(d, 4);
    if (s == NULL || charge(d, COST_FLOAT) < 0) {
        return NULL;
    }
    uint32_t bits = (uint32_t)load_be(s, 4);
    float f;
    memcpy(&f, &bits, 4); /* as msgpack: the C conversion to double */
    return PyFloat_FromDouble((double)f);
}

static PyObject *
dec_float64(Dec *d)
{
    const unsigned char *s = take(d, 8);
    if (s == NULL || charge(d, COST_FLOAT) < 0) {
        return NULL;
    }
    uint64_t bits = load_be(s, 8);
    double x;
    memcpy(&x, &bits, 8);
    return PyFloat_FromDouble(x);
}

/* One object; depth is the number of containers around it.  Recursion is
 * bounded by DEC_DEPTH: only containers recurse, and they check it. */
static PyObject *
dec_obj(Dec *d, int depth)
{
    const unsigned char *s;
    uint64_t n;
    if (d->p >= d->end) {
        return truncated();
    }
    unsigned int b = *d->p++;
    if (b < 0x80) {
        return PyLong_FromLong((long)b);
    }
    if (b >= 0xe0) {
        if (charge_int(d, (long long)b - 256) < 0) {
            return NULL;
        }
        return PyLong_FromLong((long)b - 256);
    }
    if (b < 0x90) {
        return dec_map(d, b & 0x0f, depth);
    }
    if (b < 0xa0) {
        return dec_array(d, b & 0x0f, depth);
    }
    if (b < 0xc0) {
        return dec_str(d, b & 0x1f);
    }
    switch (b) {
    case 0xc0:
        Py_RETURN_NONE;
    case 0xc2:
        Py_RETURN_FALSE;
    case 0xc3:
        Py_RETURN_TRUE;
    case 0xc4: case 0xc5: case 0xc6: /* bin 8, 16, 32 */
        if (take_size(d, 1 << (b - 0xc4), &n) < 0) {
            return NULL;
        }
        return dec_bin(d, n);
    case 0xc7: case 0xc8: case 0xc9: /* ext 8, 16, 32: length, code, data */
        if (take_size(d, 1 << (b - 0xc7), &n) < 0 || (s = take(d, 1)) == NULL) {
            return NULL;
        }
        return dec_ext(d, (signed char)s[0], n);
    case 0xca:
        return dec_float32(d);
    case 0xcb:
        return dec_float64(d);
    case 0xcc: case 0xcd: case 0xce: case 0xcf: /* uint 8, 16, 32, 64 */
        if ((s = take(d, 1 << (b - 0xcc))) == NULL) {
            return NULL;
        }
        n = load_be(s, 1 << (b - 0xcc));
        if (n > 256 && charge(d, COST_INT) < 0) {
            return NULL;
        }
        return PyLong_FromUnsignedLongLong(n);
    case 0xd0: case 0xd1: case 0xd2: case 0xd3: { /* int 8, 16, 32, 64 */
        int k = 1 << (b - 0xd0);
        if ((s = take(d, k)) == NULL) {
            return NULL;
        }
        uint64_t v = load_be(s, k);
        if (k < 8 && (v >> (8 * k - 1))) {
            v |= ~0ULL << (8 * k); /* sign extension */
        }
        if (charge_int(d, (long long)v) < 0) {
            return NULL;
        }
        return PyLong_FromLongLong((long long)v);
    }
    case 0xd4: case 0xd5: case 0xd6: case 0xd7: case 0xd8: /* fixext 1, 2, 4, 8, 16 */
        if ((s = take(d, 1)) == NULL) {
            return NULL;
        }
        return dec_ext(d, (signed char)s[0], 1u << (b - 0xd4));
    case 0xd9: case 0xda: case 0xdb: /* str 8, 16, 32 */
        if (take_size(d, 1 << (b - 0xd9), &n) < 0) {
            return NULL;
        }
        return dec_str(d, n);
    case 0xdc: case 0xdd: /* array 16, 32 */
        if (take_size(d, 2 << (b - 0xdc), &n) < 0) {
            return NULL;
        }
        return dec_array(d, n, depth);
    case 0xde: case 0xdf: /* map 16, 32 */
        if (take_size(d, 2 << (b - 0xde), &n) < 0) {
            return NULL;
        }
        return dec_map(d, n, depth);
    default: /* 0xc1 */
        PyErr_Format(PyExc_ValueError, "0x%02x is not a msgpack type", b);
        return NULL;
    }
}

/* What is left of the budget of `size` bytes of data: EXPANSION per byte
 * plus EXPANSION_FLOOR, at most max_decoded (an int >= 0, or None: no budget). */
static int
budget_of(Py_ssize_t size, PyObject *max_decoded, Py_ssize_t *budget)
{
    if (max_decoded == Py_None) {
        *budget = NO_BUDGET;
        return 0;
    }
    Py_ssize_t most = PyLong_AsSsize_t(max_decoded);
    if (most == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (most < 0) {
        PyErr_SetString(PyExc_ValueError, "max_decoded below 0");
        return -1;
    }
    *budget = most < EXPANSION_FLOOR || size > (most - EXPANSION_FLOOR) / EXPANSION ? most : size * EXPANSION + EXPANSION_FLOOR;
    return 0;
}

/* Decoding makes no garbage, let alone cycles: a collection in the middle of
 * a large frame only walks what is being built (a frame of 4 million small
 * lists decoded 7x slower with the collector on).  Small frames leave it be. */
#define PAUSE_GC_ABOVE (64 * 1024)

/* One object from data[offset:]; *end is where it stops, *size the length
 * of data.  *left is the budget not spent: it comes in as what is left, or,
 * if max_decoded is not NULL, the budget of data by budget_of(). */
static PyObject *
dec_buffer(PyObject *data, Py_ssize_t offset, Py_ssize_t limit, int trusted, Py_ssize_t *end, Py_ssize_t *size,
           PyObject *max_decoded, Py_ssize_t *left)
{
    Py_buffer view;
    /* The view also keeps a bytearray from being resized by a hook. */
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return NULL;
    }
    PyObject *obj = NULL;
    if (offset < 0 || offset > view.len) {
        PyErr_SetString(PyExc_ValueError, "offset out of range");
    }
    else if (max_decoded == NULL || budget_of(view.len, max_decoded, left) == 0) {
        Dec d;
        d.p = (const unsigned char *)view.buf + offset;
        d.end = (const unsigned char *)view.buf + view.len;
        d.limit = limit < 0 ? view.len : limit;
        d.hook = trusted ? ext_hook : ext_untrusted_hook;
        d.left = *left;
        int paused = view.len - offset > PAUSE_GC_ABOVE && PyGC_Disable();
        obj = dec_obj(&d, 0);
        if (paused) {
            PyGC_Enable();
        }
        *end = d.p - (const unsigned char *)view.buf;
        *size = view.len;
        *left = d.left;
    }
    PyBuffer_Release(&view);
    return obj;
}

static PyObject *
fast_decode(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "decode(data, trusted, max_decoded=None)");
        return NULL;
    }
    int trusted = PyObject_IsTrue(args[1]);
    Py_ssize_t left = NO_BUDGET, size = 0, end = 0;
    if (trusted < 0 || !ready()) {
        return NULL;
    }
    PyObject *obj = dec_buffer(args[0], 0, -1, trusted, &end, &size, nargs == 3 ? args[2] : NULL, &left);
    if (obj != NULL && end != size) {
        Py_DECREF(obj);
        PyErr_Format(PyExc_ValueError, "%zd bytes after the message", size - end);
        return NULL;
    }
    return obj;
}

static PyObject *
fast_decode_from(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4 && nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "decode_from(data, offset, limit, max_decoded[, left])");
        return NULL;
    }
    Py_ssize_t offset = PyLong_AsSsize_t(args[1]);
    if (offset == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[2]);
    if ((limit == -1 && PyErr_Occurred()) || !ready()) {
        return NULL;
    }
    Py_ssize_t left = 0, end = 0, size = 0;
    PyObject *max_decoded = args[3];
    if (nargs == 5 && args[4] != Py_None) {
        max_decoded = NULL; /* the budget is what the messages before left */
        if ((left = PyLong_AsSsize_t(args[4])) == -1 && PyErr_Occurred()) {
            return NULL;
        }
    }
    PyObject *obj = dec_buffer(args[0], offset, limit, 1, &end, &size, max_decoded, &left);
    if (obj == NULL) {
        return NULL;
    }
    PyObject *py_end = PyLong_FromSsize_t(end);
    /* (obj, end), or with a fifth argument (obj, end, left): the one-message frame needs no left */
    PyObject *py_left = nargs == 4 ? NULL : PyLong_FromSsize_t(left);
    PyObject *result = NULL;
    if (py_end != NULL && (nargs == 4 || py_left != NULL)) {
        result = nargs == 4 ? PyTuple_Pack(2, obj, py_end) : PyTuple_Pack(3, obj, py_end, py_left);
    }
    Py_DECREF(obj);
    Py_XDECREF(py_end);
    Py_XDECREF(py_left);
    return result;
}

/* -- a frame's plain SENDs, delivered ------------------------------------- */

/* The messages of a frame as codec.decode_frame reads them (one message, or a
 * batch: its count, then that many), trusted, in a new list; NULL with an
 * error if decode_frame would raise, and then *before (if not NULL) holds
 * the messages of a batch before the one that failed. */
static PyObject *
dec_frame(PyObject *data, PyObject *max_decoded, PyObject **before)
{
    Py_ssize_t left = NO_BUDGET, end = 0, size = 0;
    *before = NULL;
    PyObject *first = dec_buffer(data, 0, -1, 1, &end, &size, max_decoded, &left);
    if (first == NULL) {
        return NULL;
    }
    if (end == size) {
        PyObject *one = PyList_New(1);
        if (one == NULL) {
            Py_DECREF(first);
            return NULL;
        }
        PyList_SET_ITEM(one, 0, first);
        return one;
    }
    /* a batch: a count of at least 2, then exactly that many messages */
    Py_ssize_t count = PyLong_CheckExact(first) ? PyLong_AsSsize_t(first) : -1;
    Py_DECREF(first);
    if (count < 2) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "not a batch");
        }
        return NULL;
    }
    PyObject *messages = PyList_New(0);
    if (messages == NULL) {
        return NULL;
    }
    Py_ssize_t limit = size - end + 1; /* the Unpacker's max_buffer_size, hence its max_array_len */
    while (end < size) {
        PyObject *msg = PyList_GET_SIZE(messages) < count ? dec_buffer(data, end, limit, 1, &end, &size, NULL, &left)
                                                           : NULL;
        if (msg == NULL || PyList_Append(messages, msg) < 0) {
            if (msg == NULL && !PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "a batch holding more messages than its count");
            }
            Py_XDECREF(msg);
            *before = messages;
            return NULL;
        }
        Py_DECREF(msg);
    }
    if (PyList_GET_SIZE(messages) != count) {
        PyErr_SetString(PyExc_ValueError, "a batch holding fewer messages than its count");
        *before = messages;
        return NULL;
    }
    return messages;
}

static PyObject *str_order, *str_mailbox;
#define SEND_KIND 1 /* termite/_net/frames.py's SEND */

/* The process a frame is a plain SEND to, if it is one to a process of this
 * node that never migrated, with a message the endpoint need not look at:
 * what endpoint._apply_frame delivers in line.  A borrowed reference; NULL
 * (no error) for any other frame, NULL with an error if a lookup failed. */
static PyObject *
plain_send_to(PyObject *frame, PyObject *here, PyObject *procs, PyObject *down_type)
{
    if (!PyTuple_CheckExact(frame) || PyTuple_GET_SIZE(frame) != 3) {
        return NULL;
    }
    PyObject *kind = PyTuple_GET_ITEM(frame, 0), *pid = PyTuple_GET_ITEM(frame, 1);
    int overflow;
    if (!PyLong_CheckExact(kind) || PyLong_AsLongAndOverflow(kind, &overflow) != SEND_KIND || overflow ||
        Py_TYPE(pid) != Pid_type ||
        Py_TYPE(PyTuple_GET_ITEM(frame, 2)) == (PyTypeObject *)down_type) {
        return NULL;
    }
    PyObject *node = get_slot(pid, pid_node, "node");
    if (node == NULL) {
        return NULL;
    }
    Py_DECREF(node); /* the pid holds it */
    if (node != here) {
        return NULL;
    }
    PyObject *serial = get_slot(pid, pid_serial, "serial");
    if (serial == NULL) {
        return NULL;
    }
    PyObject *proc = PyDict_GetItemWithError(procs, serial);
    Py_DECREF(serial);
    if (proc == NULL) {
        return NULL;
    }
    PyObject *order = PyObject_GetAttr(proc, str_order);
    if (order == NULL) {
        return NULL;
    }
    Py_DECREF(order);
    return order == Py_None ? proc : NULL;
}

static PyObject *
fast_take_sends(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 9) {
        PyErr_SetString(PyExc_TypeError, "take_sends(data, here, procs, deliver, Down, limit, full, peer, max_decoded)");
        return NULL;
    }
    PyObject *data = args[0], *here = args[1], *procs = args[2], *deliver = args[3], *down_type = args[4];
    PyObject *full = args[6], *peer = args[7];
    Py_ssize_t limit = PyLong_AsSsize_t(args[5]);
    if ((limit == -1 && PyErr_Occurred()) || !ready()) {
        return NULL;
    }
    if (!PyDict_CheckExact(procs)) {
        PyErr_SetString(PyExc_TypeError, "take_sends(): procs must be a dict");
        return NULL;
    }
    if (!PyBytes_CheckExact(data)) {
        Py_RETURN_FALSE;
    }
    PyObject *before;
    PyObject *messages = dec_frame(data, args[8], &before);
    if (messages == NULL) {
        if (PyErr_ExceptionMatches(OverBudget)) {
            /* not read again: the limit is the point.  The messages of a batch before the one
             * that passed it still count, as decode_frame's MalformedMessage.decoded. */
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            PyObject *decoded = before != NULL ? before : PyList_New(0);
            if (decoded != NULL && value != NULL && PyObject_SetAttrString(value, "decoded", decoded) == 0) {
                PyErr_Restore(type, value, tb);
            }
            else {
                Py_XDECREF(type);
                Py_XDECREF(value);
                Py_XDECREF(tb);
            }
            Py_XDECREF(decoded);
            return NULL;
        }
        Py_XDECREF(before);
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return NULL; /* KeyboardInterrupt and the like */
        }
        PyErr_Clear(); /* codec.decode_frame reads it again, and says what is wrong */
        Py_RETURN_FALSE;
    }
    Py_ssize_t n = PyList_GET_SIZE(messages), i;
    for (i = 0; i < n; i++) {
        PyObject *frame = PyList_GET_ITEM(messages, i);
        PyObject *proc = plain_send_to(frame, here, procs, down_type);
        if (proc == NULL) {
            if (PyErr_Occurred()) {
                goto fail;
            }
            break; /* this one and the rest: for the Python path, in order */
        }
        Py_INCREF(proc);
        PyObject *call[2] = {proc, PyTuple_GET_ITEM(frame, 2)};
        PyObject *r = PyObject_Vectorcall(deliver, call, 2, NULL);
        if (r == NULL) {
            Py_DECREF(proc);
            goto fail;
        }
        Py_DECREF(r);
        PyObject *box = PyObject_GetAttr(proc, str_mailbox);
        Py_ssize_t queued = box == NULL ? -1 : box == Py_None ? 0 : PyObject_Length(box);
        Py_XDECREF(box);
        if (queued > limit) {
            PyObject *told[2] = {proc, peer};
            r = PyObject_Vectorcall(full, told, 2, NULL);
            Py_XDECREF(r);
            queued = r == NULL ? -1 : 0;
        }
        Py_DECREF(proc);
        if (queued < 0) {
            goto fail;
        }
    }
    if (i == n) {
        Py_DECREF(messages);
        Py_RETURN_NONE;
    }
    PyObject *rest = PyList_GetSlice(messages, i, n);
    Py_DECREF(messages);
    return rest;
fail:
    Py_DECREF(messages);
    return NULL;
}

/* -- init ---------------------------------------------------------------- */

static int
check_type(PyObject *obj, const char *what)
{
    if (PyType_Check(obj)) {
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "init(): %s must be a class", what);
    return -1;
}

/* Where the __slots__ slot `name` of `type` lives in its objects, or -1 (no error) if it is none. */
static Py_ssize_t
member(PyObject *type, const char *name)
{
    PyObject *descr = PyObject_GetAttrString(type, name);
    if (descr == NULL) {
        PyErr_Clear();
        return -1;
    }
    Py_ssize_t offset = Py_TYPE(descr) == &PyMemberDescr_Type &&
                        ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX
                        ? ((PyMemberDescrObject *)descr)->d_member->offset : -1;
    Py_DECREF(descr);
    return offset;
}

static PyObject *
fast_init(PyObject *module, PyObject *args)
{
    PyObject *pid, *tag, *noderef, *mark, *payloads, *node_dict, *payload_fn, *nfn, *ext, *ext_u, *ts, *enc_py;
    if (!PyArg_ParseTuple(args, "OOOOO!O!OOOOOO:init", &pid, &tag, &noderef, &mark, &PyDict_Type, &payloads,
                          &PyDict_Type, &node_dict, &payload_fn, &nfn, &ext, &ext_u, &ts, &enc_py)) {
        return NULL;
    }
    if (check_type(pid, "Pid") < 0 || check_type(tag, "Tag") < 0 || check_type(noderef, "NodeRef") < 0) {
        return NULL;
    }
    if (!PyType_IsSubtype((PyTypeObject *)tag, &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError, "init(): Tag must be a tuple subclass");
        return NULL;
    }
    /* A second init (a reload of _codec.py) replaces everything; the old
     * objects are kept alive, as a call in another thread may be using them. */
    Py_INCREF(pid);
    Py_INCREF(tag);
    Py_INCREF(noderef);
    Pid_type = (PyTypeObject *)pid;
    Tag_type = (PyTypeObject *)tag;
    NodeRef_type = (PyTypeObject *)noderef;
    tuple_mark = Py_NewRef(mark);
    node_payloads = Py_NewRef(payloads);
    nodes = Py_NewRef(node_dict);
    node_payload_fn = Py_NewRef(payload_fn);
    node_fn = Py_NewRef(nfn);
    ext_hook = Py_NewRef(ext);
    ext_untrusted_hook = Py_NewRef(ext_u);
    timestamp_fn = Py_NewRef(ts);
    encode_py = Py_NewRef(enc_py);
    for (int i = 0; i < ENC_NODES; i++) {
        Py_CLEAR(enc_nodes[i]);
        Py_CLEAR(enc_payloads[i]);
    }
    pid_node = member(pid, "node");
    pid_serial = member(pid, "serial");
    pid_proc = member(pid, "_proc");
    pid_fast = pid_node >= 0 && pid_serial >= 0 && pid_proc >= 0 &&
               Pid_type->tp_new == PyBaseObject_Type.tp_new;
    tag_fast = Tag_type->tp_new == PyTuple_Type.tp_new && Tag_type->tp_init == PyBaseObject_Type.tp_init;
    Py_RETURN_NONE;
}

/* -- Counter: flow.py's byte counts, the common case ---------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *flows;             /* dict: id(node) -> the node's counts */
    PyObject *cls;               /* the counts' class */
    Py_ssize_t count, mark;      /* where its two slots are */
    long long room;
    PyObject *slow;
    vectorcallfunc vectorcall;
} Counter;

/* The int in `obj`'s slot at `off` as a long long; 0 if it is unset, or not an int that fits (no error). */
static int
count_of(PyObject *obj, Py_ssize_t off, long long *value)
{
    PyObject *v = SLOT(obj, off);
    if (v == NULL || !PyLong_CheckExact(v)) {
        return 0;
    }
    int overflow = 0;
    *value = PyLong_AsLongLongAndOverflow(v, &overflow);
    return !overflow && !(*value == -1 && PyErr_Occurred());
}

static PyObject *
counter_call(PyObject *obj, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Counter *self = (Counter *)obj;
    if (PyVectorcall_NARGS(nargsf) != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a Counter takes (node, size)");
        return NULL;
    }
    PyObject *key = PyLong_FromVoidPtr(args[0]);
    if (key == NULL) {
        return NULL;
    }
    PyObject *counts = PyDict_GetItemWithError(self->flows, key); /* borrowed */
    Py_DECREF(key);
    if (counts == NULL && PyErr_Occurred()) {
        return NULL;
    }
    if (counts != NULL && Py_TYPE(counts) == (PyTypeObject *)self->cls && PyLong_CheckExact(args[1])) {
        int overflow = 0;
        long long size = PyLong_AsLongLongAndOverflow(args[1], &overflow), count, mark;
        int common = !overflow && !(size == -1 && PyErr_Occurred()) && count_of(counts, self->count, &count) &&
                     count_of(counts, self->mark, &mark) && size >= 0 && count <= LLONG_MAX - size &&
                     (count + size) - mark < self->room;
        if (common) {
            PyObject *value = PyLong_FromLongLong(count + size);
            if (value == NULL) {
                return NULL;
            }
            Py_SETREF(SLOT(counts, self->count), value);
            Py_RETURN_NONE;
        }
    }
    return PyObject_Vectorcall(self->slow, args, 2, NULL);
}

static PyObject *
counter_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *flows, *cls, *count_name, *mark_name, *slow;
    long long room;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Counter(flows, cls, count, mark, room, slow) takes no keywords");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O!OUULO:Counter", &PyDict_Type, &flows, &cls, &count_name, &mark_name, &room,
                          &slow)) {
        return NULL;
    }
    if (!PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_TypeError, "Counter(...): slow must be callable");
        return NULL;
    }
    Py_ssize_t count = PyType_Check(cls) ? member(cls, PyUnicode_AsUTF8(count_name)) : -1;
    Py_ssize_t mark = count < 0 ? -1 : member(cls, PyUnicode_AsUTF8(mark_name));
    if (mark < 0) {
        PyErr_Clear();
        PyErr_SetString(PyExc_TypeError, "Counter(...): cls must be a class with count and mark as __slots__");
        return NULL;
    }
    Counter *self = (Counter *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->flows = Py_NewRef(flows);
    self->cls = Py_NewRef(cls);
    self->count = count;
    self->mark = mark;
    self->room = room;
    self->slow = Py_NewRef(slow);
    self->vectorcall = counter_call;
    return (PyObject *)self;
}

static int
counter_traverse(Counter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->flows);
    Py_VISIT(self->cls);
    Py_VISIT(self->slow);
    return 0;
}

static int
counter_clear(Counter *self)
{
    Py_CLEAR(self->flows);
    Py_CLEAR(self->cls);
    Py_CLEAR(self->slow);
    return 0;
}

static void
counter_dealloc(Counter *self)
{
    PyObject_GC_UnTrack(self);
    counter_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject Counter_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "termite._net._fastcodec.Counter",
    .tp_doc = "Counter(flows, cls, count, mark, room, slow): flow.py's byte counts, the common case",
    .tp_basicsize = sizeof(Counter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Counter, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = counter_new,
    .tp_dealloc = (destructor)counter_dealloc,
    .tp_traverse = (traverseproc)counter_traverse,
    .tp_clear = (inquiry)counter_clear,
};

/* -- Outbox: endpoint.py's _Outbox, the frames of a kernel turn ------------ */

typedef struct {
    PyObject_HEAD
    PyObject *kernel, *task;        /* the kernel, and its class's `task` descriptor (or NULL) */
    PyObject *pids, *peers;         /* flow control's: sends go the slow way while either holds any */
    PyObject *numbered;             /* pids that migrated: their sends too */
    PyObject *kind;                 /* SEND */
    PyObject *send_frame, *wrote, *slow_send, *batch, *flush_batches;
    PyObject *out;                  /* the batches of the turn (a dict) */
    Py_ssize_t batch_bytes;
    PyObject *one;                  /* (node, data), or None */
    PyObject *noted_set, *noted_node; /* the last node noted in a sent_to set (or NULL) */
} Outbox;

static PyObject *str_task, *str_sent_to, *str_node, *str_add;

static PyObject *
outbox_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *kernel, *pids, *peers, *numbered, *kind, *send_frame, *wrote, *slow_send, *batch, *flush_batches, *out;
    Py_ssize_t batch_bytes;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Outbox(...) takes no keywords");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OO!O!OOOOOOOO!n:Outbox", &kernel, &PyDict_Type, &pids, &PyDict_Type, &peers,
                          &numbered, &kind, &send_frame, &wrote, &slow_send, &batch, &flush_batches, &PyDict_Type,
                          &out, &batch_bytes)) {
        return NULL;
    }
    /* The C kernel's task is a member, read by its descriptor; the Python kernel's an attribute. */
    PyObject *task = PyObject_GetAttr((PyObject *)Py_TYPE(kernel), str_task);
    if (task == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return NULL;
        }
        PyErr_Clear();
    }
    else if (Py_TYPE(task)->tp_descr_get == NULL || Py_TYPE(task)->tp_descr_set == NULL) {
        Py_CLEAR(task);
    }
    Outbox *self = (Outbox *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_XDECREF(task);
        return NULL;
    }
    self->kernel = Py_NewRef(kernel);
    self->task = task; /* or NULL */
    self->pids = Py_NewRef(pids);
    self->peers = Py_NewRef(peers);
    self->numbered = Py_NewRef(numbered);
    self->kind = Py_NewRef(kind);
    self->send_frame = Py_NewRef(send_frame);
    self->wrote = Py_NewRef(wrote);
    self->slow_send = Py_NewRef(slow_send);
    self->batch = Py_NewRef(batch);
    self->flush_batches = Py_NewRef(flush_batches);
    self->out = Py_NewRef(out);
    self->batch_bytes = batch_bytes;
    self->one = Py_NewRef(Py_None);
    return (PyObject *)self;
}

static int
outbox_traverse(Outbox *self, visitproc visit, void *arg)
{
    Py_VISIT(self->kernel);
    Py_VISIT(self->task);
    Py_VISIT(self->pids);
    Py_VISIT(self->peers);
    Py_VISIT(self->numbered);
    Py_VISIT(self->kind);
    Py_VISIT(self->send_frame);
    Py_VISIT(self->wrote);
    Py_VISIT(self->slow_send);
    Py_VISIT(self->batch);
    Py_VISIT(self->flush_batches);
    Py_VISIT(self->out);
    Py_VISIT(self->one);
    Py_VISIT(self->noted_set);
    Py_VISIT(self->noted_node);
    return 0;
}

static int
outbox_clear(Outbox *self)
{
    Py_CLEAR(self->kernel);
    Py_CLEAR(self->task);
    Py_CLEAR(self->pids);
    Py_CLEAR(self->peers);
    Py_CLEAR(self->numbered);
    Py_CLEAR(self->kind);
    Py_CLEAR(self->send_frame);
    Py_CLEAR(self->wrote);
    Py_CLEAR(self->slow_send);
    Py_CLEAR(self->batch);
    Py_CLEAR(self->flush_batches);
    Py_CLEAR(self->out);
    Py_CLEAR(self->one);
    Py_CLEAR(self->noted_set);
    Py_CLEAR(self->noted_node);
    return 0;
}

static void
outbox_dealloc(Outbox *self)
{
    PyObject_GC_UnTrack(self);
    outbox_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* fn(a, b); 0, or -1 with an exception. */
static int
call2(PyObject *fn, PyObject *a, PyObject *b)
{
    PyObject *args[2] = {a, b};
    PyObject *r = PyObject_Vectorcall(fn, args, 2, NULL);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* The running process notes `node` in its sent_to set; 0, or -1 with an exception. */
static int
note_node(Outbox *self, PyObject *node)
{
    PyObject *proc = self->task == NULL ? PyObject_GetAttr(self->kernel, str_task)
                                        : Py_TYPE(self->task)->tp_descr_get(self->task, self->kernel,
                                                                            (PyObject *)Py_TYPE(self->kernel));
    if (proc == NULL) {
        return -1;
    }
    int rc = 0;
    if (proc != Py_None) {
        PyObject *sent_to = PyObject_GetAttr(proc, str_sent_to);
        if (sent_to == NULL) {
            rc = -1;
        }
        else if (sent_to == Py_None) {
            PyObject *set = PySet_New(NULL);
            rc = set == NULL || PySet_Add(set, node) < 0 || PyObject_SetAttr(proc, str_sent_to, set) < 0 ? -1 : 0;
            if (rc == 0) {
                Py_XSETREF(self->noted_set, Py_NewRef(set));
                Py_XSETREF(self->noted_node, Py_NewRef(node));
            }
            Py_XDECREF(set);
        }
        else if (sent_to != self->noted_set || node != self->noted_node) {
            int in = PySequence_Contains(sent_to, node);
            if (in < 0) {
                rc = -1;
            }
            else if (!in) {
                PyObject *r = PySet_Check(sent_to) ? (PySet_Add(sent_to, node) < 0 ? NULL : Py_NewRef(Py_None))
                                                   : PyObject_CallMethodOneArg(sent_to, str_add, node);
                rc = r == NULL ? -1 : 0;
                Py_XDECREF(r);
            }
            if (rc == 0) {
                Py_XSETREF(self->noted_set, Py_NewRef(sent_to));
                Py_XSETREF(self->noted_node, Py_NewRef(node));
            }
        }
        Py_XDECREF(sent_to);
    }
    Py_DECREF(proc);
    return rc;
}

static int
outbox_post_one(Outbox *self, PyObject *node, PyObject *data)
{
    if (note_node(self, node) < 0) {
        return -1;
    }
    if (self->one == Py_None) {
        Py_ssize_t size = PyObject_Length(data);
        if (size < 0) {
            return -1;
        }
        if (PyDict_GET_SIZE(self->out) == 0 && size < self->batch_bytes) {
            PyObject *one = PyTuple_Pack(2, node, data);
            if (one == NULL) {
                return -1;
            }
            Py_SETREF(self->one, one);
            return 0;
        }
    }
    else {
        PyObject *held = self->one;
        self->one = Py_NewRef(Py_None);
        int rc = PyTuple_CheckExact(held) && PyTuple_GET_SIZE(held) == 2
                     ? call2(self->batch, PyTuple_GET_ITEM(held, 0), PyTuple_GET_ITEM(held, 1))
                     : (PyErr_SetString(PyExc_TypeError, "Outbox.one must be a (node, data) tuple"), -1);
        Py_DECREF(held);
        if (rc < 0) {
            return -1;
        }
    }
    return call2(self->batch, node, data);
}

static PyObject *
outbox_post(Outbox *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "post(node, data)");
        return NULL;
    }
    if (outbox_post_one(self, args[0], args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
outbox_send(Outbox *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "send(pid, msg)");
        return NULL;
    }
    PyObject *pid = args[0], *msg = args[1];
    int slow = PyDict_GET_SIZE(self->pids) != 0 || PyDict_GET_SIZE(self->peers) != 0;
    if (!slow) {
        int numbered = PyObject_IsTrue(self->numbered);
        if (numbered > 0) {
            numbered = PySequence_Contains(self->numbered, pid);
        }
        if (numbered < 0) {
            return NULL;
        }
        slow = numbered;
    }
    if (slow) {
        return PyObject_Vectorcall(self->slow_send, args, 2, NULL);
    }
    PyObject *frame = PyTuple_Pack(3, self->kind, pid, msg);
    PyObject *data = frame == NULL ? NULL : fast_encode_message(NULL, frame);
    Py_XDECREF(frame);
    PyObject *node = data == NULL ? NULL : PyObject_GetAttr(pid, str_node);
    int rc = node == NULL ? -1 : outbox_post_one(self, node, data);
    Py_XDECREF(data);
    Py_XDECREF(node);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
outbox_flush(Outbox *self, PyObject *unused)
{
    if (self->one != Py_None) {
        PyObject *held = self->one;
        self->one = Py_NewRef(Py_None);
        int rc = -1;
        if (!PyTuple_CheckExact(held) || PyTuple_GET_SIZE(held) != 2) {
            PyErr_SetString(PyExc_TypeError, "Outbox.one must be a (node, data) tuple");
        }
        else {
            PyObject *node = PyTuple_GET_ITEM(held, 0), *data = PyTuple_GET_ITEM(held, 1);
            Py_ssize_t size = -1;
            if (call2(self->send_frame, node, data) == 0 && (size = PyObject_Length(data)) >= 0) {
                PyObject *n = PyLong_FromSsize_t(size);
                rc = n == NULL ? -1 : call2(self->wrote, node, n);
                Py_XDECREF(n);
            }
        }
        Py_DECREF(held);
        if (rc < 0) {
            return NULL;
        }
    }
    if (PyDict_GET_SIZE(self->out) != 0) {
        return PyObject_CallNoArgs(self->flush_batches);
    }
    Py_RETURN_NONE;
}

static PyObject *
outbox_get_one(Outbox *self, void *closure)
{
    return Py_NewRef(self->one);
}

static int
outbox_set_one(Outbox *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "Outbox.one cannot be deleted");
        return -1;
    }
    Py_SETREF(self->one, Py_NewRef(value));
    return 0;
}

static PyObject *
outbox_get_numbered(Outbox *self, void *closure)
{
    return Py_NewRef(self->numbered);
}

static int
outbox_set_numbered(Outbox *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "Outbox.numbered cannot be deleted");
        return -1;
    }
    Py_SETREF(self->numbered, Py_NewRef(value));
    return 0;
}

static PyMethodDef outbox_methods[] = {
    {"send", (PyCFunction)(void (*)(void))outbox_send, METH_FASTCALL, "send(pid, msg): see _Outbox"},
    {"post", (PyCFunction)(void (*)(void))outbox_post, METH_FASTCALL, "post(node, data): see _Outbox"},
    {"flush", (PyCFunction)outbox_flush, METH_NOARGS, "flush(): see _Outbox"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef outbox_getset[] = {
    {"one", (getter)outbox_get_one, (setter)outbox_set_one, "the turn's only frame so far, (node, data), or None"},
    {"numbered", (getter)outbox_get_numbered, (setter)outbox_set_numbered, "pids whose sends take the slow path"},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Outbox_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "termite._net._fastcodec.Outbox",
    .tp_doc = "Outbox(kernel, pids, peers, numbered, kind, send_frame, wrote, slow_send, batch, flush_batches, out, "
              "batch_bytes): endpoint.py's _Outbox in C",
    .tp_basicsize = sizeof(Outbox),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = outbox_new,
    .tp_dealloc = (destructor)outbox_dealloc,
    .tp_traverse = (traverseproc)outbox_traverse,
    .tp_clear = (inquiry)outbox_clear,
    .tp_methods = outbox_methods,
    .tp_getset = outbox_getset,
};

/* -- Inbox: endpoint.py's _Inbox -------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *here;                  /* the NodeRef object pids of this node come with (settable) */
    PyObject *procs, *moved;         /* the table's dicts: serial -> process; pid -> node it left for */
    PyObject *deliver, *down, *full; /* take_sends' */
    PyObject *max_decoded;           /* int or None */
    PyObject *got, *apply;           /* flow control's per-frame count; the Python path for the rest */
    PyObject *limit;                 /* an int: a mailbox longer than this asks flow control to hold */
} Inbox;

static PyObject *inbox_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames);

static PyObject *
inbox_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *here, *procs, *moved, *deliver, *down, *full, *max_decoded, *got, *apply, *limit_obj;
    if (kwds != NULL && PyDict_GET_SIZE(kwds) != 0) {
        PyErr_SetString(PyExc_TypeError, "Inbox(...) takes no keywords");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "OO!O!OOOOOOO:Inbox", &here, &PyDict_Type, &procs, &PyDict_Type, &moved, &deliver,
                          &down, &limit_obj, &full, &max_decoded, &got, &apply)) {
        return NULL;
    }
    if (!PyLong_CheckExact(limit_obj)) {
        PyErr_SetString(PyExc_TypeError, "Inbox(): limit must be an int");
        return NULL;
    }
    Inbox *self = (Inbox *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->here = Py_NewRef(here);
    self->procs = Py_NewRef(procs);
    self->moved = Py_NewRef(moved);
    self->deliver = Py_NewRef(deliver);
    self->down = Py_NewRef(down);
    self->full = Py_NewRef(full);
    self->max_decoded = Py_NewRef(max_decoded);
    self->got = Py_NewRef(got);
    self->apply = Py_NewRef(apply);
    self->limit = Py_NewRef(limit_obj);
    self->vectorcall = inbox_vectorcall;
    return (PyObject *)self;
}

static int
inbox_traverse(Inbox *self, visitproc visit, void *arg)
{
    Py_VISIT(self->here);
    Py_VISIT(self->procs);
    Py_VISIT(self->moved);
    Py_VISIT(self->deliver);
    Py_VISIT(self->down);
    Py_VISIT(self->full);
    Py_VISIT(self->max_decoded);
    Py_VISIT(self->got);
    Py_VISIT(self->apply);
    Py_VISIT(self->limit);
    return 0;
}

static int
inbox_clear(Inbox *self)
{
    Py_CLEAR(self->here);
    Py_CLEAR(self->procs);
    Py_CLEAR(self->moved);
    Py_CLEAR(self->deliver);
    Py_CLEAR(self->down);
    Py_CLEAR(self->full);
    Py_CLEAR(self->max_decoded);
    Py_CLEAR(self->got);
    Py_CLEAR(self->apply);
    Py_CLEAR(self->limit);
    return 0;
}

static void
inbox_dealloc(Inbox *self)
{
    PyObject_GC_UnTrack(self);
    inbox_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* One frame from `peer`: counted, its plain SENDs delivered, the rest to apply(peer, data, taken).
 * 0, or -1 with an exception. */
static int
inbox_frame(Inbox *self, PyObject *peer, PyObject *data)
{
    Py_ssize_t size = PyObject_Length(data);
    if (size < 0) {
        return -1;
    }
    PyObject *size_obj = PyLong_FromSsize_t(size);
    if (size_obj == NULL || call2(self->got, peer, size_obj) < 0) {
        Py_XDECREF(size_obj);
        return -1;
    }
    Py_DECREF(size_obj);
    PyObject *taken;
    if (PyDict_GET_SIZE(self->moved) != 0) {
        taken = Py_NewRef(Py_False);
    }
    else {
        PyObject *args[9] = {data, self->here, self->procs, self->deliver, self->down, self->limit, self->full, peer,
                             self->max_decoded};
        taken = fast_take_sends(NULL, args, 9);
        if (taken == NULL) {
            if (!PyErr_ExceptionMatches(OverBudget)) {
                return -1; /* what deliver or full raised */
            }
            PyObject *type, *value, *tb;
            PyErr_Fetch(&type, &value, &tb);
            PyErr_NormalizeException(&type, &value, &tb);
            Py_XDECREF(type);
            Py_XDECREF(tb);
            if (value == NULL) {
                return -1;
            }
            taken = value;
        }
        else if (taken == Py_None) {
            Py_DECREF(taken);
            return 0;
        }
    }
    PyObject *args[3] = {peer, data, taken};
    PyObject *r = PyObject_Vectorcall(self->apply, args, 3, NULL);
    Py_DECREF(taken);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

static PyObject *
inbox_call(Inbox *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "inbox(peer, frames)");
        return NULL;
    }
    PyObject *peer = args[0], *frames = PySequence_Fast(args[1], "inbox(peer, frames): frames must be a sequence");
    if (frames == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(frames); i++) {
        if (inbox_frame(self, peer, PySequence_Fast_GET_ITEM(frames, i)) < 0) {
            Py_DECREF(frames);
            return NULL;
        }
    }
    Py_DECREF(frames);
    Py_RETURN_NONE;
}

static PyObject *
inbox_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return inbox_call((Inbox *)self, args, nargsf, kwnames);
}

static PyObject *
inbox_get_here(Inbox *self, void *closure)
{
    return Py_NewRef(self->here);
}

static int
inbox_set_here(Inbox *self, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "the inbox's here cannot be deleted");
        return -1;
    }
    Py_SETREF(self->here, Py_NewRef(value));
    return 0;
}

static PyGetSetDef inbox_getset[] = {
    {"here", (getter)inbox_get_here, (setter)inbox_set_here, "the NodeRef object pids of this node come with"},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject Inbox_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "termite._net._fastcodec.Inbox",
    .tp_doc = "Inbox(here, procs, moved, deliver, Down, limit, full, max_decoded, got, apply): endpoint.py's "
              "_Inbox in C",
    .tp_basicsize = sizeof(Inbox),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = inbox_new,
    .tp_dealloc = (destructor)inbox_dealloc,
    .tp_traverse = (traverseproc)inbox_traverse,
    .tp_clear = (inquiry)inbox_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Inbox, vectorcall),
    .tp_getset = inbox_getset,
};

static PyMethodDef methods[] = {
    {"init", fast_init, METH_VARARGS,
     "init(Pid, Tag, NodeRef, TUPLE_MARK, node_payloads, nodes, node_payload, node, ext, ext_untrusted, "
     "timestamp, encode_py)"},
    {"encode", fast_encode, METH_O, "encode(obj) -> bytes, or None if obj needs the Python path"},
    {"encode_message", fast_encode_message, METH_O, "encode(obj), or else init's encode_py(obj)"},
    {"decode", (PyCFunction)(void (*)(void))fast_decode, METH_FASTCALL,
     "decode(data, trusted, max_decoded=None) -> obj: data holds exactly one message"},
    {"decode_from", (PyCFunction)(void (*)(void))fast_decode_from, METH_FASTCALL,
     "decode_from(data, offset, limit, max_decoded[, left]) -> (obj, end[, left]): one message of a batch "
     "(trusted)"},
    {"take_sends", (PyCFunction)(void (*)(void))fast_take_sends, METH_FASTCALL,
     "take_sends(data, here, procs, deliver, Down, limit, full, peer, max_decoded) -> None, a list, or False: "
     "a frame's plain SENDs to local processes delivered"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "termite._net._fastcodec", "termite._net.codec's common cases in C.", -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__fastcodec(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    empty_tuple = PyTuple_New(0);
    str_order = PyUnicode_InternFromString("order");
    str_mailbox = PyUnicode_InternFromString("mailbox");
    Truncated = PyErr_NewException("termite._net._fastcodec.Truncated", PyExc_ValueError, NULL);
    OverBudget = PyErr_NewException("termite._net._fastcodec.OverBudget", PyExc_ValueError, NULL);
    if (empty_tuple == NULL || str_order == NULL || str_mailbox == NULL || Truncated == NULL || OverBudget == NULL ||
        PyType_Ready(&Counter_type) < 0 || PyModule_AddObjectRef(module, "Counter", (PyObject *)&Counter_type) < 0 ||
        PyType_Ready(&Outbox_type) < 0 || PyModule_AddObjectRef(module, "Outbox", (PyObject *)&Outbox_type) < 0 ||
        PyType_Ready(&Inbox_type) < 0 || PyModule_AddObjectRef(module, "Inbox", (PyObject *)&Inbox_type) < 0 ||
        (str_task = PyUnicode_InternFromString("task")) == NULL ||
        (str_sent_to = PyUnicode_InternFromString("sent_to")) == NULL ||
        (str_node = PyUnicode_InternFromString("node")) == NULL ||
        (str_add = PyUnicode_InternFromString("add")) == NULL ||
        PyModule_AddObjectRef(module, "Truncated", Truncated) < 0 ||
        PyModule_AddObjectRef(module, "OverBudget", OverBudget) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    /* the costs, for codec.py's test that its own are the same */
    static const struct { const char *name; long value; } costs[] = {
        {"COST_ARRAY", COST_ARRAY}, {"COST_SLOT", COST_SLOT}, {"COST_MAP", COST_MAP},
        {"COST_MAP_TABLE", COST_MAP_TABLE}, {"COST_ENTRY", COST_ENTRY}, {"COST_INT", COST_INT},
        {"COST_FLOAT", COST_FLOAT}, {"COST_STR", COST_STR}, {"COST_BYTES", COST_BYTES},
        {"COST_PID", COST_PID}, {"COST_TAG", COST_TAG}, {"EXPANSION", EXPANSION},
        {"EXPANSION_FLOOR", EXPANSION_FLOOR},
    };
    for (size_t i = 0; i < sizeof costs / sizeof costs[0]; i++) {
        if (PyModule_AddIntConstant(module, costs[i].name, costs[i].value) < 0) {
            Py_DECREF(module);
            return NULL;
        }
    }
    return module;
}
