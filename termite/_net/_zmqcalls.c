/* termite._net._zmqcalls: the transport's hot libzmq calls, without pyzmq's
 * Python-level wrapping.
 *
 * A round trip between nodes reads two messages and sends two; pyzmq spends
 * more on each (a Frame object per part, an option call to learn whether
 * more parts follow, a list built per poll) than libzmq does.  These calls
 * go straight to the libzmq that pyzmq has loaded (same library, same
 * sockets: pyzmq's `Socket.underlying` is the handle passed here):
 *
 *   init(path) -> (major, minor, patch)
 *       dlopen the already loaded libzmq at `path` (RTLD_NOLOAD: never a
 *       second copy) and look up its functions.  OSError if that fails.
 *   recv(handle) -> (identity, part, ...) or None
 *       one whole message from a ROUTER without waiting, all its parts as
 *       bytes; None if there is none.
 *   send(handle, data)
 *       one part without waiting (copied, as pyzmq does for small frames).
 *   poll(handle, fd, timeout_ms) -> bits
 *       wait, without the GIL, until the socket has a message (bit 1) or
 *       the file descriptor is readable (bit 2: a read would not block,
 *       hang-up and error included), or timeout_ms passed (-1: no limit);
 *       0 when interrupted by a signal or timed out.  As zmq_poll does, but
 *       with one system call less when the socket has nothing yet: it asks
 *       the socket (ZMQ_EVENTS) before it sleeps in poll(2) on the socket's
 *       ZMQ_FD and the file descriptor, not after a first poll(2) that
 *       does not sleep.
 *   Lock() -> lock
 *       A lock as threading.Lock is for `with lock:`, lock.acquire() and
 *       lock.release(), the transport's when this module is built: a
 *       FrameSender given one takes it without a Python call.  Waiting for
 *       it lets the GIL go; it cannot be interrupted (it guards short
 *       sections: a send, the peer table).
 *   FrameSender(lock, stats, fallback) -> sender
 *       Transport.send_frame's common case (its Python twin: transport.py's
 *       _FrameSender, step for step).  sender.aim(peer, sock) makes `peer`
 *       (its pyzmq DEALER `sock`) the one aimed at, sender.forget() none;
 *       sender.peer and sender.sock say which.  sender(peer, data): if
 *       `peer` is the very object aimed at and `data` bytes shorter than
 *       4096, then with `lock` held (lock.acquire(), lock.release()) and
 *       `peer` still aimed at, one zmq_send without waiting (copied); if it
 *       went, stats.frames_out += 1 and stats.bytes_out += len(data) (two
 *       __slots__ of stats, added to at their offsets), and None.  In
 *       every other case (another peer, none aimed, a larger frame, the
 *       send failed): fallback(peer, data)'s result.
 *   Reader(transport, handle, heard, stats, reading) -> reader
 *       Transport._read_one (termite/_net/transport.py), step for step, on
 *       the ROUTER `handle`, for the loop's thread: reader() reads one
 *       message without waiting (False if there is none, else True).  A
 *       message of other than two parts, or whose identity the dict `heard`
 *       does not hold, goes whole to transport._read_unusual(message).
 *       Else, with entry = heard[identity] (a [peer, heard at] list) and
 *       now = CLOCK_MONOTONIC (time.monotonic()), and `reading` the
 *       transport's ReadClock (__slots__, written at their offsets): if
 *       now - reading.read_at > reading.gap, reading.attentive_since =
 *       now; entry[1] = reading.read_at = now; an empty part (a
 *       heartbeat) ends there; one over transport.max_frame goes to
 *       transport._too_large(peer, part); else stats.bytes_in += its size,
 *       stats.frames_in += 1 (__slots__ too), and transport.on_frames(peer,
 *       [part]).
 *       What those calls raise propagates.
 *   wait_idle(loop, handle, fd, clock, read_one, run) -> bool
 *       termite/_net/zmq_native.py's _wait_idle_py with this poll, step for
 *       step: while the asyncio loop has nothing else to do (its _ready,
 *       _stopping, its selector's two FDs) and no timer is due (clock()
 *       against _scheduled[0]._when, to within _clock_resolution), poll,
 *       and for each message call read_one() then, if it read one, run().
 *       Returns whether messages may wait whose wake-up the poll took.
 *
 * Errors raise what `error_for(errno)` (given to init's caller, see
 * termite/_net/zmq_native.py) makes: zmq.Again, zmq.ContextTerminated, ...
 * A handle must be that of an open socket: the caller never passes one it
 * has closed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stddef.h>
#include <time.h>

/* From zmq.h (stable since libzmq 4.0). */
typedef struct {
    unsigned char _[64] __attribute__((aligned(sizeof(void *))));
} zmq_msg_t;
#define ZMQ_DONTWAIT 1
#define ZMQ_POLLIN 1
#define ZMQ_FD 14
#define ZMQ_EVENTS 15

