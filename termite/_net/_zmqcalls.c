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
 *       the file descriptor is readable (bit 2), or timeout_ms passed (-1:
 *       no limit); 0 when interrupted by a signal or timed out.
 *
 * Errors raise what `error_for(errno)` (given to init's caller, see
 * termite/_net/zmq_native.py) makes: zmq.Again, zmq.ContextTerminated, ...
 * A handle must be that of an open socket: the caller never passes one it
 * has closed.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>

/* From zmq.h (stable since libzmq 4.0). */
typedef struct {
    unsigned char _[64] __attribute__((aligned(sizeof(void *))));
} zmq_msg_t;
typedef struct {
    void *socket;
    int fd;
    short events;
    short revents;
} zmq_pollitem_t;
#define ZMQ_DONTWAIT 1
#define ZMQ_POLLIN 1

static int (*z_msg_init)(zmq_msg_t *);
static int (*z_msg_recv)(zmq_msg_t *, void *, int);
static int (*z_msg_close)(zmq_msg_t *);
static void *(*z_msg_data)(zmq_msg_t *);
static size_t (*z_msg_size)(const zmq_msg_t *);
static int (*z_msg_more)(const zmq_msg_t *);
static int (*z_send)(void *, const void *, size_t, int);
static int (*z_poll)(zmq_pollitem_t *, int, long);
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
    FIND(z_poll, "zmq_poll");
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
    PyObject *parts = PyList_New(1);
    if (parts == NULL) {
        Py_DECREF(identity);
        return NULL;
    }
    PyList_SET_ITEM(parts, 0, identity);
    while (more) {
        PyObject *part = recv_part(sock, ZMQ_DONTWAIT, &more, NULL);
        if (part == NULL || PyList_Append(parts, part) < 0) {
            Py_XDECREF(part);
            Py_DECREF(parts);
            return NULL;
        }
        Py_DECREF(part);
    }
    PyObject *message = PyList_AsTuple(parts);
    Py_DECREF(parts);
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

static PyObject *
poll(PyObject *module, PyObject *args)
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
    zmq_pollitem_t items[2] = {{sock, 0, ZMQ_POLLIN, 0}, {NULL, fd, ZMQ_POLLIN, 0}};
    int rc, err = 0;
    Py_BEGIN_ALLOW_THREADS
    rc = z_poll(items, 2, timeout);
    if (rc < 0) {
        err = z_errno();
    }
    Py_END_ALLOW_THREADS
    if (rc < 0) {
        if (err == EINTR) {
            return PyErr_CheckSignals() < 0 ? NULL : PyLong_FromLong(0);
        }
        return raise_errno(err);
    }
    return PyLong_FromLong((items[0].revents & ZMQ_POLLIN ? 1 : 0) | (items[1].revents & ZMQ_POLLIN ? 2 : 0));
}

static PyMethodDef methods[] = {
    {"init", init, METH_VARARGS, "init(libzmq_path, error_for) -> (major, minor, patch)"},
    {"recv", recv, METH_O, "recv(handle) -> (identity, part, ...) or None, without waiting"},
    {"send", send, METH_VARARGS, "send(handle, data): one part, without waiting"},
    {"poll", poll, METH_VARARGS, "poll(handle, fd, timeout_ms) -> 1 (socket) | 2 (fd), or 0"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "termite._net._zmqcalls", "The transport's hot libzmq calls.", -1, methods,
};

PyMODINIT_FUNC
PyInit__zmqcalls(void)
{
    return PyModule_Create(&module_def);
}