static int (*z_msg_init)(zmq_msg_t *);
static int (*z_msg_recv)(zmq_msg_t *, void *, int);
static int (*z_msg_close)(zmq_msg_t *);
static void *(*z_msg_data)(zmq_msg_t *);
static size_t (*z_msg_size)(const zmq_msg_t *);
static int (*z_msg_more)(const zmq_msg_t *);
static int (*z_send)(void *, const void *, size_t, int);
static int (*z_getsockopt)(void *, int, void *, size_t *);
static int (*z_errno)(void);
static void (*z_version)(int *, int *, int *);

static PyObject *error_for; /* errno -> the exception pyzmq would raise */

static PyObject *
raise_errno(int err)
{
    if (error_for == NULL) {
        errno = err;
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    PyObject *exc = PyObject_CallFunction(error_for, "i", err);
    if (exc != NULL) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return NULL;
}

static int
ready(void)
{
    if (z_msg_recv != NULL) {
        return 1;
    }
    PyErr_SetString(PyExc_RuntimeError, "termite._net._zmqcalls.init() has not succeeded");
    return 0;
}

static PyObject *
init(PyObject *module, PyObject *args)
{
    const char *path;
    PyObject *factory;
    if (!PyArg_ParseTuple(args, "sO:init", &path, &factory)) {
        return NULL;
    }
    void *lib = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
    if (lib == NULL) {
        PyErr_Format(PyExc_OSError, "libzmq is not loaded from %s", path);
        return NULL;
    }
#define FIND(var, name)                                                                  \
    if ((*(void **)&var = dlsym(lib, name)) == NULL) {                                   \
        PyErr_Format(PyExc_OSError, "%s has no %s", path, name);                         \
        return NULL;                                                                     \
    }
    /* (The handle is kept open on purpose: the functions live as long as pyzmq.) */
    int (*msg_recv)(zmq_msg_t *, void *, int);
    FIND(z_msg_init, "zmq_msg_init");
    FIND(msg_recv, "zmq_msg_recv");
    FIND(z_msg_close, "zmq_msg_close");
    FIND(z_msg_data, "zmq_msg_data");
    FIND(z_msg_size, "zmq_msg_size");
    FIND(z_msg_more, "zmq_msg_more");
    FIND(z_send, "zmq_send");
    FIND(z_getsockopt, "zmq_getsockopt");
    FIND(z_errno, "zmq_errno");
    FIND(z_version, "zmq_version");
#undef FIND
    int major, minor, patch;
    z_version(&major, &minor, &patch);
    if (major != 4) {
        PyErr_Format(PyExc_OSError, "libzmq %d.%d.%d: these calls are written for 4.x", major, minor, patch);
        return NULL;
    }
    Py_XSETREF(error_for, Py_NewRef(factory));
    z_msg_recv = msg_recv; /* last: ready() from now on */
    return Py_BuildValue("(iii)", major, minor, patch);
}

static void *
handle_of(PyObject *obj)
{
    void *handle = PyLong_AsVoidPtr(obj);
    if (handle == NULL && !PyErr_Occurred()) {
        PyErr_SetString(PyExc_ValueError, "a null socket handle");
    }
    return handle;
}

/* One part as bytes, or NULL with an exception; *more says whether others follow. */
static PyObject *
recv_part(void *sock, int flags, int *more, int *again)
{
    zmq_msg_t msg;
    z_msg_init(&msg);
    if (z_msg_recv(&msg, sock, flags) < 0) {
        int err = z_errno();
        z_msg_close(&msg);
        if (err == EAGAIN && again != NULL) {
            *again = 1;
            return NULL;
        }
        return raise_errno(err);
    }
    PyObject *part = PyBytes_FromStringAndSize(z_msg_data(&msg), (Py_ssize_t)z_msg_size(&msg));
    *more = z_msg_more(&msg);
    z_msg_close(&msg);
    return part;
}

/* The whole message: `identity`, `part` (if read: not NULL) and the rest, as a tuple; NULL with an exception. */
static PyObject *
whole_message(void *sock, PyObject *identity, PyObject *part, int more)
{
    PyObject *parts = PyList_New(0);
    if (parts == NULL || PyList_Append(parts, identity) < 0 || (part != NULL && PyList_Append(parts, part) < 0)) {
        Py_XDECREF(parts);
        return NULL;
    }
    while (more) {
        PyObject *next = recv_part(sock, ZMQ_DONTWAIT, &more, NULL);
        if (next == NULL || PyList_Append(parts, next) < 0) {
            Py_XDECREF(next);
            Py_DECREF(parts);
            return NULL;
        }
        Py_DECREF(next);
    }
    PyObject *message = PyList_AsTuple(parts);
    Py_DECREF(parts);
    return message;
}

static PyObject *
recv(PyObject *module, PyObject *arg)
{
    if (!ready()) {
        return NULL;
    }
    void *sock = handle_of(arg);
    if (sock == NULL) {
        return NULL;
    }
    int more = 0, again = 0;
    PyObject *identity = recv_part(sock, ZMQ_DONTWAIT, &more, &again);
    if (identity == NULL) {
        if (again) {
            Py_RETURN_NONE;
        }
        return NULL;
    }
    /* The parts of a message arrive together: once the first is here, so are
     * the others.  Most messages are an identity and one part. */
    PyObject *message = whole_message(sock, identity, NULL, more);
    Py_DECREF(identity);
    return message;
}

static PyObject *
send(PyObject *module, PyObject *args)
{
    PyObject *handle;
    Py_buffer data;
    if (!ready() || !PyArg_ParseTuple(args, "Oy*:send", &handle, &data)) {
        return NULL;
    }
    void *sock = handle_of(handle);
    int rc = sock == NULL ? 0 : z_send(sock, data.buf, (size_t)data.len, ZMQ_DONTWAIT);
    PyBuffer_Release(&data);
    if (sock == NULL) {
        return NULL;
    }
    if (rc < 0) {
        return raise_errno(z_errno());
    }
    Py_RETURN_NONE;
}

/* Whether the socket has a message now: 1 or 0, or -1 with *err set.  ZMQ_EVENTS first runs
 * the commands waiting for the socket (a pipe activated, ...), so afterwards its ZMQ_FD is
 * readable again only when another comes: then poll(2) on it may sleep. */
static int
sock_readable(void *sock, int *err)
{
    int events = 0;
    size_t size = sizeof events;
    if (z_getsockopt(sock, ZMQ_EVENTS, &events, &size) < 0) {
        *err = z_errno();
        return -1;
    }
    return (events & ZMQ_POLLIN) != 0;
}

static long
now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The bits of poll() below, without the GIL; rc -1 with *err when a call failed. */
static int
poll_nogil(void *sock, int fd, long timeout, int *err)
{
    int zfd = -1;
    size_t size = sizeof zfd;
    if (z_getsockopt(sock, ZMQ_FD, &zfd, &size) < 0) {
        *err = z_errno();
        return -1;
    }
    const short ready = POLLIN | POLLHUP | POLLERR; /* for fd: a read would not block */
    struct pollfd items[2] = {{zfd, POLLIN, 0}, {fd, POLLIN, 0}};
    int readable = sock_readable(sock, err);
    if (readable < 0) {
        return -1;
    }
    if (readable) { /* and fd, now: a socket always readable must not hide it */
        int rc = poll(items + 1, 1, 0);
        if (rc < 0) {
            *err = errno;
            return -1;
        }
        return 1 | (items[1].revents & ready ? 2 : 0);
    }
    long deadline = timeout > 0 ? now_ms() + timeout : 0;
    for (;;) {
        items[0].revents = items[1].revents = 0;
        int rc = poll(items, 2, timeout < 0 ? -1 : (int)(timeout > INT_MAX ? INT_MAX : timeout));
        if (rc < 0) {
            *err = errno;
            return -1;
        }
        int bits = items[1].revents & ready ? 2 : 0;
        if (items[0].revents) {
            readable = sock_readable(sock, err);
            if (readable < 0) {
                return -1;
            }
            bits |= readable;
        }
        if (bits || rc == 0 || timeout == 0) {
            return bits;
        }
        /* The socket's FD signalled commands, not a message: wait on, for what time is left. */
        if (timeout > 0) {
            timeout = deadline - now_ms();
            if (timeout <= 0) {
                return 0;
            }
        }
    }
}

/* Wait on the socket and the file descriptor, without the GIL: the bits of poll() below,
 * 0 when interrupted by a signal (whose handlers have run); -1 with an exception. */
static int
poll_bits(void *sock, int fd, long timeout)
{
    int bits, err = 0;
    Py_BEGIN_ALLOW_THREADS
    bits = poll_nogil(sock, fd, timeout, &err);
    Py_END_ALLOW_THREADS
    if (bits < 0) {
        if (err == EINTR) {
            return PyErr_CheckSignals() < 0 ? -1 : 0;
        }
        raise_errno(err);
        return -1;
    }
    return bits;
}

static PyObject *
poll_method(PyObject *module, PyObject *args)
{
    PyObject *handle;
    int fd;
    long timeout;
    if (!ready() || !PyArg_ParseTuple(args, "Oil:poll", &handle, &fd, &timeout)) {
        return NULL;
    }
    void *sock = handle_of(handle);
    if (sock == NULL) {
        return NULL;
    }
    int bits = poll_bits(sock, fd, timeout);
    return bits < 0 ? NULL : PyLong_FromLong(bits);
}

/* -- wait_idle: termite/_net/zmq_native.py's _wait_idle_py, in C -------------- */

static PyObject *str_debug, *str_ready, *str_scheduled, *str_resolution, *str_stopping, *str_selector,
    *str_fd_to_key, *str_when;

/* The truth of loop.<name>; -1 with an exception. */
static int
attr_true(PyObject *obj, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(obj, name);
    if (value == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    Py_DECREF(value);
    return truth;
}

/* Whether the loop has anything else to do (see _wait_idle_py); -1 with an exception. */
static int
loop_wanted(PyObject *loop, PyObject *ready_queue, PyObject *fds)
{
    int r = PyObject_IsTrue(ready_queue);
    if (r == 0) {
        r = attr_true(loop, str_stopping);
    }
    if (r == 0) {
        Py_ssize_t n = PyObject_Length(fds);
        r = n < 0 ? -1 : n != 2;
    }
    return r;
}

/* Seconds from clock() to `when`; -1 with an exception (*ok = 0). */
static double
seconds_to(PyObject *timer, PyObject *clock, int *ok)
{
    PyObject *when = PyObject_GetAttr(timer, str_when);
    PyObject *now = when == NULL ? NULL : PyObject_CallNoArgs(clock);
    double left = 0.0;
    *ok = 0;
    if (now != NULL) {
        double w = PyFloat_AsDouble(when), n = PyFloat_AsDouble(now);
        if (!PyErr_Occurred()) {
            left = w - n;
            *ok = 1;
        }
    }
    Py_XDECREF(when);
    Py_XDECREF(now);
    return left;
}

static PyObject *
wait_idle(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "wait_idle(loop, handle, self_pipe, clock, read_one, run)");
        return NULL;
    }
    if (!ready()) {
        return NULL;
    }
    PyObject *loop = args[0], *clock = args[3], *read_one = args[4], *run = args[5];
    void *sock = handle_of(args[1]);
    long fd = sock == NULL ? -1 : PyLong_AsLong(args[2]);
    if (sock == NULL || (fd == -1 && PyErr_Occurred())) {
        return NULL;
    }
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "wait_idle(): self_pipe is not a file descriptor");
        return NULL;
    }
    int debug = attr_true(loop, str_debug);
    if (debug != 0) {
        return debug < 0 ? NULL : Py_NewRef(Py_False); /* asyncio would report the calling callback as slow */
    }
    PyObject *ready_queue = PyObject_GetAttr(loop, str_ready);
    PyObject *scheduled = ready_queue == NULL ? NULL : PyObject_GetAttr(loop, str_scheduled);
    PyObject *resolution_obj = scheduled == NULL ? NULL : PyObject_GetAttr(loop, str_resolution);
    PyObject *selector = resolution_obj == NULL ? NULL : PyObject_GetAttr(loop, str_selector);
    PyObject *fds = selector == NULL ? NULL : PyObject_GetAttr(selector, str_fd_to_key);
    PyObject *result = NULL;
    double resolution = resolution_obj == NULL ? -1.0 : PyFloat_AsDouble(resolution_obj);
    if (fds == NULL || PyErr_Occurred()) {
        goto done;
    }
    if (!PyList_Check(scheduled)) {
        PyErr_SetString(PyExc_TypeError, "wait_idle(): the loop's _scheduled is not a list");
        goto done;
    }
    int wanted = loop_wanted(loop, ready_queue, fds);
    if (wanted != 0) {
        result = wanted < 0 ? NULL : Py_NewRef(Py_False);
        goto done;
    }
    int pending = 0;
    for (;;) {
        long timeout_ms = -1;
        if (PyList_GET_SIZE(scheduled) > 0) {
            int ok;
            double timeout = seconds_to(PyList_GET_ITEM(scheduled, 0), clock, &ok);
            if (!ok) {
                goto done;
            }
            if (timeout <= resolution) {
                break;
            }
            timeout_ms = timeout < 3600.0 ? (long)(timeout * 1000) + 1 : 3600000; /* ms, in a C int */
        }
        int bits = poll_bits(sock, (int)fd, timeout_ms);
        if (bits < 0) {
            goto done;
        }
        if (bits != 1) { /* 1: the socket only */
            if (bits) { /* the self-pipe, with the socket or without */
                pending = bits == 3;
                break;
            }
            pending = 0;
            continue; /* timed out (or a signal came): the timer is due */
        }
        PyObject *got = PyObject_CallNoArgs(read_one);
        int truth = got == NULL ? -1 : PyObject_IsTrue(got);
        Py_XDECREF(got);
        if (truth < 0) {
            goto done;
        }
        if (!truth) {
            pending = 0;
            continue;
        }
        PyObject *r = PyObject_CallNoArgs(run);
        if (r == NULL) {
            goto done;
        }
        Py_DECREF(r);
        pending = 1;
        wanted = loop_wanted(loop, ready_queue, fds);
        if (wanted < 0) {
            goto done;
        }
        if (wanted) {
            break;
        }
    }
    result = Py_NewRef(pending ? Py_True : Py_False);
done:
    Py_XDECREF(ready_queue);
    Py_XDECREF(scheduled);
    Py_XDECREF(resolution_obj);
    Py_XDECREF(selector);
    Py_XDECREF(fds);
    return result;
}

/* -- Lock: the transport's lock, which FrameSender takes without a Python call -- */

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    int held; /* written with the GIL held, right after taking and right before letting go */
} Lock;

static PyTypeObject Lock_type;

/* Take the lock; the GIL is let go only while another thread holds it. */
static void
lock_take(Lock *self)
{
    if (!PyThread_acquire_lock(self->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(self->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
    self->held = 1;
}

/* Let the lock go; 0, or -1 with threading.Lock's RuntimeError if nobody held it (letting an unheld lock
 * go would let the next two takers in at once). */
static int
lock_give(Lock *self)
{
    if (!self->held) {
        PyErr_SetString(PyExc_RuntimeError, "release unlocked lock");
        return -1;
    }
    self->held = 0;
    PyThread_release_lock(self->lock);
    return 0;
}

static PyObject *
lock_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if (PyTuple_GET_SIZE(args) != 0 || (kwds != NULL && PyDict_GET_SIZE(kwds) != 0)) {
        PyErr_SetString(PyExc_TypeError, "Lock() takes no arguments");
        return NULL;
    }
    Lock *self = (Lock *)type->tp_alloc(type, 0);
    if (self != NULL && (self->lock = PyThread_allocate_lock()) == NULL) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    return (PyObject *)self;
}

static void
lock_dealloc(Lock *self)
{
    if (self->lock != NULL) {
        PyThread_free_lock(self->lock);
    }
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
lock_acquire(Lock *self, PyObject *Py_UNUSED(ignored))
{
    lock_take(self);
    Py_RETURN_TRUE;
}

static PyObject *
lock_release(Lock *self, PyObject *Py_UNUSED(ignored))
{
    return lock_give(self) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
lock_exit(Lock *self, PyObject *const *args, Py_ssize_t nargs)
{
    return lock_give(self) < 0 ? NULL : Py_NewRef(Py_None);
}

static PyObject *
lock_locked(Lock *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->held);
}

static PyMethodDef lock_methods[] = {
    {"acquire", (PyCFunction)lock_acquire, METH_NOARGS, "acquire() -> True: take the lock, waiting for it"},
    {"release", (PyCFunction)lock_release, METH_NOARGS, "release(): let it go (its holder only)"},
    {"locked", (PyCFunction)lock_locked, METH_NOARGS, "locked() -> whether someone holds it"},
    {"__enter__", (PyCFunction)lock_acquire, METH_NOARGS, "take the lock"},
    {"__exit__", (PyCFunction)(void (*)(void))lock_exit, METH_FASTCALL, "let it go"},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Lock_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "termite._net._zmqcalls.Lock",
    .tp_doc = "Lock(): a threading.Lock for `with` and acquire()/release() that FrameSender takes in C",
    .tp_basicsize = sizeof(Lock),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = lock_new,
    .tp_dealloc = (destructor)lock_dealloc,
    .tp_methods = lock_methods,
};

/* -- FrameSender: Transport.send_frame's common case ----------------------- */

#define SMALL_FRAME 4096 /* shorter frames are copied; longer ones go by the fallback */

/* Where the __slots__ slot `name` of `obj`'s class lives in it; -1 with TypeError if it is none. */
static Py_ssize_t
slot_of(PyObject *obj, const char *name, const char *who)
{
    PyObject *descr = PyObject_GetAttrString((PyObject *)Py_TYPE(obj), name);
    Py_ssize_t offset = -1;
    if (descr != NULL && Py_TYPE(descr) == &PyMemberDescr_Type &&
        ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX) {
        offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    }
    Py_XDECREF(descr);
    if (offset < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: %R.%s must be a __slots__ slot", who, Py_TYPE(obj), name);
    }
    return offset;
}

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* obj.<the slot at offset> += n (a counter of stats): 0, or -1 with an exception. */
static int
add_to(PyObject *obj, Py_ssize_t offset, Py_ssize_t n)
{
    PyObject *old = SLOT(obj, offset);
    if (old == NULL) {
        PyErr_Format(PyExc_AttributeError, "a counter of %R is not set", Py_TYPE(obj));
        return -1;
    }
    PyObject *new = NULL;
    if (PyLong_CheckExact(old)) { /* the common case: no int object for n, no generic addition */
        int overflow = 0;
        long long value = PyLong_AsLongLongAndOverflow(old, &overflow);
        if (!overflow && !(value == -1 && PyErr_Occurred()) && value <= LLONG_MAX - n) {
            new = PyLong_FromLongLong(value + n);
            if (new == NULL) {
                return -1;
            }
        }
        PyErr_Clear();
    }
    if (new == NULL) {
        PyObject *step = PyLong_FromSsize_t(n);
        new = step == NULL ? NULL : PyNumber_Add(old, step);
        Py_XDECREF(step);
        if (new == NULL) {
            return -1;
        }
    }
    SLOT(obj, offset) = new;
    Py_DECREF(old);
    return 0;
}

typedef struct {
    PyObject_HEAD
    PyObject *lock, *stats, *fallback;
    PyObject *acquire, *release;       /* lock's, bound */
    Py_ssize_t frames_out, bytes_out;  /* where those counters of stats are */
    PyObject *peer; /* aimed at, or None */
    PyObject *sock; /* its DEALER, or None */
    void *handle;   /* that DEALER's, or NULL */
    vectorcallfunc vectorcall;
} FrameSender;

static PyObject *str_acquire, *str_release, *str_underlying;

static int
sender_init(FrameSender *self, PyObject *args, PyObject *kwds)
{
    PyObject *lock, *stats, *fallback;
    if (!PyArg_ParseTuple(args, "OOO:FrameSender", &lock, &stats, &fallback)) {
        return -1;
    }
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "FrameSender(lock, stats, fallback): fallback must be callable");
        return -1;
    }
    /* The counters' slots, found once: no attribute lookup per frame. */
    Py_ssize_t frames_out = slot_of(stats, "frames_out", "FrameSender");
    Py_ssize_t bytes_out = frames_out < 0 ? -1 : slot_of(stats, "bytes_out", "FrameSender");
    PyObject *acquire = bytes_out < 0 ? NULL : PyObject_GetAttr(lock, str_acquire);
    PyObject *release = acquire == NULL ? NULL : PyObject_GetAttr(lock, str_release);
    if (release == NULL) {
        Py_XDECREF(acquire);
        return -1;
    }
    Py_XSETREF(self->acquire, acquire);
    Py_XSETREF(self->release, release);
    self->frames_out = frames_out;
    self->bytes_out = bytes_out;
    Py_XSETREF(self->lock, Py_NewRef(lock));
    Py_XSETREF(self->stats, Py_NewRef(stats));
    Py_XSETREF(self->fallback, Py_NewRef(fallback));
    Py_XSETREF(self->peer, Py_NewRef(Py_None));
    Py_XSETREF(self->sock, Py_NewRef(Py_None));
    self->handle = NULL;
    return 0;
}

static int
sender_traverse(FrameSender *self, visitproc visit, void *arg)
{
    Py_VISIT(self->lock);
    Py_VISIT(self->acquire);
    Py_VISIT(self->release);
    Py_VISIT(self->stats);
    Py_VISIT(self->fallback);
    Py_VISIT(self->peer);
    Py_VISIT(self->sock);
    return 0;
}

static int
sender_clear(FrameSender *self)
{
    Py_CLEAR(self->lock);
    Py_CLEAR(self->acquire);
    Py_CLEAR(self->release);
    Py_CLEAR(self->stats);
    Py_CLEAR(self->fallback);
    Py_CLEAR(self->peer);
    Py_CLEAR(self->sock);
    self->handle = NULL;
    return 0;
}

static void
sender_dealloc(FrameSender *self)
{
    PyObject_GC_UnTrack(self);
    sender_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
sender_aim(FrameSender *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "aim(peer, sock)");
        return NULL;
    }
    PyObject *underlying = PyObject_GetAttr(args[1], str_underlying);
    void *handle = underlying == NULL ? NULL : handle_of(underlying);
    Py_XDECREF(underlying);
    if (handle == NULL) {
        return NULL;
    }
    Py_SETREF(self->peer, Py_NewRef(args[0]));
    Py_SETREF(self->sock, Py_NewRef(args[1]));
    self->handle = handle;
    Py_RETURN_NONE;
}

static PyObject *
sender_forget(FrameSender *self, PyObject *unused)
{
    Py_SETREF(self->peer, Py_NewRef(Py_None));
    Py_SETREF(self->sock, Py_NewRef(Py_None));
    self->handle = NULL;
    Py_RETURN_NONE;
}

static PyObject *
sender_call(FrameSender *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "FrameSender(peer, data): two positional arguments");
        return NULL;
    }
    PyObject *peer = args[0], *data = args[1];
    if (peer == self->peer && self->handle != NULL && PyBytes_CheckExact(data) &&
        PyBytes_GET_SIZE(data) < SMALL_FRAME && ready()) {
        /* the sender is not cleared while the lock is awaited */
        PyObject *lock = Py_NewRef(self->lock), *release = Py_NewRef(self->release);
        int ours = Py_TYPE(lock) == &Lock_type; /* a Lock of this module: taken without a call */
        PyObject *r = NULL;
        if (ours) {
            lock_take((Lock *)lock);
        }
        else if ((r = PyObject_CallNoArgs(self->acquire)) == NULL) {
            Py_DECREF(lock);
            Py_DECREF(release);
            return NULL;
        }
        Py_XDECREF(r);
        Py_ssize_t size = PyBytes_GET_SIZE(data);
        int sent = peer == self->peer && self->handle != NULL &&
                   z_send(self->handle, PyBytes_AS_STRING(data), (size_t)size, ZMQ_DONTWAIT) >= 0;
        if (ours) {
            r = lock_give((Lock *)lock) < 0 ? NULL : Py_NewRef(Py_None);
        }
        else {
            r = PyObject_CallNoArgs(release);
        }
        Py_DECREF(lock);
        Py_DECREF(release);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
        if (sent) {
            if (add_to(self->stats, self->frames_out, 1) < 0 || add_to(self->stats, self->bytes_out, size) < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
    }
    return PyObject_Vectorcall(self->fallback, args, 2, NULL);
}

static PyObject *
sender_vectorcall(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return sender_call((FrameSender *)self, args, nargsf, kwnames);
}

static PyObject *
sender_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    FrameSender *self = (FrameSender *)type->tp_alloc(type, 0);
    if (self != NULL) {
        self->vectorcall = sender_vectorcall;
    }
    return (PyObject *)self;
}

static PyMethodDef sender_methods[] = {
    {"aim", (PyCFunction)(void (*)(void))sender_aim, METH_FASTCALL, "aim(peer, sock): send to peer by sock"},
    {"forget", (PyCFunction)sender_forget, METH_NOARGS, "forget(): aim at no peer"},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef sender_members[] = {
    {"peer", T_OBJECT, offsetof(FrameSender, peer), READONLY, "the peer aimed at, or None"},
    {"sock", T_OBJECT, offsetof(FrameSender, sock), READONLY, "its DEALER, or None"},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject FrameSender_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "termite._net._zmqcalls.FrameSender",
    .tp_doc = "FrameSender(lock, stats, fallback): Transport.send_frame's common case (see the module's doc)",
    .tp_basicsize = sizeof(FrameSender),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(FrameSender, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = sender_new,
    .tp_init = (initproc)sender_init,
    .tp_dealloc = (destructor)sender_dealloc,
    .tp_traverse = (traverseproc)sender_traverse,
    .tp_clear = (inquiry)sender_clear,
    .tp_methods = sender_methods,
    .tp_members = sender_members,
};

/* -- Reader: Transport._read_one on the loop's thread ----------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *transport, *heard, *stats;
    Py_ssize_t frames_in, bytes_in; /* where those counters of stats are */
    PyObject *reading;              /* transport._reading, a transport.ReadClock */
    Py_ssize_t read_at, attentive_since, gap; /* where its slots are */
    void *handle;
    vectorcallfunc vectorcall;
} Reader;


static PyObject *str_max_frame, *str_on_frames, *str_read_unusual,
    *str_too_large;

/* transport.<name>(*args) -> True; NULL with an exception. */
static PyObject *
hand_to(PyObject *transport, PyObject *name, PyObject *a, PyObject *b)
{
    PyObject *args[3] = {transport, a, b};
    PyObject *r = PyObject_VectorcallMethod(name, args, (b == NULL ? 2 : 3) | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_TRUE;
}

static PyObject *
reader_read(Reader *self)
{
    if (!ready()) {
        return NULL;
    }
    int more = 0, again = 0;
    PyObject *identity = recv_part(self->handle, ZMQ_DONTWAIT, &more, &again), *part = NULL, *result = NULL;
    if (identity == NULL) {
        if (again) {
            Py_RETURN_FALSE;
        }
        return NULL;
    }
    if (more) { /* a ROUTER message has at least one part after the id */
        part = recv_part(self->handle, ZMQ_DONTWAIT, &more, NULL);
        if (part == NULL) {
            goto done;
        }
    }
    PyObject *entry = more || part == NULL ? NULL : PyDict_GetItemWithError(self->heard, identity); /* borrowed */
    if (entry == NULL) {
        if (PyErr_Occurred()) {
            goto done;
        }
        PyObject *message = whole_message(self->handle, identity, part, more);
        if (message != NULL) {
            result = hand_to(self->transport, str_read_unusual, message, NULL);
            Py_DECREF(message);
        }
        goto done;
    }
    Py_INCREF(entry);
    PyObject *transport = self->transport, *now = NULL, *peer = NULL;
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    double t = (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
    /* transport._reading: _attend, inline */
    PyObject *reading = self->reading, *read_at = SLOT(reading, self->read_at), *gap = SLOT(reading, self->gap);
    if (read_at == NULL || gap == NULL) {
        PyErr_SetString(PyExc_AttributeError, "transport._reading has no read_at or gap");
        goto entry_done;
    }
    double last = PyFloat_AsDouble(read_at), longest = PyFloat_AsDouble(gap);
    if (PyErr_Occurred() || (now = PyFloat_FromDouble(t)) == NULL || PySequence_SetItem(entry, 1, now) < 0) {
        goto entry_done;
    }
    if (t - last > longest) {
        Py_XSETREF(SLOT(reading, self->attentive_since), Py_NewRef(now));
    }
    Py_XSETREF(SLOT(reading, self->read_at), Py_NewRef(now));
    Py_ssize_t size = PyBytes_GET_SIZE(part);
    if (size == 0) { /* a heartbeat */
        result = Py_NewRef(Py_True);
        goto entry_done;
    }
    if ((peer = PySequence_GetItem(entry, 0)) == NULL) {
        goto entry_done;
    }
    PyObject *limit = PyObject_GetAttr(transport, str_max_frame);
    PyObject *size_obj = limit == NULL ? NULL : PyLong_FromSsize_t(size);
    int over = size_obj == NULL ? -1 : PyObject_RichCompareBool(size_obj, limit, Py_GT);
    Py_XDECREF(limit);
    Py_XDECREF(size_obj);
    if (over < 0) {
        goto entry_done;
    }
    if (over) {
        result = hand_to(transport, str_too_large, peer, part);
        goto entry_done;
    }
    if (add_to(self->stats, self->bytes_in, size) < 0 || add_to(self->stats, self->frames_in, 1) < 0) {
        goto entry_done;
    }
    PyObject *frames = PyList_New(1);
    if (frames == NULL) {
        goto entry_done;
    }
    PyList_SET_ITEM(frames, 0, Py_NewRef(part));
    PyObject *on_frames = PyObject_GetAttr(transport, str_on_frames);
    if (on_frames != NULL) {
        PyObject *args[2] = {peer, frames};
        PyObject *r = PyObject_Vectorcall(on_frames, args, 2, NULL);
        Py_DECREF(on_frames);
        if (r != NULL) {
            Py_DECREF(r);
            result = Py_NewRef(Py_True);
        }
    }
    Py_DECREF(frames);
entry_done:
    Py_DECREF(entry);
    Py_XDECREF(now);
    Py_XDECREF(peer);
done:
    Py_DECREF(identity);
    Py_XDECREF(part);
    return result;
}

static PyObject *
reader_call(PyObject *obj, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (PyVectorcall_NARGS(nargsf) != 0 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames) != 0)) {
        PyErr_SetString(PyExc_TypeError, "a Reader takes no arguments");
        return NULL;
    }
    return reader_read((Reader *)obj);
}

static PyObject *
reader_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    PyObject *transport, *handle_obj, *heard, *stats, *reading;
    if ((kwds != NULL && PyDict_GET_SIZE(kwds) != 0) ||
        !PyArg_ParseTuple(args, "OOO!OO:Reader", &transport, &handle_obj, &PyDict_Type, &heard, &stats, &reading)) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "Reader(transport, handle, heard, stats, reading) takes no keywords");
        }
        return NULL;
    }
    void *handle = handle_of(handle_obj);
    Py_ssize_t read_at = handle == NULL ? -1 : slot_of(reading, "read_at", "Reader");
    Py_ssize_t attentive_since = read_at < 0 ? -1 : slot_of(reading, "attentive_since", "Reader");
    Py_ssize_t gap = attentive_since < 0 ? -1 : slot_of(reading, "gap", "Reader");
    if (gap < 0) {
        return NULL;
    }
    Py_ssize_t frames_in = slot_of(stats, "frames_in", "Reader");
    Py_ssize_t bytes_in = frames_in < 0 ? -1 : slot_of(stats, "bytes_in", "Reader");
    Reader *self = bytes_in < 0 ? NULL : (Reader *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->transport = Py_NewRef(transport);
    self->heard = Py_NewRef(heard);
    self->stats = Py_NewRef(stats);
    self->frames_in = frames_in;
    self->bytes_in = bytes_in;
    self->reading = Py_NewRef(reading);
    self->read_at = read_at;
    self->attentive_since = attentive_since;
    self->gap = gap;
    self->handle = handle;
    self->vectorcall = reader_call;
    return (PyObject *)self;
}

static int
reader_traverse(Reader *self, visitproc visit, void *arg)
{
    Py_VISIT(self->transport);
    Py_VISIT(self->heard);
    Py_VISIT(self->stats);
    Py_VISIT(self->reading);
    return 0;
}

static int
reader_clear(Reader *self)
{
    Py_CLEAR(self->transport);
    Py_CLEAR(self->heard);
    Py_CLEAR(self->stats);
    Py_CLEAR(self->reading);
    return 0;
}

static void
reader_dealloc(Reader *self)
{
    PyObject_GC_UnTrack(self);
    reader_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyTypeObject Reader_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "termite._net._zmqcalls.Reader",
    .tp_doc = "Reader(transport, handle, heard, stats, reading): Transport._read_one in C (see the module's doc)",
    .tp_basicsize = sizeof(Reader),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(Reader, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_new = reader_new,
    .tp_dealloc = (destructor)reader_dealloc,
    .tp_traverse = (traverseproc)reader_traverse,
    .tp_clear = (inquiry)reader_clear,
};

static PyMethodDef methods[] = {
    {"init", init, METH_VARARGS, "init(libzmq_path, error_for) -> (major, minor, patch)"},
    {"recv", recv, METH_O, "recv(handle) -> (identity, part, ...) or None, without waiting"},
    {"send", send, METH_VARARGS, "send(handle, data): one part, without waiting"},
    {"poll", poll_method, METH_VARARGS, "poll(handle, fd, timeout_ms) -> 1 (socket) | 2 (fd), or 0"},
    {"wait_idle", (PyCFunction)(void (*)(void))wait_idle, METH_FASTCALL,
     "wait_idle(loop, handle, self_pipe, clock, read_one, run) -> bool: termite._net.zmq_native's, in C"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "termite._net._zmqcalls", "The transport's hot libzmq calls.", -1, methods,
};

PyMODINIT_FUNC
PyInit__zmqcalls(void)
{
    static const struct { PyObject **var; const char *text; } names[] = {
        {&str_debug, "_debug"}, {&str_ready, "_ready"}, {&str_scheduled, "_scheduled"},
        {&str_resolution, "_clock_resolution"}, {&str_stopping, "_stopping"}, {&str_selector, "_selector"},
        {&str_fd_to_key, "_fd_to_key"}, {&str_when, "_when"}, {&str_acquire, "acquire"}, {&str_release, "release"},
        {&str_underlying, "underlying"},
        {&str_max_frame, "max_frame"}, {&str_on_frames, "on_frames"}, {&str_read_unusual, "_read_unusual"},
        {&str_too_large, "_too_large"},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        if ((*names[i].var = PyUnicode_InternFromString(names[i].text)) == NULL) {
            return NULL;
        }
    }
    if (PyType_Ready(&Lock_type) < 0 || PyType_Ready(&FrameSender_type) < 0 || PyType_Ready(&Reader_type) < 0) {
        return NULL;
    }
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(module, "Lock", (PyObject *)&Lock_type) < 0 ||
        PyModule_AddObjectRef(module, "FrameSender", (PyObject *)&FrameSender_type) < 0 ||
        PyModule_AddObjectRef(module, "Reader", (PyObject *)&Reader_type) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
