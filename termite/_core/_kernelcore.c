/* termite._core._kernelcore: the kernel's hot path, in C.
 *
 * termite/_core/kernel.py, mailbox.py, spawn.py and call.py are the
 * reference: this module does what they do for the steps every message
 * takes, with the same observable behaviour (the same wake-ups, in the same
 * order, the same values, the same errors and messages), and hands
 * everything else back to them.  TERMITE_KERNEL=python runs the Python
 * kernel instead; tests/test_kernel_parity.py runs the same programs on both
 * and compares what they observe, and the kernel-sensitive test files run on
 * both.
 *
 * What it owns
 *   (and counts: a task's woken, handed, queued and sent, where kernel.py and
 *   mailbox.py count them; a traced process's events go to mailbox's
 *   _trace_sent and _trace_received, where the Python path calls them)
 *   RunQueue     the ready queue and the yielded queue: a ring of tasks with
 *                deque's append, popleft, extend, clear, len, in, iteration.
 *   Task         the kernel's task, with the fields every hop reads in the C
 *                struct: coro, value, waiting, foreign, kernel, held, and the
 *                process's mailbox and wait_for (process.Process adds its
 *                other fields as Python slots).  `kernel` is a KernelCore.
 *   KernelCore   the base of kernel.Kernel: its ready and yielded queues,
 *                `fairness` and `steps`, `_run()`, a turn, and `_run_ready()`,
 *                its phase 1 (kernel._KernelCore's in Python): resume ready tasks
 *                with PyIter_Send, at most BUDGET of them for TURN_SECONDS,
 *                and act on the trap each yields.  Also the timers of
 *                receives and calls, `add_timer` and `cancel_timer`
 *                (kernel._KernelCore's): the heap `timers`, `_clock`,
 *                `_stale_timers` and `_armed_for` are its fields, which
 *                Kernel's __init__, _arm_timer and _on_timer use as before;
 *                the entries' seq is a counter of its own.  The hooks a turn
 *                calls (`on_exit`, `after_turn`, `trap_handlers`, `_stashed`)
 *                are its fields too, set by Kernel's __init__ and its users,
 *                and so are `_asyncio_tasks` and `_asyncio_loop`: each step
 *                makes its task asyncio's current task of that loop (the
 *                dict's entry), and the turn's end puts back the one before;
 *                BUDGET and TURN_SECONDS are read from the class once, when
 *                the kernel is made.
 *   local        which task runs and which kernel is attached, per thread
 *                (kernel._local, a threading.local in Python).
 *   deliver(proc, msg)                       mailbox.deliver, all of it.
 *   send(dest, msg)                          for a pid of a live process of
 *                                            this thread's kernel.
 *   receive(), receive(timeout=t)            mailbox.receive's two fast
 *                                            paths; an awaitable with am_send
 *                                            in place of the generator.
 *   receive(*patterns[, timeout=t])          its general path, for patterns
 *                                            of ANY, classes, None/True/False,
 *                                            str, int, bytes, Pid and Tag
 *                                            values, and tuples of these (a
 *                                            tag, a tuple's head, a final
 *                                            ...): patterns.py's tests, run
 *                                            in C (see pattern_match).
 *   spawn(fn, *args)                         for a coroutine function and no
 *                                            keyword: process_body, Pid(),
 *                                            Process() and spawn_in's two
 *                                            lines, field by field.
 *   process_exited(proc, value, None)        links.process_exited for a
 *                                            process that returned with no
 *                                            links, monitors (either way),
 *                                            callers, name or waiter.
 *   call(pid, msg[, timeout])                call.call for a pid, no default
 *                                            and a timeout of None or > 0:
 *                                            make_tag, _watch_call (the Call
 *                                            object itself is the entry in
 *                                            the target's `callers`, with
 *                                            links.PendingCall's tag, watcher
 *                                            and target), the send,
 *                                            _await_reply's wait,
 *                                            _unwatch_call or _drop_call.
 *   current_task()
 *   Tag                                      ids.Tag while this kernel runs
 *                                            (ids.PythonTag is its reference),
 *                                            with spares kept; so are spent
 *                                            Call objects.
 *
 * What it calls back into (all Python, none of it on the path of a message)
 *   kernel._signal(task, signal) for a Signal wake-up value (throw or close);
 *   kernel.trap_handlers[type(trap)] and kernel._await_foreign for traps
 *   other than PARK, RESCHEDULE and NEXT_TURN (None); kernel.on_exit (with
 *   the exception as sys.exc_info(), as the Python kernel's `except` has it)
 *   and kernel.after_turn; at a turn's end kernel._burst_over after a spawn
 *   burst, kernel.kick when tasks are left ready, kernel._arm_timer when no
 *   loop timer is armed and timers wait (and when a timer is due before the
 *   loop's), kernel._rebuild_timers when cancelled ones are most of the heap; each function's
 *   Python twin for what it does not do itself: mailbox's send for any other
 *   destination (a pid of another node goes from here straight to
 *   table.remote.send, as mailbox._send_slow's first case does, unless the
 *   sender is traced or the node holds guests); mailbox's receive for where= and default=, and for
 *   timeout=t when messages wait or t is not > 0 (a receive object then
 *   drives that generator, started at the step it would have started);
 *   mailbox's receive also for any other pattern (a namedtuple, list,
 *   dict, function, where(), a float) and a timeout that is not an int or
 *   float >= 0, which it refuses as Python does;
 *   spawn.py's spawn; call.py's call, _monitor_for_call (a pid not alive
 *   here, or a guest whose pid object does not point at it: the monitor is
 *   written at once there), _await_reply (a reply already in the mailbox: a call to oneself),
 *   _outcome (anything but a reply: Down, Refused, a timeout), links'
 *   _undo_call_monitor (a monitor of another node, or one fired); links.process_exited for every other end;
 *   mailbox._timeout_result to raise Timeout.
 *
 * Invariants
 *   - A task's `waiting` says where it is, as kernel.py says: None running
 *     or queued; a wait state (process.py's sentinels) while parked; every
 *     wake-up goes through the ready queue with `value` set.
 *   - A mailbox is None or a collections.deque.
 *   - Pid, Process and Tag are what ids.py and process.py define: plain
 *     __slots__ classes (Tag a tuple with no constructor of its own: this
 *     module's own while it runs), whose __init__ only stores its arguments
 *     (and process._PROCESS_DEFAULTS, which init_process() is given); init_*
 *     refuses classes that are not.
 *   - Nothing here runs user code the Python kernel would not run at the same
 *     point: the process's own coroutine, == between a reply's tag and a
 *     Down's ref, the hooks above.
 *   - One thread runs a kernel; the GIL is held throughout.
 *
 * What differs, and only there: receive() and call() return awaitable objects
 * (with send, throw and close) instead of a generator and a coroutine; these
 * functions are FastFunction objects that carry the Python function's name,
 * docstring and signature (__wrapped__) and pickle by reference.
 *
 * The public C API, plus PyMemberDescrObject to find __slots__ slots (as
 * _fastcodec does for Pid) and PyCodeObject.co_flags; builds on any CPython
 * >= 3.11.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

/* -- what init_kernel() and init_mailbox() get ------------------------------ */

static PyObject *PARK, *RESCHEDULE, *TIMED_OUT;
static PyTypeObject *Signal_type;
static PyObject *ANY_MESSAGE, *SCAN, *REPLY, *DELIVERED, *DEAD;
static PyTypeObject *Tag_type, *Down_type, *Refused_type, *Pid_type;
static Py_ssize_t pid_proc_offset = -1; /* where Pid._proc lives in a Pid */
static PyObject *deque_type, *deque_append, *deque_popleft;
static PyObject *py_send, *py_receive, *timeout_result, *NotInProcess, *NO_DEFAULT;
static PyObject *py_trace_sent, *py_trace_received; /* mailbox._trace_sent, _trace_received */
static long FAIRNESS = 64;
static Py_ssize_t SPAWN_BURST = 4096; /* kernel.SPAWN_BURST, from init_kernel */
static int mailbox_ready;

static PyObject *s_BUDGET, *s_TURN_SECONDS, *s_signal, *s_await_foreign, *s_timeout, *s_value, *s_throw, *s_close,
    *s_qualname, *kw_timeout, *zero;

/* Which kernel is attached on this thread (a strong ref to a KernelCore, or NULL).  The task
 * running now is that kernel's `task` (running_task()): a field, not a thread-local of its own,
 * as in kernel.py. */
static _Thread_local PyObject *cur_kernel;

static double
now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts); /* time.perf_counter's clock on Linux */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* -- RunQueue --------------------------------------------------------------- */

#define RQ_INITIAL 64
#define RQ_SHRINK 4096 /* an empty queue this big gives its memory back */

typedef struct {
    PyObject_HEAD
    PyObject **items; /* a ring: items[(head + i) & mask] for i < len */
    Py_ssize_t head, len, mask;
} RunQueue;

static PyTypeObject RunQueue_Type;

static int
rq_resize(RunQueue *q, Py_ssize_t cap)
{
    PyObject **items = PyMem_Malloc(cap * sizeof(PyObject *));
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < q->len; i++) {
        items[i] = q->items[(q->head + i) & q->mask];
    }
    PyMem_Free(q->items);
    q->items = items;
    q->head = 0;
    q->mask = cap - 1;
    return 0;
}

/* Append a new reference to o. */
static inline int
rq_push(RunQueue *q, PyObject *o)
{
    if (q->len > q->mask && rq_resize(q, (q->mask + 1) * 2) < 0) {
        return -1;
    }
    Py_INCREF(o);
    q->items[(q->head + q->len) & q->mask] = o;
    q->len++;
    return 0;
}

/* The first item, whose reference passes to the caller; q->len > 0. */
static inline PyObject *
rq_pop(RunQueue *q)
{
    PyObject *o = q->items[q->head];
    q->head = (q->head + 1) & q->mask;
    if (--q->len == 0) {
        q->head = 0;
        if (q->mask >= RQ_SHRINK) {
            PyObject *err_type, *err_value, *err_tb;
            PyErr_Fetch(&err_type, &err_value, &err_tb);
            if (rq_resize(q, RQ_INITIAL) < 0) {
                PyErr_Clear(); /* keep the big ring */
            }
            PyErr_Restore(err_type, err_value, err_tb);
        }
    }
    return o;
}

static RunQueue *
rq_new(void)
{
    RunQueue *q = PyObject_GC_New(RunQueue, &RunQueue_Type);
    if (q == NULL) {
        return NULL;
    }
    q->head = q->len = 0;
    q->mask = RQ_INITIAL - 1;
    q->items = PyMem_Malloc(RQ_INITIAL * sizeof(PyObject *));
    if (q->items == NULL) {
        q->mask = -1;
        Py_DECREF(q);
        return (RunQueue *)PyErr_NoMemory();
    }
    PyObject_GC_Track(q);
    return q;
}

static PyObject *
rq_tp_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    if ((kwds != NULL && PyDict_GET_SIZE(kwds)) || !PyArg_ParseTuple(args, ":RunQueue")) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_TypeError, "RunQueue() takes no arguments");
        }
        return NULL;
    }
    return (PyObject *)rq_new();
}

static int
rq_clear(RunQueue *q)
{
    while (q->len) {
        PyObject *o = rq_pop(q);
        Py_DECREF(o);
    }
    return 0;
}

static int
rq_traverse(RunQueue *q, visitproc visit, void *arg)
{
    for (Py_ssize_t i = 0; i < q->len; i++) {
        Py_VISIT(q->items[(q->head + i) & q->mask]);
    }
    return 0;
}

static void
rq_dealloc(RunQueue *q)
{
    PyObject_GC_UnTrack(q);
    if (q->mask >= 0) {
        rq_clear(q);
    }
    PyMem_Free(q->items);
    PyObject_GC_Del(q);
}

static PyObject *
rq_append(RunQueue *q, PyObject *o)
{
    if (rq_push(q, o) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
rq_popleft(RunQueue *q, PyObject *Py_UNUSED(ignored))
{
    if (q->len == 0) {
        PyErr_SetString(PyExc_IndexError, "pop from an empty deque");
        return NULL;
    }
    return rq_pop(q);
}

static PyObject *
rq_snapshot(RunQueue *q)
{
    PyObject *list = PyList_New(q->len);
    if (list == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < q->len; i++) {
        PyObject *o = q->items[(q->head + i) & q->mask];
        Py_INCREF(o);
        PyList_SET_ITEM(list, i, o);
    }
    return list;
}

static PyObject *
rq_extend(RunQueue *q, PyObject *iterable)
{
    PyObject *items = PySequence_List(iterable); /* a snapshot: q.extend(q) doubles it */
    if (items == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(items); i++) {
        if (rq_push(q, PyList_GET_ITEM(items, i)) < 0) {
            Py_DECREF(items);
            return NULL;
        }
    }
    Py_DECREF(items);
    Py_RETURN_NONE;
}

static PyObject *
rq_clear_method(RunQueue *q, PyObject *Py_UNUSED(ignored))
{
    rq_clear(q);
    Py_RETURN_NONE;
}

static Py_ssize_t
rq_length(RunQueue *q)
{
    return q->len;
}

static int
rq_contains(RunQueue *q, PyObject *o)
{
    for (Py_ssize_t i = 0; i < q->len; i++) {
        PyObject *item = q->items[(q->head + i) & q->mask];
        Py_INCREF(item);
        int eq = PyObject_RichCompareBool(item, o, Py_EQ);
        Py_DECREF(item);
        if (eq != 0) {
            return eq;
        }
    }
    return 0;
}

static PyObject *
rq_iter(RunQueue *q)
{
    PyObject *list = rq_snapshot(q);
    if (list == NULL) {
        return NULL;
    }
    PyObject *it = PyObject_GetIter(list);
    Py_DECREF(list);
    return it;
}

static PyObject *
rq_repr(RunQueue *q)
{
    PyObject *list = rq_snapshot(q);
    if (list == NULL) {
        return NULL;
    }
    PyObject *r = PyUnicode_FromFormat("RunQueue(%R)", list);
    Py_DECREF(list);
    return r;
}

static PyMethodDef rq_methods[] = {
    {"append", (PyCFunction)rq_append, METH_O, "Add a task at the end."},
    {"popleft", (PyCFunction)rq_popleft, METH_NOARGS, "Take the first task."},
    {"extend", (PyCFunction)rq_extend, METH_O, "Add tasks at the end, in order."},
    {"clear", (PyCFunction)rq_clear_method, METH_NOARGS, "Empty the queue."},
    {NULL},
};

static PySequenceMethods rq_as_sequence = {
    .sq_length = (lenfunc)rq_length,
    .sq_contains = (objobjproc)rq_contains,
};

static PyTypeObject RunQueue_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "termite._core._kernelcore.RunQueue",
    .tp_doc = "A FIFO of tasks: the kernel's ready queue (deque's methods that the kernel uses).",
    .tp_basicsize = sizeof(RunQueue),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = rq_tp_new,
    .tp_dealloc = (destructor)rq_dealloc,
    .tp_traverse = (traverseproc)rq_traverse,
    .tp_clear = (inquiry)rq_clear,
    .tp_methods = rq_methods,
    .tp_as_sequence = &rq_as_sequence,
    .tp_iter = (getiterfunc)rq_iter,
    .tp_repr = (reprfunc)rq_repr,
};

/* -- KernelCore --------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    RunQueue *ready;
    RunQueue *yielded; /* tasks that yielded their turn: ready in the next one */
    long fairness;     /* countdown of switch-free receives */
    long long steps;   /* tasks resumed so far */
    PyObject *task;    /* the task running now, or NULL (kernel.task: current_task()) */
    PyObject *monitored; /* its table's `monitored` dict, once a call read it (never rebound) */
    Py_ssize_t spawned;  /* processes spawned since the turn began (kernel.SPAWN_BURST) */
    /* Receive and call timeouts (kernel.py's add_timer): a heap of [deadline, seq, task or None, value]. */
    PyObject *timers;
    PyObject *clock;         /* kernel._clock: time.monotonic or the loop's time */
    long long timer_seq;     /* the next timer's seq: equal deadlines fire in the order set */
    Py_ssize_t stale_timers; /* cancelled entries still in the heap */
    double armed_for;        /* when the loop's timer fires (inf if none) */
    /* The hooks a turn calls, set by kernel.py's Kernel (members, not attributes of the Python subclass:
     * a turn reads them without a lookup); and its limits, Kernel.BUDGET and TURN_SECONDS, read once. */
    PyObject *on_exit, *after_turn, *trap_handlers, *stashed;
    PyObject *table; /* the process table of its node (kernel.table): every send to another node reads it */
    PyObject *timer_handle; /* kernel._timer_handle: the loop's timer for the earliest timeout, or None */
    char gc_paused;         /* kernel._gc_paused: the cyclic collector waits for the turn's end */
    /* kernel._asyncio_tasks and _asyncio_loop: asyncio's dict of the task running on each loop, and
     * this kernel's loop; while a task runs, asyncio sees it as the loop's current task (or NULL/None) */
    PyObject *asyncio_tasks, *asyncio_loop;
    long budget;
    double turn_seconds;
} KernelCore;

static PyTypeObject KernelCore_Type;
/* The types every hop checks are subclasses (kernel.Kernel, process.Process), which PyObject_TypeCheck
 * finds by walking their MRO: the common one is compared first. */
static PyTypeObject *Kernel_type;  /* the type of the last kernel attached (kernel.Kernel) */
static PyTypeObject *Process_type; /* process.Process, from init_process */
#define KernelCore_Check(o) (Py_TYPE(o) == Kernel_type || PyObject_TypeCheck(o, &KernelCore_Type))

/* -- Task --------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *coro, *value, *waiting, *foreign;
    KernelCore *kernel; /* never NULL once made: a KernelCore, or None before __init__ */
    PyObject *held, *mailbox, *wait_for;
    PyObject *tracers; /* a process's tracers (termite.trace), or None */
    /* wake-ups but for messages handed over; messages handed over, queued; messages sent (info.py reads them) */
    Py_ssize_t woken, handed, queued, sent;
} Task;

static PyTypeObject Task_Type;
#define Task_Check(o) (Py_TYPE(o) == Process_type || PyObject_TypeCheck(o, &Task_Type))

static PyObject *
task_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    Task *t = (Task *)type->tp_alloc(type, 0);
    if (t == NULL) {
        return NULL;
    }
    PyObject **fields[] = {&t->coro, &t->value, &t->waiting, &t->foreign, (PyObject **)&t->kernel,
                           &t->held, &t->mailbox, &t->wait_for, &t->tracers};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        Py_INCREF(Py_None);
        *fields[i] = Py_None;
    }
    return (PyObject *)t;
}

static int
task_set_kernel(Task *t, PyObject *kernel, void *closure)
{
    if (kernel == NULL || !KernelCore_Check(kernel)) {
        PyErr_Format(PyExc_TypeError, "a task's kernel must be a termite Kernel, got %.200R", kernel);
        return -1;
    }
    Py_INCREF(kernel);
    Py_SETREF(t->kernel, (KernelCore *)kernel);
    return 0;
}

static PyObject *
task_get_kernel(Task *t, void *closure)
{
    Py_INCREF(t->kernel);
    return (PyObject *)t->kernel;
}

static int
task_init(Task *t, PyObject *args, PyObject *kwds)
{
    PyObject *kernel, *coro;
    static char *names[] = {"kernel", "coro", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO:Task", names, &kernel, &coro)) {
        return -1;
    }
    if (task_set_kernel(t, kernel, NULL) < 0) {
        return -1;
    }
    Py_INCREF(coro);
    Py_XSETREF(t->coro, coro);
    PyObject **fields[] = {&t->value, &t->waiting, &t->foreign, &t->held, &t->mailbox, &t->wait_for};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        Py_INCREF(Py_None);
        Py_XSETREF(*fields[i], Py_None);
    }
    t->woken = 0;
    return 0;
}

static int
task_traverse(Task *t, visitproc visit, void *arg)
{
    Py_VISIT(t->coro);
    Py_VISIT(t->value);
    Py_VISIT(t->waiting);
    Py_VISIT(t->foreign);
    Py_VISIT(t->kernel);
    Py_VISIT(t->held);
    Py_VISIT(t->mailbox);
    Py_VISIT(t->wait_for);
    Py_VISIT(t->tracers);
    return 0;
}

static int
task_clear(Task *t)
{
    Py_CLEAR(t->coro);
    Py_CLEAR(t->value);
    Py_CLEAR(t->waiting);
    Py_CLEAR(t->foreign);
    /* kernel stays: C code reads it without checking (it only refers to the kernel) */
    Py_CLEAR(t->held);
    Py_CLEAR(t->mailbox);
    Py_CLEAR(t->wait_for);
    Py_CLEAR(t->tracers);
    return 0;
}

static void
task_dealloc(Task *t)
{
    PyTypeObject *type = Py_TYPE(t);
    PyObject_GC_UnTrack(t);
    task_clear(t);
    Py_CLEAR(t->kernel);
    type->tp_free((PyObject *)t);
}

static PyMemberDef task_members[] = {
    {"coro", T_OBJECT, offsetof(Task, coro), 0, NULL},
    {"value", T_OBJECT, offsetof(Task, value), 0, NULL},
    {"waiting", T_OBJECT, offsetof(Task, waiting), 0, NULL},
    {"foreign", T_OBJECT, offsetof(Task, foreign), 0, NULL},
    {"held", T_OBJECT, offsetof(Task, held), 0, NULL},
    {"mailbox", T_OBJECT, offsetof(Task, mailbox), 0, NULL},
    {"wait_for", T_OBJECT, offsetof(Task, wait_for), 0, NULL},
    {"tracers", T_OBJECT, offsetof(Task, tracers), 0, NULL},
    {"woken", T_PYSSIZET, offsetof(Task, woken), 0, NULL},
    {"handed", T_PYSSIZET, offsetof(Task, handed), 0, NULL},
    {"queued", T_PYSSIZET, offsetof(Task, queued), 0, NULL},
    {"sent", T_PYSSIZET, offsetof(Task, sent), 0, NULL},
    {NULL},
};

static PyGetSetDef task_getset[] = {
    {"kernel", (getter)task_get_kernel, (setter)task_set_kernel, NULL, NULL},
    {NULL},
};

static PyTypeObject Task_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "termite._core._kernelcore.Task",
    .tp_doc = "What the kernel runs: a coroutine and the value it resumes with (kernel.Task, in C).",
    .tp_basicsize = sizeof(Task),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = task_new,
    .tp_init = (initproc)task_init,
    .tp_dealloc = (destructor)task_dealloc,
    .tp_traverse = (traverseproc)task_traverse,
    .tp_clear = (inquiry)task_clear,
    .tp_members = task_members,
    .tp_getset = task_getset,
};

/* -- KernelCore: the turn --------------------------------------------------- */

static PyObject *
kernel_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    KernelCore *k = (KernelCore *)type->tp_alloc(type, 0);
    if (k == NULL) {
        return NULL;
    }
    k->fairness = FAIRNESS;
    k->steps = 0;
    k->armed_for = Py_HUGE_VAL;
    /* the class's constants (kernel.Kernel's), as a turn of the Python kernel reads them */
    PyObject *budget = PyObject_GetAttr((PyObject *)type, s_BUDGET);
    PyObject *turn = budget != NULL ? PyObject_GetAttr((PyObject *)type, s_TURN_SECONDS) : NULL;
    k->budget = turn != NULL ? PyLong_AsLong(budget) : -1;
    k->turn_seconds = turn != NULL && !PyErr_Occurred() ? PyFloat_AsDouble(turn) : -1.0;
    Py_XDECREF(budget);
    Py_XDECREF(turn);
    if (PyErr_Occurred()) {
        Py_DECREF(k);
        return NULL;
    }
    k->ready = rq_new();
    k->yielded = rq_new();
    if (k->ready == NULL || k->yielded == NULL) {
        Py_DECREF(k);
        return NULL;
    }
    return (PyObject *)k;
}

static int
kernel_traverse(KernelCore *k, visitproc visit, void *arg)
{
    Py_VISIT(k->ready);
    Py_VISIT(k->yielded);
    Py_VISIT(k->task);
    Py_VISIT(k->monitored);
    Py_VISIT(k->timers);
    Py_VISIT(k->clock);
    Py_VISIT(k->on_exit);
    Py_VISIT(k->after_turn);
    Py_VISIT(k->trap_handlers);
    Py_VISIT(k->stashed);
    Py_VISIT(k->table);
    Py_VISIT(k->timer_handle);
    Py_VISIT(k->asyncio_tasks);
    Py_VISIT(k->asyncio_loop);
    return 0;
}

static int
kernel_clear(KernelCore *k)
{
    /* the queues stay (emptied): the kernel's C code reads them without checking */
    if (k->ready != NULL) {
        rq_clear(k->ready);
    }
    if (k->yielded != NULL) {
        rq_clear(k->yielded);
    }
    Py_CLEAR(k->task);
    Py_CLEAR(k->monitored);
    Py_CLEAR(k->timers);
    Py_CLEAR(k->clock);
    Py_CLEAR(k->on_exit);
    Py_CLEAR(k->after_turn);
    Py_CLEAR(k->trap_handlers);
    Py_CLEAR(k->stashed);
    Py_CLEAR(k->table);
    Py_CLEAR(k->timer_handle);
    Py_CLEAR(k->asyncio_tasks);
    Py_CLEAR(k->asyncio_loop);
    return 0;
}

static void
kernel_dealloc(KernelCore *k)
{
    PyTypeObject *type = Py_TYPE(k);
    PyObject_GC_UnTrack(k);
    kernel_clear(k);
    Py_CLEAR(k->ready);
    Py_CLEAR(k->yielded);
    type->tp_free((PyObject *)k);
}

/* A Signal wake-up: kernel._signal(task, signal) throws it in (or closes the
 * coroutine and raises); its StopIteration is the coroutine's return. */
static PySendResult
signal_step(PyObject *kernel, PyObject *task, PyObject *signal, PyObject **result)
{
    PyObject *r = PyObject_CallMethodObjArgs(kernel, s_signal, task, signal, NULL);
    if (r != NULL) {
        *result = r;
        return PYGEN_NEXT;
    }
    if (!PyErr_ExceptionMatches(PyExc_StopIteration)) {
        *result = NULL;
        return PYGEN_ERROR;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    *result = value != NULL ? PyObject_GetAttr(value, s_value) : NULL;
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    return *result != NULL ? PYGEN_RETURN : PYGEN_ERROR;
}

/* Call fn(*args) with `exc` as the exception being handled (sys.exc_info()),
 * as the Python kernel calls on_exit inside its `except` block; with none, as
 * it is (a `finally` block left without one: after_turn, every turn). */
static PyObject *
call_handling(PyObject *fn, PyObject *const *args, size_t n, PyObject *type, PyObject *value, PyObject *tb)
{
    if (type == NULL && value == NULL) {
        return PyObject_Vectorcall(fn, args, n, NULL);
    }
    PyObject *old_type, *old_value, *old_tb;
    PyErr_GetExcInfo(&old_type, &old_value, &old_tb);
    Py_XINCREF(type);
    Py_XINCREF(value);
    Py_XINCREF(tb);
    PyErr_SetExcInfo(type, value, tb);
    PyObject *r = PyObject_Vectorcall(fn, args, n, NULL);
    PyErr_SetExcInfo(old_type, old_value, old_tb);
    return r;
}

/* What the turn needs of the kernel's Python side, read once a turn. */
typedef struct {
    PyObject *on_exit, *handlers, *stashed;
    PyObject *asyncio_tasks; /* asyncio's current tasks (a dict), or NULL */
} Hooks;

/* One step: resume `t` and act on what it yields; 0, or -1 with an error set
 * (the turn stops there). */
static int
step(KernelCore *k, PyObject *t, Hooks *hooks)
{
    PyObject *self = (PyObject *)k;
    if (!Task_Check(t)) {
        PyErr_Format(PyExc_TypeError, "the kernel's ready queue holds %.200R, not a task", t);
        return -1;
    }
    Task *task = (Task *)t;
    if (task->held != NULL && task->held != Py_None) { /* flow control: it runs again on release */
        return PySet_Add(hooks->stashed, t);
    }
    Py_INCREF(t);
    Py_XSETREF(k->task, t);
    if (hooks->asyncio_tasks != NULL && PyDict_SetItem(hooks->asyncio_tasks, k->asyncio_loop, t) < 0) {
        return -1;
    }
    PyObject *value = task->value; /* ours now: don't keep the last message alive */
    Py_INCREF(Py_None);
    task->value = Py_None;
    PyObject *trap = NULL;
    PySendResult status;
    if (value != NULL && Py_TYPE(value) == Signal_type) {
        status = signal_step(self, t, value, &trap);
    }
    else {
        PyObject *coro = task->coro != NULL ? task->coro : Py_None;
        Py_INCREF(coro);
        status = PyIter_Send(coro, value != NULL ? value : Py_None, &trap);
        Py_DECREF(coro);
    }
    Py_XDECREF(value);
    if (status == PYGEN_NEXT) {
        int err = 0;
        if (trap == PARK) {
        }
        else if (trap == RESCHEDULE) {
            task->woken++;
            err = rq_push(k->ready, t);
        }
        else if (trap == Py_None) { /* NEXT_TURN: sleep(0), asyncio.sleep(0) */
            task->woken++;
            err = rq_push(k->yielded, t);
        }
        else {
            PyObject *r = NULL;
            PyObject *handler = PyDict_GetItemWithError(hooks->handlers, (PyObject *)Py_TYPE(trap));
            if (handler != NULL) {
                PyObject *args[] = {t, trap};
                Py_INCREF(handler);
                r = PyObject_Vectorcall(handler, args, 2, NULL);
                Py_DECREF(handler);
            }
            else if (!PyErr_Occurred()) {
                r = PyObject_CallMethodObjArgs(self, s_await_foreign, t, trap, NULL);
            }
            err = r == NULL ? -1 : 0;
            Py_XDECREF(r);
        }
        Py_DECREF(trap);
        return err;
    }
    if (status == PYGEN_RETURN) {
        PyObject *args[] = {t, trap, Py_None};
        PyObject *r = PyObject_Vectorcall(hooks->on_exit, args, 3, NULL);
        Py_DECREF(trap);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    PyObject *type, *exc, *tb;
    PyErr_Fetch(&type, &exc, &tb);
    PyErr_NormalizeException(&type, &exc, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(exc, tb);
    }
    /* KeyboardInterrupt and SystemExit stop the node too */
    int fatal = PyErr_GivenExceptionMatches(type, PyExc_KeyboardInterrupt) ||
                PyErr_GivenExceptionMatches(type, PyExc_SystemExit);
    PyObject *args[] = {t, Py_None, exc};
    PyObject *r = call_handling(hooks->on_exit, args, 3, type, exc, tb);
    if (r == NULL || !fatal) {
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        Py_XDECREF(r);
        return r == NULL ? -1 : 0;
    }
    Py_DECREF(r);
    PyErr_Restore(type, exc, tb);
    return -1;
}

/* Phase 1 of a turn: kernel.py's _KernelCore._run_ready, step for step. */
static PyObject *
kernel_run_ready(KernelCore *k, PyObject *Py_UNUSED(ignored))
{
    RunQueue *ready = k->ready, *yielded = k->yielded;
    while (yielded->len) { /* they yielded in an earlier turn: the loop has run since */
        PyObject *t = rq_pop(yielded);
        int err = rq_push(ready, t);
        Py_DECREF(t);
        if (err < 0) {
            return NULL;
        }
    }
    long budget = k->budget, full;
    double turn = k->turn_seconds;
    /* held for the turn, as the Python kernel's locals hold them */
    Hooks hooks = {k->on_exit != NULL ? k->on_exit : Py_None, k->trap_handlers, k->stashed, NULL};
    if (hooks.handlers == NULL || hooks.stashed == NULL || !PyDict_Check(hooks.handlers) ||
        !PySet_Check(hooks.stashed)) {
        PyErr_SetString(PyExc_TypeError, "kernel.trap_handlers must be a dict and kernel._stashed a set");
        return NULL;
    }
    /* The loop's current task before the turn (a turn run from inside an asyncio task): back after it. */
    PyObject *asyncio_was = NULL;
    if (k->asyncio_tasks != NULL && PyDict_CheckExact(k->asyncio_tasks) && k->asyncio_loop != NULL) {
        hooks.asyncio_tasks = Py_NewRef(k->asyncio_tasks);
        asyncio_was = PyDict_GetItemWithError(hooks.asyncio_tasks, k->asyncio_loop);
        if (asyncio_was == NULL && PyErr_Occurred()) {
            Py_DECREF(hooks.asyncio_tasks);
            return NULL;
        }
        Py_XINCREF(asyncio_was);
    }
    Py_INCREF(hooks.on_exit);
    Py_INCREF(hooks.handlers);
    Py_INCREF(hooks.stashed);
    full = budget;
    double deadline = now_seconds() + turn;
    int failed = 0;
    while (ready->len && budget) {
        if ((budget & 15) == 1 && now_seconds() > deadline) {
            break; /* every 16 steps (BUDGET & 15 is 0: not before the first, which most turns are) */
        }
        budget--;
        PyObject *t = rq_pop(ready);
        int err = step(k, t, &hooks);
        Py_DECREF(t);
        if (err < 0) {
            failed = 1;
            break;
        }
    }
    /* finally: */
    Py_CLEAR(k->task);
    k->steps += full - budget;
    Py_DECREF(hooks.on_exit);
    Py_DECREF(hooks.handlers);
    Py_DECREF(hooks.stashed);
    PyObject *type = NULL, *exc = NULL, *tb = NULL;
    if (hooks.asyncio_tasks != NULL) {
        PyObject *et, *ev, *etb;
        PyErr_Fetch(&et, &ev, &etb);
        int r = asyncio_was != NULL ? PyDict_SetItem(hooks.asyncio_tasks, k->asyncio_loop, asyncio_was)
                                    : PyDict_DelItem(hooks.asyncio_tasks, k->asyncio_loop);
        if (r < 0) {
            PyErr_Clear(); /* not there (a step's own asyncio code removed it): nothing to undo */
        }
        PyErr_Restore(et, ev, etb);
        Py_XDECREF(asyncio_was);
        Py_DECREF(hooks.asyncio_tasks);
    }
    if (failed) {
        PyErr_Fetch(&type, &exc, &tb);
        PyErr_NormalizeException(&type, &exc, &tb);
        if (tb != NULL) {
            PyException_SetTraceback(exc, tb);
        }
    }
    PyObject *after = k->after_turn;
    PyObject *r;
    if (after == NULL || after == Py_None) {
        r = Py_None;
        Py_INCREF(r);
    }
    else {
        Py_INCREF(after);
        r = call_handling(after, NULL, 0, type, exc, tb);
        Py_DECREF(after);
    }
    if (r == NULL) { /* raised in the finally block: it wins, the turn's error is its context */
        Py_XDECREF(type);
        Py_XDECREF(exc);
        Py_XDECREF(tb);
        return NULL;
    }
    Py_DECREF(r);
    if (failed) {
        PyErr_Restore(type, exc, tb);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *s_burst_over, *s_kick, *s_arm_timer;

/* A turn, kernel.py's _KernelCore._run: phase 1 (_run_ready), then what its `finally` does, then
 * phase 2, which arranges the next turn (kick) and the loop's timer (_arm_timer). */
static PyObject *
kernel_run(KernelCore *k, PyObject *Py_UNUSED(ignored))
{
    PyObject *self = (PyObject *)k;
    PyObject *r = kernel_run_ready(k, NULL);
    /* finally: */
    if (k->gc_paused) {
        PyObject *type = NULL, *exc = NULL, *tb = NULL;
        if (r == NULL) {
            PyErr_Fetch(&type, &exc, &tb);
            PyErr_NormalizeException(&type, &exc, &tb);
        }
        PyObject *fn = PyObject_GetAttr(self, s_burst_over);
        PyObject *done = fn == NULL ? NULL : call_handling(fn, NULL, 0, type, exc, tb);
        Py_XDECREF(fn);
        if (done == NULL) { /* raised in the finally block: it wins, the turn's error is its context */
            Py_XDECREF(type);
            Py_XDECREF(exc);
            Py_XDECREF(tb);
            Py_XDECREF(r);
            k->spawned = 0;
            return NULL;
        }
        Py_DECREF(done);
        if (r == NULL) {
            PyErr_Restore(type, exc, tb);
        }
    }
    k->spawned = 0;
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    if (k->ready->len || k->yielded->len) {
        if ((r = PyObject_CallMethodNoArgs(self, s_kick)) == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    if ((k->timer_handle == NULL || k->timer_handle == Py_None) && k->timers != NULL) {
        int armed = PyObject_IsTrue(k->timers);
        if (armed < 0 || (armed && (r = PyObject_CallMethodNoArgs(self, s_arm_timer)) == NULL)) {
            return NULL;
        }
        if (armed) {
            Py_DECREF(r);
        }
    }
    Py_RETURN_NONE;
}

/* -- KernelCore: receive and call timeouts ------------------------------------ */

static PyObject *heappush, *monotonic, *s_rebuild_timers; /* heapq.heappush, time.monotonic */

/* kernel._clock(), as a double; -1.0 with an exception.  time.monotonic is read here as it
 * reads itself (CLOCK_MONOTONIC in ns, then seconds as _PyTime_AsSecondsDouble makes them), so
 * a deadline set here and the loop's time() compare as if both were Python's. */
static double
kernel_now(KernelCore *k)
{
    if (k->clock == monotonic) {
        struct timespec ts;
        if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
            long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
            return ns % 1000000000LL == 0 ? (double)(ns / 1000000000LL) : (double)ns / 1e9;
        }
    }
    PyObject *now = k->clock != NULL ? PyObject_CallNoArgs(k->clock) : NULL;
    if (now == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "the kernel's clock is not set (Kernel.__init__ sets _clock)");
        }
        return -1.0;
    }
    double t = PyFloat_AsDouble(now);
    Py_DECREF(now);
    return t;
}

/* kernel.add_timer(delay, task, value): wake `task` with `value` after `delay` seconds, unless
 * cancelled; the heap's entry, or NULL with an exception. */
/* heapq.heappush(timers, entry); without the call when entry is due no earlier than its parent
 * would be (a receive's timeout, set after the others: the common case), as equal deadlines go in
 * the order set (seq).  0, or -1 with an exception. */
static int
timer_append(PyObject *timers, PyObject *entry, double when)
{
    Py_ssize_t n = PyList_GET_SIZE(timers);
    if (n > 0) {
        PyObject *parent = PyList_GET_ITEM(timers, (n - 1) >> 1);
        PyObject *due = PyList_CheckExact(parent) && PyList_GET_SIZE(parent) == 4 ? PyList_GET_ITEM(parent, 0) : NULL;
        if (due == NULL || !PyFloat_CheckExact(due) || PyFloat_AS_DOUBLE(due) > when) {
            PyObject *args[] = {timers, entry};
            PyObject *r = PyObject_Vectorcall(heappush, args, 2, NULL);
            Py_XDECREF(r);
            return r == NULL ? -1 : 0;
        }
    }
    return PyList_Append(timers, entry);
}

static PyObject *
timer_add(KernelCore *k, PyObject *delay, PyObject *task, PyObject *value)
{
    if (k->timers == NULL || !PyList_CheckExact(k->timers)) {
        PyErr_SetString(PyExc_TypeError, "the kernel's timers must be a list (Kernel.__init__ sets it)");
        return NULL;
    }
    if (!PyFloat_Check(delay) && !PyLong_Check(delay)) { /* as the Python twin's clock() + delay says */
        PyErr_Format(PyExc_TypeError, "unsupported operand type(s) for +: 'float' and '%.200s'",
                     Py_TYPE(delay)->tp_name);
        return NULL;
    }
    double seconds = PyFloat_AsDouble(delay);
    if (seconds == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    double now = kernel_now(k);
    if (now == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    double when = now + seconds;
    PyObject *entry = PyList_New(4);
    PyObject *deadline = entry == NULL ? NULL : PyFloat_FromDouble(when);
    PyObject *seq = deadline == NULL ? NULL : PyLong_FromLongLong(k->timer_seq);
    if (seq == NULL) {
        Py_XDECREF(deadline);
        Py_XDECREF(entry);
        return NULL;
    }
    k->timer_seq++;
    PyList_SET_ITEM(entry, 0, deadline);
    PyList_SET_ITEM(entry, 1, seq);
    PyList_SET_ITEM(entry, 2, Py_NewRef(task));
    PyList_SET_ITEM(entry, 3, Py_NewRef(value));
    if (timer_append(k->timers, entry, when) < 0) {
        Py_DECREF(entry);
        return NULL;
    }
    PyObject *r;
    if (when < k->armed_for) {
        r = PyObject_CallMethodNoArgs((PyObject *)k, s_arm_timer);
        if (r == NULL) {
            Py_DECREF(entry);
            return NULL;
        }
        Py_DECREF(r);
    }
    return entry;
}

/* kernel.cancel_timer(entry): 0, or -1 with an exception.  Cancelled entries stay in the heap until
 * they reach its top; when they are most of it (many receives answered before their timeout),
 * kernel._rebuild_timers() drops them, so memory does not grow. */
static int
timer_cancel(KernelCore *k, PyObject *entry)
{
    if (!PyList_CheckExact(entry) || PyList_GET_SIZE(entry) != 4) {
        PyErr_Format(PyExc_TypeError, "cancel_timer(): %.200R is not a timer of this kernel", entry);
        return -1;
    }
    if (PyList_GET_ITEM(entry, 2) == Py_None) {
        return 0;
    }
    PyObject *task = PyList_GET_ITEM(entry, 2);
    PyList_SET_ITEM(entry, 2, Py_NewRef(Py_None));
    Py_DECREF(task);
    PyObject *timers = k->timers;
    Py_ssize_t n = timers != NULL && PyList_CheckExact(timers) ? PyList_GET_SIZE(timers) : 0;
    if (n > 0 && PyList_GET_ITEM(timers, n - 1) == entry) {
        /* The last set, and still a leaf: out at once, as a heap may lose its last element. */
        return PyList_SetSlice(timers, n - 1, n, NULL);
    }
    k->stale_timers++;
    if (k->stale_timers > 1024 && k->timers != NULL && PyList_Check(k->timers) &&
        k->stale_timers * 2 > PyList_GET_SIZE(k->timers)) {
        PyObject *r = PyObject_CallMethodNoArgs((PyObject *)k, s_rebuild_timers);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

static PyObject *
kernel_add_timer(KernelCore *k, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 && nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "add_timer(delay, task[, value])");
        return NULL;
    }
    return timer_add(k, args[0], args[1], nargs == 3 ? args[2] : TIMED_OUT);
}

static PyObject *
kernel_cancel_timer(KernelCore *k, PyObject *entry)
{
    if (timer_cancel(k, entry) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* A timer for a receive or a call of a task of `kernel` (a task of the C kernel has a KernelCore). */
static int
is_kernel(PyObject *kernel)
{
    if (KernelCore_Check(kernel)) {
        return 1;
    }
    PyErr_Format(PyExc_TypeError, "the task's kernel is %.200R, not a kernel", kernel);
    return 0;
}

static PyObject *
task_timer(PyObject *kernel, PyObject *delay, PyObject *task)
{
    return is_kernel(kernel) ? timer_add((KernelCore *)kernel, delay, task, TIMED_OUT) : NULL;
}

static int
task_timer_cancel(PyObject *kernel, PyObject *entry)
{
    return is_kernel(kernel) ? timer_cancel((KernelCore *)kernel, entry) : -1;
}

static PyMemberDef kernel_members[] = {
    {"ready", T_OBJECT, offsetof(KernelCore, ready), READONLY, "the tasks that run next, in order"},
    {"yielded", T_OBJECT, offsetof(KernelCore, yielded), READONLY, "tasks that yielded their turn"},
    {"fairness", T_LONG, offsetof(KernelCore, fairness), 0, "countdown of switch-free receives"},
    {"steps", T_LONGLONG, offsetof(KernelCore, steps), 0, "tasks resumed so far"},
    {"task", T_OBJECT, offsetof(KernelCore, task), 0, "the task running now, or None"},
    {"spawned", T_PYSSIZET, offsetof(KernelCore, spawned), 0, "processes spawned since the turn began"},
    {"timers", T_OBJECT, offsetof(KernelCore, timers), 0, "heap of [deadline, seq, task or None, value]"},
    {"_clock", T_OBJECT, offsetof(KernelCore, clock), 0, "time.monotonic, or the loop's time"},
    {"_stale_timers", T_PYSSIZET, offsetof(KernelCore, stale_timers), 0, "cancelled entries still in the heap"},
    {"_armed_for", T_DOUBLE, offsetof(KernelCore, armed_for), 0, "when the loop's timer fires (inf if none)"},
    {"on_exit", T_OBJECT, offsetof(KernelCore, on_exit), 0, "on_exit(task, value, exc): a task ended"},
    {"after_turn", T_OBJECT, offsetof(KernelCore, after_turn), 0, "called at the end of every turn, or None"},
    {"trap_handlers", T_OBJECT, offsetof(KernelCore, trap_handlers), 0, "request class -> handler(task, request)"},
    {"_stashed", T_OBJECT, offsetof(KernelCore, stashed), 0, "held tasks that were due to run"},
    {"table", T_OBJECT, offsetof(KernelCore, table), 0, "the process table of the node this kernel runs"},
    {"_timer_handle", T_OBJECT, offsetof(KernelCore, timer_handle), 0, "the loop's timer for the earliest timeout"},
    {"_gc_paused", T_BOOL, offsetof(KernelCore, gc_paused), 0, "the cyclic collector waits for the turn's end"},
    {"_asyncio_tasks", T_OBJECT, offsetof(KernelCore, asyncio_tasks), 0, "asyncio's current task of each loop, or None"},
    {"_asyncio_loop", T_OBJECT, offsetof(KernelCore, asyncio_loop), 0, "the loop whose current task a task is as it runs"},
    {NULL},
};

static PyMethodDef kernel_methods[] = {
    {"_run_ready", (PyCFunction)kernel_run_ready, METH_NOARGS,
     "Phase 1 of a turn: run the ready tasks, within the budget (Kernel._run_ready)."},
    {"_run", (PyCFunction)kernel_run, METH_NOARGS,
     "A turn: phase 1, then arrange the next turn and the loop's timer (Kernel._run)."},
    {"add_timer", (PyCFunction)(void (*)(void))kernel_add_timer, METH_FASTCALL,
     "add_timer(delay, task, value=TIMED_OUT) -> entry: wake task with value after delay seconds, unless cancelled."},
    {"cancel_timer", (PyCFunction)kernel_cancel_timer, METH_O, "cancel_timer(entry): the timer will not fire."},
    {NULL},
};

static PyTypeObject KernelCore_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "termite._core._kernelcore.KernelCore",
    .tp_doc = "The C part of kernel.Kernel: its run queues and the loop of a turn.",
    .tp_basicsize = sizeof(KernelCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = kernel_new,
    .tp_dealloc = (destructor)kernel_dealloc,
    .tp_traverse = (traverseproc)kernel_traverse,
    .tp_clear = (inquiry)kernel_clear,
    .tp_members = kernel_members,
    .tp_methods = kernel_methods,
};

/* -- local: the running task and the attached kernel, per thread ------------ */

typedef struct {
    PyObject_HEAD
} Local;

/* None is kept as NULL, so C code tests one thing. */
static void
set_local(PyObject **slot, PyObject *value)
{
    if (value == Py_None) {
        value = NULL;
    }
    Py_XINCREF(value);
    Py_XSETREF(*slot, value);
}

static PyObject *
local_get_kernel(PyObject *self, void *closure)
{
    PyObject *o = cur_kernel != NULL ? cur_kernel : Py_None;
    Py_INCREF(o);
    return o;
}

static int
local_set_kernel(PyObject *self, PyObject *value, void *closure)
{
    if (value == NULL || (value != Py_None && !KernelCore_Check(value))) {
        PyErr_Format(PyExc_TypeError, "the attached kernel must be a termite Kernel or None, got %.200R", value);
        return -1;
    }
    set_local(&cur_kernel, value);
    if (value != Py_None && Py_TYPE(value) != Kernel_type) {
        Py_INCREF(Py_TYPE(value));
        Py_XSETREF(Kernel_type, Py_TYPE(value));
    }
    return 0;
}

static PyGetSetDef local_getset[] = {
    {"kernel", local_get_kernel, local_set_kernel, "the kernel attached to this thread, or None", NULL},
    {NULL},
};

static PyTypeObject Local_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "termite._core._kernelcore.Local",
    .tp_doc = "Which kernel runs on this thread (kernel._local).",
    .tp_basicsize = sizeof(Local),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_getset = local_getset,
};

/* The task running on this thread (its kernel's `task`), or NULL; a borrowed reference. */
static inline PyObject *
running_task(void)
{
    PyObject *t = cur_kernel != NULL ? ((KernelCore *)cur_kernel)->task : NULL;
    return t != Py_None ? t : NULL;
}

static PyObject *
current_task(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    PyObject *o = running_task();
    o = o != NULL ? o : Py_None;
    Py_INCREF(o);
    return o;
}

/* -- FastFunction: a C function that wears its Python reference's name ------ */

/* Instances are callable like builtins (vectorcall) and have a __dict__, so
 * functools.update_wrapper gives them the Python function's name, docstring
 * and __wrapped__ (inspect.signature reads the Python signature there);
 * they pickle by reference, as functions do. */
typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *dict;
} FastFunction;

static int
ff_traverse(FastFunction *f, visitproc visit, void *arg)
{
    Py_VISIT(f->dict);
    return 0;
}

static int
ff_clear(FastFunction *f)
{
    Py_CLEAR(f->dict);
    return 0;
}

static void
ff_dealloc(FastFunction *f)
{
    PyObject_GC_UnTrack(f);
    ff_clear(f);
    PyObject_GC_Del(f);
}

static PyObject *
ff_reduce(FastFunction *f, PyObject *Py_UNUSED(ignored))
{
    return PyObject_GetAttr((PyObject *)f, s_qualname);
}

static PyObject *
ff_repr(FastFunction *f)
{
    PyObject *name = PyObject_GetAttr((PyObject *)f, s_qualname);
    if (name == NULL) {
        PyErr_Clear();
        return PyUnicode_FromString("<termite C function>");
    }
    PyObject *r = PyUnicode_FromFormat("<termite C function %U>", name);
    Py_DECREF(name);
    return r;
}

static PyMethodDef ff_methods[] = {
    {"__reduce__", (PyCFunction)ff_reduce, METH_NOARGS, NULL},
    {NULL},
};

static PyGetSetDef ff_getset[] = {
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL, NULL},
    {NULL},
};

static PyTypeObject FastFunction_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "termite._core._kernelcore.FastFunction",
    .tp_doc = "One of the kernel's hot paths in C; __wrapped__ is its Python reference.",
    .tp_basicsize = sizeof(FastFunction),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_vectorcall_offset = offsetof(FastFunction, vectorcall),
    .tp_call = PyVectorcall_Call,
    .tp_dictoffset = offsetof(FastFunction, dict),
    .tp_dealloc = (destructor)ff_dealloc,
    .tp_traverse = (traverseproc)ff_traverse,
    .tp_clear = (inquiry)ff_clear,
    .tp_methods = ff_methods,
    .tp_getset = ff_getset,
    .tp_repr = (reprfunc)ff_repr,
};

static PyObject *
ff_new(vectorcallfunc fn)
{
    FastFunction *f = PyObject_GC_New(FastFunction, &FastFunction_Type);
    if (f == NULL) {
        return NULL;
    }
    f->vectorcall = fn;
    f->dict = NULL;
    PyObject_GC_Track(f);
    return (PyObject *)f;
}

static int
ready_for_mail(void)
{
    if (mailbox_ready) {
        return 1;
    }
    PyErr_SetString(PyExc_RuntimeError, "termite._core._kernelcore.init_mailbox() was not called");
    return 0;
}

/* -- deliver ----------------------------------------------------------------- */

/* mailbox._is_reply: (tag, reply), or Down/Refused whose ref == tag. */
static int
is_reply(PyObject *tag, PyObject *msg)
{
    PyTypeObject *cls = Py_TYPE(msg);
    if (cls == &PyTuple_Type) {
        if (PyTuple_GET_SIZE(msg) != 2 || Py_TYPE(PyTuple_GET_ITEM(msg, 0)) != Tag_type) {
            return 0;
        }
        return PyObject_RichCompareBool(PyTuple_GET_ITEM(msg, 0), tag, Py_EQ);
    }
    if ((cls == Down_type || cls == Refused_type) && PyTuple_GET_SIZE(msg) > 0) {
        return PyObject_RichCompareBool(PyTuple_GET_ITEM(msg, 0), tag, Py_EQ);
    }
    return 0;
}

static inline int
wake(Task *p, PyObject *state, PyObject *value)
{
    Py_INCREF(state);
    Py_XSETREF(p->waiting, state);
    if (value != NULL) {
        Py_INCREF(value);
        Py_XSETREF(p->value, value);
    }
    return rq_push(p->kernel->ready, (PyObject *)p);
}

/* A traced process's copy of an event: hook(proc, ...) (mailbox._trace_sent or _trace_received). */
static int
call_trace(PyObject *hook, PyObject *const *args, size_t n)
{
    PyObject *r = PyObject_Vectorcall(hook, args, n, NULL);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* mailbox.deliver: hand msg over if p waits for it, else queue it (and wake a scanning receive). */
static int
do_deliver(Task *p, PyObject *msg)
{
    if (p->tracers != Py_None && p->tracers != NULL) {
        PyObject *args[] = {(PyObject *)p, msg};
        if (call_trace(py_trace_received, args, 2) < 0) {
            return -1;
        }
    }
    PyObject *waiting = p->waiting;
    if (waiting == ANY_MESSAGE) {
        p->handed++; /* a wake-up too: the kernel's count leaves these out */
        return wake(p, DELIVERED, msg);
    }
    if (waiting == REPLY) {
        PyObject *tag = p->wait_for;
        Py_XINCREF(tag);
        int yes = is_reply(tag != NULL ? tag : Py_None, msg);
        Py_XDECREF(tag);
        if (yes < 0) {
            return -1;
        }
        if (yes) {
            p->handed++;
            return wake(p, DELIVERED, msg);
        }
    }
    else if (waiting == DEAD) {
        return 0;
    }
    p->queued++;
    PyObject *box = p->mailbox;
    if (box == NULL || box == Py_None) {
        box = PyObject_CallNoArgs(deque_type);
        if (box == NULL) {
            return -1;
        }
        Py_XSETREF(p->mailbox, box);
    }
    PyObject *args[] = {box, msg};
    Py_INCREF(box);
    PyObject *r = PyObject_Vectorcall(deque_append, args, 2, NULL);
    Py_DECREF(box);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    if (p->waiting == SCAN) {
        Py_INCREF(Py_None);
        Py_XSETREF(p->waiting, Py_None);
        p->woken++;
        return rq_push(p->kernel->ready, (PyObject *)p);
    }
    return 0;
}

static PyObject *
k_deliver(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    if (n != 2 || kwnames != NULL) {
        PyErr_SetString(PyExc_TypeError, "deliver() takes a process and a message");
        return NULL;
    }
    if (!ready_for_mail()) {
        return NULL;
    }
    if (!Task_Check(args[0]) || !KernelCore_Check(((Task *)args[0])->kernel)) {
        PyErr_Format(PyExc_TypeError, "deliver() needs a process of a running kernel, got %.200R", args[0]);
        return NULL;
    }
    if (do_deliver((Task *)args[0], args[1]) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- send --------------------------------------------------------------------- */

/* mailbox.send: a pid of a live process of this thread's kernel gets the
 * message here; anything else goes to the Python send, which does the same
 * test again and takes its slow path. */
#define NOT_HANDLED Py_Ellipsis /* send_remote's "not mine": never returned to Python */
static PyObject *send_remote(PyObject *dest, PyObject *msg);

static PyObject *
k_send(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (!ready_for_mail()) {
        return NULL;
    }
    if (PyVectorcall_NARGS(nargsf) == 2 && kwnames == NULL && Py_TYPE(args[0]) == Pid_type && cur_kernel != NULL) {
        PyObject *proc = *(PyObject **)((char *)args[0] + pid_proc_offset);
        if (proc != NULL && proc != Py_None && Task_Check(proc) &&
            (PyObject *)((Task *)proc)->kernel == cur_kernel) {
            PyObject *sender = running_task();
            if (sender != NULL && Task_Check(sender)) {
                Task *me = (Task *)sender;
                me->sent++;
                if (me->tracers != Py_None && me->tracers != NULL) {
                    PyObject *targs[] = {sender, args[0], args[1]};
                    Py_INCREF(sender);
                    int err = call_trace(py_trace_sent, targs, 3);
                    Py_DECREF(sender);
                    if (err < 0) {
                        return NULL;
                    }
                }
            }
            Py_INCREF(proc);
            int err = do_deliver((Task *)proc, args[1]);
            Py_DECREF(proc);
            if (err < 0) {
                return NULL;
            }
            Py_RETURN_NONE;
        }
        if (proc == NULL || proc == Py_None) {
            PyObject *r = send_remote(args[0], args[1]);
            if (r != NOT_HANDLED) {
                return r;
            }
        }
    }
    return PyObject_Vectorcall(py_send, args, nargsf, kwnames);
}

/* -- receive ------------------------------------------------------------------ */


/* -- receive's patterns --------------------------------------------------------- */

/* The patterns the C receive matches itself, as patterns.py's _compile would (the same
 * tests, in the same order, the same user code run: isinstance and ==):
 *   ANY, object                       any message
 *   a class                           isinstance(m, cls)
 *   None, True, False                 m is p
 *   a str, int, bytes or Pid          m == p
 *   a Tag                             m.__class__ is Tag and m == p
 *   a tuple of these (or of tuples),  m.__class__ is tuple, of that length (at least, with a final ...),
 *   a final ... allowed               element by element
 * Any other pattern (a namedtuple, list, dict, function, where(), a float...) and the whole
 * receive goes to mailbox.receive, which also says what is wrong with a pattern that is. */
static PyObject *ANY_pattern;
#define PATTERN_DEPTH 8

static int
pattern_is_fast(PyObject *p, int depth)
{
    if (p == ANY_pattern || p == Py_None || p == Py_True || p == Py_False || PyType_Check(p)) {
        return 1;
    }
    PyTypeObject *cls = Py_TYPE(p);
    if (cls == &PyUnicode_Type || cls == &PyLong_Type || cls == &PyBytes_Type || cls == Pid_type ||
        cls == Tag_type) {
        return 1;
    }
    if (cls != &PyTuple_Type || depth >= PATTERN_DEPTH) {
        return 0;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(p);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PyTuple_GET_ITEM(p, i);
        if (item == Py_Ellipsis ? i != n - 1 : !pattern_is_fast(item, depth + 1)) {
            return 0;
        }
    }
    return 1;
}

/* 1 if m matches p (pattern_is_fast(p)), 0 if not, -1 with an error set. */
static int
pattern_match(PyObject *p, PyObject *m)
{
    if (p == ANY_pattern || p == (PyObject *)&PyBaseObject_Type) {
        return 1;
    }
    PyTypeObject *cls = Py_TYPE(p);
    if (cls == &PyTuple_Type) {
        if (Py_TYPE(m) != &PyTuple_Type) {
            return 0;
        }
        Py_ssize_t n = PyTuple_GET_SIZE(p), len = PyTuple_GET_SIZE(m);
        int open_ended = n > 0 && PyTuple_GET_ITEM(p, n - 1) == Py_Ellipsis;
        n -= open_ended;
        if (open_ended ? len < n : len != n) {
            return 0;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            int yes = pattern_match(PyTuple_GET_ITEM(p, i), PyTuple_GET_ITEM(m, i));
            if (yes <= 0) {
                return yes;
            }
        }
        return 1;
    }
    if (PyType_Check(p)) {
        return PyObject_IsInstance(m, p);
    }
    if (p == Py_None || p == Py_True || p == Py_False) {
        return m == p;
    }
    if (cls == Tag_type && Py_TYPE(m) != Tag_type) {
        return 0;
    }
    PyObject *eq = PyObject_RichCompare(m, p, Py_EQ);
    if (eq == NULL) {
        return -1;
    }
    int yes = PyObject_IsTrue(eq);
    Py_DECREF(eq);
    return yes;
}

/* Any of the patterns (compile_patterns' `first`). */
static inline int
patterns_match(PyObject *patterns, PyObject *m)
{
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(patterns); i++) {
        int yes = pattern_match(PyTuple_GET_ITEM(patterns, i), m);
        if (yes != 0) {
            return yes;
        }
    }
    return 0;
}

/* receive's `timeout` as the C receive takes it: None (NULL), or an int or float >= 0; else 0. */
static int
timeout_is_fast(PyObject *timeout)
{
    if (timeout == NULL) {
        return 1;
    }
    if (PyLong_CheckExact(timeout)) {
        int overflow;
        long v = PyLong_AsLongAndOverflow(timeout, &overflow);
        return overflow > 0 || (overflow == 0 && v >= 0);
    }
    return PyFloat_CheckExact(timeout) && PyFloat_AS_DOUBLE(timeout) >= 0.0; /* false for nan */
}

static PyObject *
init_patterns(PyObject *module, PyObject *any)
{
    Py_INCREF(any);
    Py_XSETREF(ANY_pattern, any);
    Py_RETURN_NONE;
}

enum { R_ANY, R_TIMED, R_MATCH, R_DELEGATE };
enum { S_START, S_PARKED, S_RESCHEDULED, S_DONE };

/* What receive() returns: an awaitable that does mailbox.receive's fast path
 * step for step (what its generator would do at each send), or drives that
 * generator itself (R_DELEGATE) for the forms this does not handle. */
typedef struct {
    PyObject_HEAD
    int mode, state;
    PyObject *timeout; /* R_TIMED */
    Task *proc;        /* once started */
    PyObject *box;     /* S_RESCHEDULED: the mailbox to pop after the reschedule */
    PyObject *timer;   /* R_TIMED, parked: the kernel's timer entry */
    PyObject *sub;     /* R_DELEGATE: mailbox.py's receive generator */
    PyObject *patterns; /* R_MATCH: the patterns, a tuple */
    Py_ssize_t start;  /* R_MATCH, parked: messages before this index were looked at */
} Receive;

static PyTypeObject Receive_Type;

static int
rcv_traverse(Receive *r, visitproc visit, void *arg)
{
    Py_VISIT(r->timeout);
    Py_VISIT(r->proc);
    Py_VISIT(r->box);
    Py_VISIT(r->timer);
    Py_VISIT(r->sub);
    Py_VISIT(r->patterns);
    return 0;
}

static int
rcv_clear(Receive *r)
{
    Py_CLEAR(r->timeout);
    Py_CLEAR(r->proc);
    Py_CLEAR(r->box);
    Py_CLEAR(r->timer);
    Py_CLEAR(r->sub);
    Py_CLEAR(r->patterns);
    return 0;
}

static void
rcv_done(Receive *r)
{
    r->state = S_DONE;
    Py_CLEAR(r->proc);
    Py_CLEAR(r->box);
    Py_CLEAR(r->timer);
    Py_CLEAR(r->sub);
}

/* A timed receive left by an exception (a signal, close): what its `except` does. */
static int
rcv_unwind(Receive *r)
{
    if ((r->mode != R_TIMED && r->mode != R_MATCH) || r->state != S_PARKED || r->proc == NULL) {
        return 0;
    }
    Task *p = r->proc;
    if (p->waiting != DEAD) {
        Py_INCREF(Py_None);
        Py_XSETREF(p->waiting, Py_None);
    }
    if (r->mode == R_MATCH && r->timer == NULL) { /* receive(patterns) with no timeout: no timer */
        return 0;
    }
    return task_timer_cancel((PyObject *)p->kernel, r->timer != NULL ? r->timer : Py_None);
}

static void
rcv_finalize(Receive *r)
{
    if (r->state != S_PARKED || (r->mode != R_TIMED && r->mode != R_MATCH)) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (rcv_unwind(r) < 0) {
        PyErr_WriteUnraisable((PyObject *)r);
    }
    rcv_done(r);
    PyErr_Restore(type, value, tb);
}

static void
rcv_dealloc(Receive *r)
{
    /* only a parked receive has a finally to run (rcv_finalize) */
    if (r->state == S_PARKED && PyObject_CallFinalizerFromDealloc((PyObject *)r) < 0) {
        return; /* resurrected */
    }
    PyObject_GC_UnTrack(r);
    rcv_clear(r);
    PyObject_GC_Del(r);
}

static PyObject *
rcv_new(int mode, PyObject *timeout)
{
    Receive *r = PyObject_GC_New(Receive, &Receive_Type);
    if (r == NULL) {
        return NULL;
    }
    r->mode = mode;
    r->state = S_START;
    Py_XINCREF(timeout);
    r->timeout = timeout;
    r->proc = NULL;
    r->box = r->timer = r->sub = r->patterns = NULL;
    r->start = 0;
    PyObject_GC_Track(r);
    return (PyObject *)r;
}

static PySendResult
rcv_delegate_send(Receive *r, PyObject *arg, PyObject **result)
{
    PySendResult status = PyIter_Send(r->sub, arg, result);
    if (status != PYGEN_NEXT) {
        rcv_done(r);
    }
    return status;
}

static PySendResult
rcv_error(Receive *r, PyObject **result)
{
    rcv_done(r);
    *result = NULL;
    return PYGEN_ERROR;
}

static PySendResult
rcv_not_in_process(Receive *r, PyObject **result)
{
    PyObject *exc = PyObject_CallFunction(
        NotInProcess, "s",
        "receive() can only be awaited inside a termite process; outside one, use node.receive(...) on a termite.Node");
    if (exc != NULL) {
        PyException_SetCause(exc, NULL); /* raise ... from None */
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
        Py_DECREF(exc);
    }
    return rcv_error(r, result);
}

static PySendResult
rcv_popleft(Receive *r, PyObject *box, PyObject **result)
{
    PyObject *msg = PyObject_Vectorcall(deque_popleft, &box, 1, NULL);
    rcv_done(r);
    *result = msg;
    return msg != NULL ? PYGEN_RETURN : PYGEN_ERROR;
}

static PySendResult
rcv_park(Receive *r, Task *p, PyObject **result)
{
    Py_INCREF(ANY_MESSAGE);
    Py_XSETREF(p->waiting, ANY_MESSAGE);
    Py_INCREF(p);
    r->proc = p;
    r->state = S_PARKED;
    Py_INCREF(PARK);
    *result = PARK;
    return PYGEN_NEXT;
}

static PySendResult rcv_match_start(Receive *r, Task *p, PyObject **result);

/* The first step: mailbox.receive's body up to its first yield or return. */
static PySendResult
rcv_start(Receive *r, PyObject *arg, PyObject **result)
{
    if (arg != Py_None) {
        PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started generator");
        return rcv_error(r, result);
    }
    PyObject *me = running_task();
    if (me == NULL || !Task_Check(me) || !KernelCore_Check(((Task *)me)->kernel)) {
        return rcv_not_in_process(r, result);
    }
    Task *p = (Task *)me;
    if (r->mode == R_MATCH) {
        return rcv_match_start(r, p, result);
    }
    PyObject *box = p->mailbox;
    int full = box != NULL && box != Py_None ? PyObject_IsTrue(box) : 0;
    if (full < 0) {
        return rcv_error(r, result);
    }
    if (r->mode == R_ANY) { /* the hot path: the paper's (?) */
        if (full) {
            KernelCore *k = p->kernel;
            k->fairness -= 1;
            if (!k->fairness) {
                k->fairness = FAIRNESS;
                Py_INCREF(box);
                r->box = box;
                r->state = S_RESCHEDULED;
                Py_INCREF(RESCHEDULE);
                *result = RESCHEDULE;
                return PYGEN_NEXT;
            }
            return rcv_popleft(r, box, result);
        }
        return rcv_park(r, p, result);
    }
    /* R_TIMED: (?) with a timeout, as a request awaits its answer */
    int later = full ? 0 : PyObject_RichCompareBool(r->timeout, zero, Py_GT);
    if (later < 0) {
        return rcv_error(r, result);
    }
    if (later) {
        PyObject *timer = task_timer((PyObject *)p->kernel, r->timeout, (PyObject *)p);
        if (timer == NULL) {
            return rcv_error(r, result);
        }
        r->timer = timer;
        return rcv_park(r, p, result);
    }
    /* timeout=0, a negative one, or messages waiting: mailbox.receive's general path */
    PyObject *kwnames = PyTuple_Pack(1, kw_timeout);
    if (kwnames == NULL) {
        return rcv_error(r, result);
    }
    r->sub = PyObject_Vectorcall(py_receive, &r->timeout, 0, kwnames);
    Py_DECREF(kwnames);
    if (r->sub == NULL) {
        return rcv_error(r, result);
    }
    r->mode = R_DELEGATE;
    return rcv_delegate_send(r, Py_None, result);
}


/* R_MATCH: hand the receive to mailbox.receive(*patterns, timeout=...) and drive it from here. */
static PySendResult
rcv_delegate_patterns(Receive *r, PyObject **result)
{
    Py_ssize_t n = PyTuple_GET_SIZE(r->patterns);
    PyObject *kwnames = NULL;
    PyObject **args = PyMem_Malloc((n + 1) * sizeof(PyObject *));
    if (args == NULL) {
        PyErr_NoMemory();
        return rcv_error(r, result);
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        args[i] = PyTuple_GET_ITEM(r->patterns, i);
    }
    if (r->timeout != NULL) {
        args[n] = r->timeout;
        kwnames = PyTuple_Pack(1, kw_timeout);
        if (kwnames == NULL) {
            PyMem_Free(args);
            return rcv_error(r, result);
        }
    }
    r->sub = PyObject_Vectorcall(py_receive, args, n, kwnames);
    PyMem_Free(args);
    Py_XDECREF(kwnames);
    if (r->sub == NULL) {
        return rcv_error(r, result);
    }
    r->mode = R_DELEGATE;
    return rcv_delegate_send(r, Py_None, result);
}

/* Look through box[start:] for a message matching r's patterns: 1 and *msg (taken out of the box),
 * 0 if none (r->start then the box's length), -1 with an error set. */
static int
rcv_scan(Receive *r, PyObject *box, Py_ssize_t start, PyObject **msg)
{
    Py_ssize_t n = PyObject_Size(box);
    if (n < 0) {
        return -1;
    }
    for (Py_ssize_t i = start; i < n; i++) {
        PyObject *m = PySequence_GetItem(box, i);
        if (m == NULL) {
            return -1;
        }
        int yes = patterns_match(r->patterns, m);
        if (yes != 0) {
            if (yes > 0 && PySequence_DelItem(box, i) < 0) {
                yes = -1;
            }
            if (yes < 0) {
                Py_DECREF(m);
                return -1;
            }
            *msg = m;
            return 1;
        }
        Py_DECREF(m);
    }
    r->start = n;
    return 0;
}

/* The end of a receive with patterns (its `finally`), then its result: msg, or the error set. */
static PySendResult
rcv_match_done(Receive *r, PyObject *msg, PyObject **result)
{
    if (r->state == S_PARKED) {
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        int err = rcv_unwind(r);
        if (err < 0) { /* raised in the finally block: it wins */
            Py_XDECREF(type);
            Py_XDECREF(value);
            Py_XDECREF(tb);
            Py_XDECREF(msg);
            msg = NULL;
        }
        else {
            PyErr_Restore(type, value, tb);
        }
    }
    rcv_done(r);
    *result = msg;
    return msg != NULL ? PYGEN_RETURN : PYGEN_ERROR;
}

/* Timed out: mailbox._timeout_result raises Timeout. */
static PyObject *
rcv_timed_out(Receive *r)
{
    PyObject *args[] = {r->timeout != NULL ? r->timeout : Py_None, NO_DEFAULT};
    return PyObject_Vectorcall(timeout_result, args, 2, NULL);
}

/* mailbox.receive's general path for patterns the C receive matches (pattern_is_fast), up to its first
 * yield or return. */
static PySendResult
rcv_match_start(Receive *r, Task *p, PyObject **result)
{
    PyObject *patterns = r->patterns;
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(patterns); i++) {
        if (!pattern_is_fast(PyTuple_GET_ITEM(patterns, i), 0)) {
            return rcv_delegate_patterns(r, result);
        }
    }
    if (!timeout_is_fast(r->timeout)) {
        return rcv_delegate_patterns(r, result); /* it says what is wrong with the timeout */
    }
    PyObject *box = p->mailbox;
    r->start = 0;
    if (box != NULL && box != Py_None) {
        int full = PyObject_IsTrue(box);
        if (full < 0) {
            return rcv_error(r, result);
        }
        if (full) {
            PyObject *msg = NULL;
            Py_INCREF(box);
            int found = rcv_scan(r, box, 0, &msg);
            Py_DECREF(box);
            if (found != 0) {
                return rcv_match_done(r, msg, result);
            }
        }
    }
    if (r->timeout != NULL) {
        int now = PyObject_RichCompareBool(r->timeout, zero, Py_EQ);
        if (now != 0) { /* timeout=0: only look */
            return rcv_match_done(r, now < 0 ? NULL : rcv_timed_out(r), result);
        }
        r->timer = task_timer((PyObject *)p->kernel, r->timeout, (PyObject *)p);
        if (r->timer == NULL) {
            return rcv_error(r, result);
        }
    }
    Py_INCREF(SCAN);
    Py_XSETREF(p->waiting, SCAN);
    Py_INCREF(p);
    r->proc = p;
    r->state = S_PARKED;
    Py_INCREF(PARK);
    *result = PARK;
    return PYGEN_NEXT;
}

/* Woken, with patterns: what the general path's loop does after its `yield PARK`. */
static PySendResult
rcv_match_resume(Receive *r, PyObject *arg, PyObject **result)
{
    Task *p = r->proc;
    if (arg == TIMED_OUT) {
        Py_CLEAR(r->timer); /* it fired: nothing to cancel */
        return rcv_match_done(r, rcv_timed_out(r), result);
    }
    if (p->waiting == DELIVERED) { /* handed over directly: matches by construction */
        Py_INCREF(Py_None);
        Py_XSETREF(p->waiting, Py_None);
        Py_INCREF(arg);
        return rcv_match_done(r, arg, result);
    }
    PyObject *box = p->mailbox;
    if (box != NULL && box != Py_None) {
        PyObject *msg = NULL;
        Py_INCREF(box);
        int found = rcv_scan(r, box, r->start, &msg);
        Py_DECREF(box);
        if (found != 0) {
            return rcv_match_done(r, msg, result);
        }
    }
    Py_INCREF(SCAN);
    Py_XSETREF(p->waiting, SCAN);
    Py_INCREF(PARK);
    *result = PARK;
    return PYGEN_NEXT;
}

/* Woken: what receive's fast path does after its `yield PARK`. */
static PySendResult
rcv_resume(Receive *r, PyObject *arg, PyObject **result)
{
    Task *p = r->proc;
    Py_INCREF(Py_None);
    Py_XSETREF(p->waiting, Py_None);
    if (r->mode == R_TIMED) {
        if (arg == TIMED_OUT) {
            PyObject *args[] = {r->timeout, NO_DEFAULT};
            PyObject *v = PyObject_Vectorcall(timeout_result, args, 2, NULL); /* raises Timeout */
            rcv_done(r);
            *result = v;
            return v != NULL ? PYGEN_RETURN : PYGEN_ERROR;
        }
        if (task_timer_cancel((PyObject *)p->kernel, r->timer) < 0) {
            return rcv_error(r, result);
        }
    }
    rcv_done(r);
    Py_INCREF(arg);
    *result = arg;
    return PYGEN_RETURN;
}

static PySendResult
rcv_am_send(Receive *r, PyObject *arg, PyObject **result)
{
    switch (r->state) {
    case S_START:
        if (r->mode == R_DELEGATE) {
            return rcv_delegate_send(r, arg, result);
        }
        return rcv_start(r, arg, result);
    case S_PARKED:
        if (r->mode == R_DELEGATE) {
            return rcv_delegate_send(r, arg, result);
        }
        if (r->mode == R_MATCH) {
            return rcv_match_resume(r, arg, result);
        }
        return rcv_resume(r, arg, result);
    case S_RESCHEDULED: {
        PyObject *box = r->box;
        Py_INCREF(box);
        PySendResult status = rcv_popleft(r, box, result);
        Py_DECREF(box);
        return status;
    }
    default: /* an exhausted generator: sending to it returns None */
        Py_INCREF(Py_None);
        *result = Py_None;
        return PYGEN_RETURN;
    }
}

static PyObject *
rcv_await(PyObject *r)
{
    Py_INCREF(r);
    return r;
}

/* gen.send(value): the next yielded value, or StopIteration(return value). */
static PyObject *
rcv_send_result(PySendResult status, PyObject *result)
{
    if (status == PYGEN_NEXT) {
        return result;
    }
    if (status == PYGEN_RETURN) {
        if (result == Py_None) {
            Py_DECREF(result);
            PyErr_SetNone(PyExc_StopIteration);
        }
        else {
            PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, result);
            Py_DECREF(result);
            if (stop != NULL) {
                PyErr_SetObject(PyExc_StopIteration, stop);
                Py_DECREF(stop);
            }
        }
    }
    return NULL;
}

static PyObject *
rcv_send(Receive *r, PyObject *arg)
{
    PyObject *result;
    PySendResult status = rcv_am_send(r, arg, &result);
    return rcv_send_result(status, result);
}

static PyObject *
rcv_iternext(Receive *r)
{
    PyObject *result;
    PySendResult status = rcv_am_send(r, Py_None, &result);
    if (status == PYGEN_RETURN && result == Py_None) {
        Py_DECREF(result);
        return NULL; /* StopIteration, without making one */
    }
    return rcv_send_result(status, result);
}

/* Raise what gen.throw(typ[, val[, tb]]) was given, as gen.throw does. */
static PyObject *
raise_thrown(PyObject *const *args, Py_ssize_t n)
{
    PyObject *typ = args[0], *val = n > 1 ? args[1] : Py_None, *tb = n > 2 ? args[2] : Py_None;
    if (PyExceptionInstance_Check(typ)) {
        if (val != Py_None) {
            PyErr_SetString(PyExc_TypeError, "instance exception may not have a separate value");
            return NULL;
        }
        PyErr_SetObject((PyObject *)Py_TYPE(typ), typ);
    }
    else if (PyExceptionClass_Check(typ)) {
        PyErr_SetObject(typ, val);
    }
    else {
        PyErr_Format(PyExc_TypeError, "exceptions must be classes or instances deriving from BaseException, not %s",
                     Py_TYPE(typ)->tp_name);
        return NULL;
    }
    if (tb != Py_None) {
        PyObject *type, *value, *old_tb;
        PyErr_Fetch(&type, &value, &old_tb);
        PyErr_NormalizeException(&type, &value, &old_tb);
        Py_XDECREF(old_tb);
        Py_INCREF(tb);
        PyErr_Restore(type, value, tb);
    }
    return NULL;
}

static PyObject *
rcv_throw(Receive *r, PyObject *const *args, Py_ssize_t n)
{
    if (n < 1 || n > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    if (r->mode == R_DELEGATE && r->sub != NULL) {
        PyObject *sub = r->sub;
        Py_INCREF(sub);
        PyObject *res = PyObject_VectorcallMethod(s_throw, (PyObject *[]){sub, args[0], n > 1 ? args[1] : NULL,
                                                                          n > 2 ? args[2] : NULL}, n + 1, NULL);
        Py_DECREF(sub);
        if (res == NULL) {
            rcv_done(r);
        }
        return res;
    }
    if (rcv_unwind(r) < 0) {
        rcv_done(r);
        return NULL;
    }
    rcv_done(r);
    return raise_thrown(args, n);
}

static PyObject *
rcv_close(Receive *r, PyObject *Py_UNUSED(ignored))
{
    if (r->mode == R_DELEGATE && r->sub != NULL) {
        PyObject *sub = r->sub;
        Py_INCREF(sub);
        PyObject *res = PyObject_CallMethodNoArgs(sub, s_close);
        Py_DECREF(sub);
        rcv_done(r);
        return res;
    }
    int err = rcv_unwind(r);
    rcv_done(r);
    if (err < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef rcv_methods[] = {
    {"send", (PyCFunction)rcv_send, METH_O, NULL},
    {"throw", (PyCFunction)rcv_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)rcv_close, METH_NOARGS, NULL},
    {NULL},
};

/* What introspection (info.py) reads of a parked receive: its timeout, and the Python receive it drives. */
static PyObject *
rcv_get_delegate(Receive *r, void *closure)
{
    PyObject *o = r->mode == R_DELEGATE && r->sub != NULL ? r->sub : Py_None;
    Py_INCREF(o);
    return o;
}

static PyMemberDef rcv_members[] = {
    {"timeout", T_OBJECT, offsetof(Receive, timeout), READONLY, "its timeout, or None"},
    {"patterns", T_OBJECT, offsetof(Receive, patterns), READONLY, "its patterns (a tuple), or None"},
    {NULL},
};

static PyGetSetDef rcv_getset[] = {
    {"_delegate", (getter)rcv_get_delegate, NULL, "mailbox.receive's generator, when this drives it", NULL},
    {NULL},
};

static PyAsyncMethods rcv_as_async = {
    .am_await = rcv_await,
    .am_send = (sendfunc)rcv_am_send,
};

static PyTypeObject Receive_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "termite._core._kernelcore.Receive",
    .tp_doc = "An awaited receive() (termite/_core/mailbox.py's receive, in C).",
    .tp_basicsize = sizeof(Receive),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)rcv_dealloc,
    .tp_traverse = (traverseproc)rcv_traverse,
    .tp_clear = (inquiry)rcv_clear,
    .tp_finalize = (destructor)rcv_finalize,
    .tp_as_async = &rcv_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)rcv_iternext,
    .tp_methods = rcv_methods,
    .tp_members = rcv_members,
    .tp_getset = rcv_getset,
};

/* receive(*patterns, timeout=None, default=NO_DEFAULT, where=None) */
static PyObject *
k_receive(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (!ready_for_mail()) {
        return NULL;
    }
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    PyObject *timeout = Py_None; /* NULL: a keyword the C receive leaves to mailbox.receive */
    Py_ssize_t nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nkw == 1) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, 0);
        if (name == kw_timeout || PyUnicode_Compare(name, kw_timeout) == 0) {
            timeout = args[n];
        }
        else {
            timeout = NULL;
        }
    }
    else if (nkw > 1) {
        timeout = NULL;
    }
    if (n > 0 && timeout != NULL && ANY_pattern != NULL) { /* patterns: R_MATCH looks at them when awaited */
        PyObject *patterns = PyTuple_New(n);
        if (patterns == NULL) {
            return NULL;
        }
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_INCREF(args[i]);
            PyTuple_SET_ITEM(patterns, i, args[i]);
        }
        Receive *r = (Receive *)rcv_new(R_MATCH, timeout != Py_None ? timeout : NULL);
        if (r == NULL) {
            Py_DECREF(patterns);
            return NULL;
        }
        r->patterns = patterns;
        return (PyObject *)r;
    }
    if (n == 0) {
        if (timeout == Py_None) {
            return rcv_new(R_ANY, NULL);
        }
        if (timeout != NULL && (PyFloat_CheckExact(timeout) || PyLong_CheckExact(timeout))) {
            return rcv_new(R_TIMED, timeout);
        }
    }
    return PyObject_Vectorcall(py_receive, args, nargsf, kwnames);
}

/* -- spawn ---------------------------------------------------------------------- */

static Py_ssize_t proc_pid_off, proc_table_off, proc_monitors_off, proc_callers_off, proc_watching_off, proc_links_off,
    proc_name_off;
static Py_ssize_t pid_node_off, pid_serial_off;
/* process.ProcessTable's and ids.NodeRef's slots, from init_table (types NULL until then) */
static PyTypeObject *Table_type, *NodeRef_type;
static Py_ssize_t table_ref_off, table_remote_off, table_guests_off, table_serials_off, table_procs_off,
    table_kernel_off, noderef_incarnation_off;
static int process_ready, call_ready;
static PyObject *process_defaults; /* tuple of (offset, value): Process.__init__'s other slots */
static PyObject *py_spawn, *py_call, *py_make_tag, *py_monitor_for_call, *py_undo_call_monitor, *py_outcome,
    *py_await_reply;
static PyObject *s_ref, *s_serials, *s_procs, *s_kernel, *s_monitored, *s_monitors, *s_pop;
static PyObject *s_remote, *s_guests, *s_incarnation, *s_send;
static PyObject *ids_globals, *s_origin, *s_tag_serials; /* ids.py's globals: make_tag reads _origin, _tag_serials */
static int spawn_ready;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

static inline void
set_slot(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    Py_INCREF(value);
    Py_XSETREF(SLOT(obj, off), value);
}

/* Where the __slots__ slot `name` of `type` lives in its instances; -1 with an error if it is none. */
static Py_ssize_t
slot_offset(PyObject *type, const char *name)
{
    PyObject *descr = PyObject_GetAttrString(type, name);
    if (descr == NULL) {
        return -1;
    }
    int slot = Py_TYPE(descr) == &PyMemberDescr_Type && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
    Py_ssize_t offset = slot ? ((PyMemberDescrObject *)descr)->d_member->offset : -1;
    Py_DECREF(descr);
    if (!slot) {
        PyErr_Format(PyExc_TypeError, "%R.%s must be a __slots__ slot", type, name);
    }
    return offset;
}

/* obj.name (a new reference): its slot at `off` when obj is exactly `type`, else getattr. */
static PyObject *
slot_or_attr(PyObject *obj, PyTypeObject *type, Py_ssize_t off, PyObject *name)
{
    if (Py_TYPE(obj) == type && SLOT(obj, off) != NULL) {
        Py_INCREF(SLOT(obj, off));
        return SLOT(obj, off);
    }
    return PyObject_GetAttr(obj, name);
}

#define TABLE_GET(table, field) slot_or_attr(table, Table_type, table_##field##_off, s_##field)

/* spawn_in(table, fn, args) for a coroutine function, no link and no name: what
 * process_body, Pid() and Process() make, set field by field. */
static PyObject *
fast_spawn(PyObject *table, PyObject *fn, PyObject *const *args, Py_ssize_t n)
{
    PyObject *coro = PyObject_Vectorcall(fn, args, n, NULL); /* only creates the coroutine */
    if (coro == NULL) {
        return NULL;
    }
    PyObject *ref = NULL, *serials = NULL, *procs = NULL, *kernel = NULL, *serial = NULL, *pid = NULL, *proc = NULL;
    if ((ref = TABLE_GET(table, ref)) == NULL || (serials = TABLE_GET(table, serials)) == NULL ||
        (procs = TABLE_GET(table, procs)) == NULL || (kernel = TABLE_GET(table, kernel)) == NULL) {
        goto fail;
    }
    if (!KernelCore_Check(kernel)) {
        PyErr_Format(PyExc_TypeError, "a process table's kernel must be a termite Kernel, got %.200R", kernel);
        goto fail;
    }
    serial = PyIter_Next(serials);
    if (serial == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "the process table ran out of serials");
        }
        goto fail;
    }
    pid = Pid_type->tp_alloc(Pid_type, 0);
    if (pid == NULL) {
        goto fail;
    }
    set_slot(pid, pid_node_off, ref);
    set_slot(pid, pid_serial_off, serial);
    set_slot(pid, pid_proc_offset, Py_None);
    proc = Process_type->tp_alloc(Process_type, 0);
    if (proc == NULL) {
        goto fail;
    }
    Task *t = (Task *)proc;
    PyObject **fields[] = {&t->value, &t->waiting, &t->foreign, &t->held, &t->mailbox, &t->wait_for, &t->tracers};
    for (size_t i = 0; i < sizeof(fields) / sizeof(fields[0]); i++) {
        Py_INCREF(Py_None);
        *fields[i] = Py_None;
    }
    t->woken = 1; /* its first step, counted as a wake-up (spawn_in's kernel.wake) */
    Py_INCREF(kernel);
    t->kernel = (KernelCore *)kernel;
    t->coro = coro;
    coro = NULL;
    set_slot(proc, proc_pid_off, pid);
    set_slot(proc, proc_table_off, table);
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(process_defaults); i++) {
        PyObject *entry = PyTuple_GET_ITEM(process_defaults, i);
        set_slot(proc, PyLong_AsSsize_t(PyTuple_GET_ITEM(entry, 0)), PyTuple_GET_ITEM(entry, 1));
    }
    set_slot(pid, pid_proc_offset, proc);
    if (PyDict_SetItem(procs, serial, proc) < 0 || rq_push(((KernelCore *)kernel)->ready, proc) < 0) {
        goto fail;
    }

    Py_DECREF(ref);
    Py_DECREF(serials);
    Py_DECREF(procs);
    Py_DECREF(serial);
    Py_DECREF(proc);
    if (++((KernelCore *)kernel)->spawned == SPAWN_BURST) { /* spawn_in's count: kernel._spawn_burst() */
        PyObject *r = PyObject_CallMethod(kernel, "_spawn_burst", NULL);
        if (r == NULL) { /* spawned all the same, as spawn_in's error would leave it */
            Py_DECREF(kernel);
            Py_DECREF(pid);
            return NULL;
        }
        Py_DECREF(r);
    }
    Py_DECREF(kernel);
    return pid;
fail:
    if (coro != NULL) { /* never started: close it so Python does not warn it was never awaited */
        PyObject *type, *value, *tb;
        PyErr_Fetch(&type, &value, &tb);
        PyObject *r = PyObject_CallMethodNoArgs(coro, s_close);
        Py_XDECREF(r);
        PyErr_Restore(type, value, tb);
        Py_DECREF(coro);
    }
    if (pid != NULL && SLOT(pid, pid_proc_offset) != NULL) {
        set_slot(pid, pid_proc_offset, Py_None);
    }
    Py_XDECREF(ref);
    Py_XDECREF(serials);
    Py_XDECREF(procs);
    Py_XDECREF(kernel);
    Py_XDECREF(serial);
    Py_XDECREF(pid);
    Py_XDECREF(proc);
    return NULL;
}

/* spawn(fn, *args): a coroutine function spawned with no keyword here; the rest in spawn.py. */
static PyObject *
k_spawn(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (!spawn_ready || !process_ready) {
        PyErr_SetString(PyExc_RuntimeError, "termite._core._kernelcore.init_spawn() was not called");
        return NULL;
    }
    Py_ssize_t n = PyVectorcall_NARGS(nargsf);
    PyObject *me = running_task();
    if (n >= 1 && kwnames == NULL && me != NULL && Py_TYPE(me) == Process_type &&
        PyFunction_Check(args[0]) && ((PyCodeObject *)PyFunction_GET_CODE(args[0]))->co_flags & CO_COROUTINE) {
        PyObject *table = SLOT(me, proc_table_off);
        if (table != NULL) {
            Py_INCREF(table);
            PyObject *pid = fast_spawn(table, args[0], args + 1, n - 1);
            Py_DECREF(table);
            return pid;
        }
    }
    return PyObject_Vectorcall(py_spawn, args, nargsf, kwnames);
}

/* mailbox._send_slow's first case, from a process: a pid of another node (its incarnation is not this
 * node's) goes to table.remote.send (the endpoint's outbox, itself C when built), counted and traced as
 * mailbox.send does.  NOT_HANDLED (borrowed, never returned to Python) for anything else: no process
 * running, no network, guests here (a migrant's pid must be looked up), a pid of this node. */
static PyObject *
send_remote(PyObject *dest, PyObject *msg)
{
    PyObject *sender = running_task();
    if (sender == NULL || !Task_Check(sender) || (((Task *)sender)->tracers != Py_None &&
                                                  ((Task *)sender)->tracers != NULL)) {
        return NOT_HANDLED;
    }
    PyObject *table = ((KernelCore *)cur_kernel)->table, *remote = NULL, *guests = NULL, *ref = NULL;
    PyObject *here_inc = NULL, *dest_inc = NULL, *result = NOT_HANDLED;
    Py_XINCREF(table);
    if (table == NULL || table == Py_None || (remote = TABLE_GET(table, remote)) == NULL || remote == Py_None ||
        (guests = TABLE_GET(table, guests)) == NULL || (ref = TABLE_GET(table, ref)) == NULL) {
        goto done;
    }
    int has_guests = PyObject_IsTrue(guests);
    PyObject *node = SLOT(dest, pid_node_off);
    if (has_guests != 0 || node == NULL || node == ref ||
        (dest_inc = slot_or_attr(node, NodeRef_type, noderef_incarnation_off, s_incarnation)) == NULL ||
        (here_inc = slot_or_attr(ref, NodeRef_type, noderef_incarnation_off, s_incarnation)) == NULL) {
        goto done;
    }
    int other = PyObject_RichCompareBool(dest_inc, here_inc, Py_NE);
    if (other == 1) {
        ((Task *)sender)->sent++;
        result = PyObject_VectorcallMethod(s_send, (PyObject *[]){remote, dest, msg}, 3, NULL);
    }
    else if (other < 0) {
        result = NULL;
    }
done:
    if (result == NOT_HANDLED && PyErr_Occurred()) {
        PyErr_Clear(); /* mailbox.send says what is wrong, or does what is right */
    }
    Py_XDECREF(table);
    Py_XDECREF(remote);
    Py_XDECREF(guests);
    Py_XDECREF(ref);
    Py_XDECREF(dest_inc);
    Py_XDECREF(here_inc);
    return result;
}

/* -- call ----------------------------------------------------------------------- */

/* ids.Tag while the C kernel runs: ids.py's Tag (a tuple, `<Tag origin/serial>`, pickled as
 * Tag((origin, serial))) with spare objects kept as CPython keeps tuples.  Every call makes a tag and drops
 * it with the reply; the Python class cost that call a heap allocation and subtype_dealloc (about 250
 * instructions).  Only a Tag of this exact type, of two ints, is kept; anything else goes as a tuple goes. */
#define TAG_SPARES 64
static PyObject *tag_spares[TAG_SPARES];
static int n_tag_spares;
static PyTypeObject CTag_Type;

static PyObject *
ctag_alloc(PyTypeObject *type, Py_ssize_t n)
{
    if (type == &CTag_Type && n == 2 && n_tag_spares > 0) {
        PyObject *tag = tag_spares[--n_tag_spares]; /* its items were cleared when it was kept */
        PyObject_InitVar((PyVarObject *)tag, type, 2);
        PyObject_GC_Track(tag);
        return tag;
    }
    return PyType_GenericAlloc(type, n);
}

static void
ctag_dealloc(PyObject *tag)
{
    if (Py_IS_TYPE(tag, &CTag_Type) && PyTuple_GET_SIZE(tag) == 2 && n_tag_spares < TAG_SPARES &&
        PyLong_CheckExact(PyTuple_GET_ITEM(tag, 0)) && PyLong_CheckExact(PyTuple_GET_ITEM(tag, 1))) {
        PyObject_GC_UnTrack(tag);
        for (Py_ssize_t i = 0; i < 2; i++) { /* ints: dropping them runs no code */
            Py_DECREF(PyTuple_GET_ITEM(tag, i));
            PyTuple_SET_ITEM(tag, i, NULL);
        }
        tag_spares[n_tag_spares++] = tag;
        return;
    }
    PyTuple_Type.tp_dealloc(tag);
}

/* f"<Tag {self[0]:x}/{self[1]}>" */
static PyObject *
ctag_repr(PyObject *tag)
{
    if (PyTuple_GET_SIZE(tag) < 2) {
        PyErr_SetString(PyExc_IndexError, "tuple index out of range");
        return NULL;
    }
    PyObject *hex = PyUnicode_FromString("x"), *plain = PyUnicode_FromString("");
    PyObject *origin = hex != NULL ? PyObject_Format(PyTuple_GET_ITEM(tag, 0), hex) : NULL;
    PyObject *serial = origin != NULL && plain != NULL ? PyObject_Format(PyTuple_GET_ITEM(tag, 1), plain) : NULL;
    PyObject *repr = serial != NULL ? PyUnicode_FromFormat("<Tag %U/%U>", origin, serial) : NULL;
    Py_XDECREF(hex);
    Py_XDECREF(plain);
    Py_XDECREF(origin);
    Py_XDECREF(serial);
    return repr;
}

/* (Tag, (tuple(self),)) */
static PyObject *
ctag_reduce(PyObject *tag, PyObject *Py_UNUSED(ignored))
{
    PyObject *items = PyTuple_GetSlice(tag, 0, PyTuple_GET_SIZE(tag));
    return items != NULL ? Py_BuildValue("O(N)", (PyObject *)&CTag_Type, items) : NULL;
}

static PyMethodDef ctag_methods[] = {
    {"__reduce__", (PyCFunction)ctag_reduce, METH_NOARGS, NULL},
    {NULL},
};

static PyTypeObject CTag_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "termite.Tag", /* where termite/__init__.py puts every public name */
    .tp_doc = "A universally unique reference, used to match a reply to its request.\n\n"
              "A tuple underneath, so equality and hashing run in C: ``call`` compares\n"
              "tags on every reply it waits for.",
    .tp_base = &PyTuple_Type,
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE,
    .tp_alloc = ctag_alloc,
    .tp_dealloc = ctag_dealloc,
    .tp_repr = ctag_repr,
    .tp_methods = ctag_methods,
};

/* ids.py's _origin and _tag_serials, which it binds once and again in a forked child: forget_tag_origin(),
 * registered with os.register_at_fork after ids.py's own hook, drops them there. */
static PyObject *tag_origin, *tag_serials;

static PyObject *
forget_tag_origin(PyObject *module, PyObject *Py_UNUSED(ignored))
{
    Py_CLEAR(tag_origin);
    Py_CLEAR(tag_serials);
    Py_RETURN_NONE;
}

/* ids.make_tag(): Tag((_origin, next(_tag_serials))), from ids.py's globals. */
static PyObject *
make_tag(void)
{
    if (tag_origin == NULL) { /* read once, and again after a fork (forget_tag_origin) */
        PyObject *origin = PyDict_GetItemWithError(ids_globals, s_origin);
        PyObject *serials = origin != NULL ? PyDict_GetItemWithError(ids_globals, s_tag_serials) : NULL;
        if (serials == NULL || Tag_type->tp_new != PyTuple_Type.tp_new) {
            return PyErr_Occurred() ? NULL : PyObject_CallNoArgs(py_make_tag);
        }
        Py_INCREF(origin);
        Py_INCREF(serials);
        tag_origin = origin;
        tag_serials = serials;
    }
    PyObject *origin = tag_origin, *serials = tag_serials;
    Py_INCREF(serials);
    PyObject *serial = PyIter_Next(serials);
    Py_DECREF(serials);
    if (serial == NULL) {
        return PyErr_Occurred() ? NULL : PyObject_CallNoArgs(py_make_tag);
    }
    PyObject *tag = Tag_type->tp_alloc(Tag_type, 2);
    if (tag == NULL) {
        Py_DECREF(serial);
        return NULL;
    }
    Py_INCREF(origin);
    PyTuple_SET_ITEM(tag, 0, origin);
    PyTuple_SET_ITEM(tag, 1, serial);
    return tag;
}

/* dict.pop(key, None) of an exact dict, the value dropped. */
static int
dict_discard(PyObject *dict, PyObject *key)
{
    PyObject *found = PyDict_GetItemWithError(dict, key);
    if (found != NULL) {
        return PyDict_DelItem(dict, key);
    }
    return PyErr_Occurred() ? -1 : 0;
}

enum { C_FAST, C_REPLY, C_WHOLE }; /* C_REPLY: drives call._await_reply; C_WHOLE: call.py's call itself */

/* What call(dest, msg[, timeout]) returns: call.py's call, step for step, for a
 * pid and no default; the rest of it (a reply already in the mailbox, a Down,
 * a timeout) is call.py's, called from here. */
typedef struct {
    PyObject_HEAD
    int mode, state;
    PyObject *dest, *msg, *timeout; /* timeout: NULL for None */
    Task *proc;
    PyObject *tag, *timer, *sub;
    PyObject *target; /* the local process called, while this is in its `callers` (links.py's PendingCall) */
} Call;

static PyTypeObject Call_Type;

static int
call_traverse(Call *c, visitproc visit, void *arg)
{
    Py_VISIT(c->dest);
    Py_VISIT(c->msg);
    Py_VISIT(c->timeout);
    Py_VISIT(c->proc);
    Py_VISIT(c->tag);
    Py_VISIT(c->timer);
    Py_VISIT(c->sub);
    Py_VISIT(c->target);
    return 0;
}

static int
call_clear(Call *c)
{
    Py_CLEAR(c->dest);
    Py_CLEAR(c->msg);
    Py_CLEAR(c->timeout);
    Py_CLEAR(c->proc);
    Py_CLEAR(c->tag);
    Py_CLEAR(c->timer);
    Py_CLEAR(c->sub);
    Py_CLEAR(c->target);
    return 0;
}

/* links._drop_call: take this call off its target's `callers`; 1 if it was there, 0 if not (its monitor
 * was settled: written into the dicts), -1 on error.  Its target is forgotten either way. */
static int
call_drop(Call *c)
{
    PyObject *target = c->target;
    if (target == NULL) {
        return 0;
    }
    c->target = NULL;
    int found = 0;
    PyObject *callers = SLOT(target, proc_callers_off);
    if (callers != NULL && PyList_CheckExact(callers)) {
        Py_ssize_t n = PyList_GET_SIZE(callers);
        if (n > 0 && PyList_GET_ITEM(callers, n - 1) == (PyObject *)c) {
            /* list.pop() without giving memory back: the next call puts one in again */
            Py_SET_SIZE(callers, n - 1);
            Py_DECREF(c);
            found = 1;
        }
        for (Py_ssize_t i = n - 2; i >= 0 && !found; i--) {
            if (PyList_GET_ITEM(callers, i) == (PyObject *)c) {
                found = PyList_SetSlice(callers, i, i + 1, NULL) < 0 ? -1 : 1;
            }
        }
    }
    Py_DECREF(target);
    return found;
}

static void
call_done(Call *c)
{
    c->state = S_DONE;
    if (c->target != NULL && call_drop(c) < 0) { /* it ends unanswered (an error, an exit signal) */
        PyErr_WriteUnraisable((PyObject *)c);
    }
    call_clear(c);
}

/* The `finally` of call._await_reply, for a call parked here. */
static int
call_unwind(Call *c, int timed_out)
{
    if (c->state != S_PARKED || c->mode != C_FAST || c->proc == NULL) {
        return 0;
    }
    Task *p = c->proc;
    Py_INCREF(Py_None);
    Py_XSETREF(p->wait_for, Py_None);
    if (p->waiting != DEAD) {
        Py_INCREF(Py_None);
        Py_XSETREF(p->waiting, Py_None);
    }
    if (c->timer != NULL && !timed_out) {
        if (task_timer_cancel((PyObject *)p->kernel, c->timer) < 0) {
            return -1;
        }
    }
    return 0;
}

static void
call_finalize(Call *c)
{
    if (c->state != S_PARKED || c->mode != C_FAST) {
        return;
    }
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (call_unwind(c, 0) < 0) {
        PyErr_WriteUnraisable((PyObject *)c);
    }
    call_done(c);
    PyErr_Restore(type, value, tb);
}

/* Spent Call objects kept for the next calls, as CPython keeps tuples: a call's round trip then allocates
 * and frees no memory for its awaitable.  Only one whose finalizer never ran goes here (the GC remembers a
 * finalized object, and would not run call_finalize again for its next call). */
#define CALL_SPARES 16
static Call *call_spares[CALL_SPARES];
static int n_call_spares;

static void
call_dealloc(Call *c)
{
    if (c->state == S_PARKED && PyObject_CallFinalizerFromDealloc((PyObject *)c) < 0) { /* see call_finalize */
        return;
    }
    PyObject_GC_UnTrack(c);
    call_clear(c);
    if (n_call_spares < CALL_SPARES && !PyObject_GC_IsFinalized((PyObject *)c)) {
        call_spares[n_call_spares++] = c;
        return;
    }
    PyObject_GC_Del(c);
}


/* A dict deletion on a key whose hash is known: a settled call's tag goes out of two dicts. */
#if PY_VERSION_HEX < 0x030D0000
#define dict_del_hashed(d, k, h) _PyDict_DelItem_KnownHash((d), (k), (h))
#else
#define dict_del_hashed(d, k, h) PyDict_DelItem((d), (k))
#endif

/* table.monitored for a process of kernel k (a borrowed reference), read once per kernel:
 * ProcessTable never rebinds it. */
static PyObject *
monitored_of(KernelCore *k, PyObject *table)
{
    if (k->monitored == NULL) {
        PyObject *monitored = PyObject_GetAttr(table, s_monitored);
        if (monitored == NULL) {
            return NULL;
        }
        if (!PyDict_CheckExact(monitored)) {
            Py_DECREF(monitored);
            PyErr_SetString(PyExc_TypeError, "a process table's `monitored` must be a dict");
            return NULL;
        }
        k->monitored = monitored;
    }
    return k->monitored;
}

/* links._undo_call_monitor(tag) for the process that made the call: a monitor in the dicts here, the rest
 * (another node's process, a monitor that fired) in links.py. */
static int
call_demonitor(Call *c)
{
    PyObject *table = SLOT(c->proc, proc_table_off);
    PyObject *monitored = table != NULL ? monitored_of(c->proc->kernel, table) : NULL;
    if (monitored == NULL) {
        PyErr_Clear();
        goto python;
    }
    Py_hash_t hash = PyObject_Hash(c->tag);
    if (hash == -1) {
        return -1;
    }
    PyObject *target = _PyDict_GetItem_KnownHash(monitored, c->tag, hash);
    if (target == NULL) {
        if (PyErr_Occurred()) {
            return -1;
        }
        goto python; /* not a local process's monitor: links.py tells the node it watches, or flushes its Down */
    }
    Py_INCREF(target);
    if (dict_del_hashed(monitored, c->tag, hash) < 0) {
        Py_DECREF(target);
        return -1;
    }
    PyObject *monitors;
    if (Py_TYPE(target) == Process_type && SLOT(target, proc_monitors_off) != NULL) {
        monitors = SLOT(target, proc_monitors_off);
        Py_INCREF(monitors);
    }
    else {
        monitors = PyObject_GetAttr(target, s_monitors);
    }
    Py_DECREF(target);
    if (monitors == NULL) {
        return -1;
    }
    int truth = PyObject_IsTrue(monitors);
    if (truth > 0 && PyDict_CheckExact(monitors)) {
        PyObject *found = _PyDict_GetItem_KnownHash(monitors, c->tag, hash);
        truth = found != NULL ? dict_del_hashed(monitors, c->tag, hash) : (PyErr_Occurred() ? -1 : 0);
    }
    else if (truth > 0) {
        PyObject *args[] = {monitors, c->tag, Py_None};
        PyObject *r = PyObject_VectorcallMethod(s_pop, args, 3, NULL);
        Py_XDECREF(r);
        truth = r == NULL ? -1 : 0;
    }
    Py_DECREF(monitors);
    return truth < 0 ? -1 : 0;
python: {
    PyObject *r = PyObject_CallOneArg(py_undo_call_monitor, c->tag);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}
}

/* links._unwatch_call: the call's monitor undone, wherever it is. */
static int
call_unwatch(Call *c)
{
    int dropped = call_drop(c);
    return dropped != 0 ? (dropped > 0 ? 0 : -1) : call_demonitor(c);
}

/* The answer is in: call.py's _outcome (a reply's value here). */
static PySendResult
call_finish(Call *c, PyObject *answer, PyObject **result)
{
    if (Py_TYPE(answer) != Down_type && call_unwatch(c) < 0) { /* a Down: the monitor fired, it is gone */
        call_done(c);
        *result = NULL;
        return PYGEN_ERROR;
    }
    if (Py_TYPE(answer) == &PyTuple_Type && PyTuple_GET_SIZE(answer) == 2) {
        PyObject *value = PyTuple_GET_ITEM(answer, 1);
        Py_INCREF(value);
        call_done(c);
        *result = value;
        return PYGEN_RETURN;
    }
    PyObject *args[] = {c->dest, c->tag, answer, c->timeout != NULL ? c->timeout : Py_None, NO_DEFAULT};
    PyObject *value = PyObject_Vectorcall(py_outcome, args, 5, NULL);
    call_done(c);
    *result = value;
    return value != NULL ? PYGEN_RETURN : PYGEN_ERROR;
}

static PySendResult
call_sub_send(Call *c, PyObject *arg, PyObject **result)
{
    PySendResult status = PyIter_Send(c->sub, arg, result);
    if (status == PYGEN_RETURN && c->mode == C_REPLY) {
        PyObject *answer = *result;
        status = call_finish(c, answer, result);
        Py_DECREF(answer);
        return status;
    }
    if (status != PYGEN_NEXT) {
        call_done(c);
    }
    return status;
}

/* Start call.py's own call(dest, msg[, timeout=...]) and drive it from here. */
static PySendResult
call_whole(Call *c, PyObject **result)
{
    c->mode = C_WHOLE;
    PyObject *args[] = {c->dest, c->msg, c->timeout};
    if (c->timeout != NULL) {
        PyObject *kwnames = PyTuple_Pack(1, kw_timeout);
        c->sub = kwnames != NULL ? PyObject_Vectorcall(py_call, args, 2, kwnames) : NULL;
        Py_XDECREF(kwnames);
    }
    else {
        c->sub = PyObject_Vectorcall(py_call, args, 2, NULL);
    }
    if (c->sub == NULL) {
        call_done(c);
        *result = NULL;
        return PYGEN_ERROR;
    }
    return call_sub_send(c, Py_None, result);
}

static PySendResult
call_error(Call *c, PyObject **result)
{
    call_done(c);
    *result = NULL;
    return PYGEN_ERROR;
}

static PySendResult
call_start(Call *c, PyObject *arg, PyObject **result)
{
    if (arg != Py_None) {
        PyErr_SetString(PyExc_TypeError, "can't send non-None value to a just-started coroutine");
        return call_error(c, result);
    }
    PyObject *me = running_task();
    if (me == NULL || Py_TYPE(me) != Process_type || !KernelCore_Check(((Task *)me)->kernel) ||
        SLOT(me, proc_table_off) == NULL || SLOT(me, proc_pid_off) == NULL) {
        return call_whole(c, result);
    }
    if (c->timeout != NULL) {
        int later = PyObject_RichCompareBool(c->timeout, zero, Py_GT);
        if (later < 0) {
            return call_error(c, result);
        }
        if (!later) {
            return call_whole(c, result); /* timeout=0, a negative one, nan: call.py says what */
        }
    }
    Task *p = (Task *)me;
    Py_INCREF(p);
    c->proc = p;
    c->tag = make_tag();
    if (c->tag == NULL) {
        return call_error(c, result);
    }
    PyObject *box = p->mailbox;
    Py_ssize_t start = box != NULL && box != Py_None ? PyObject_Size(box) : 0;
    if (start < 0) {
        return call_error(c, result);
    }
    /* links._watch_call: the reply tag doubles as the monitor reference; on a live process here the call
     * is only noted in its `callers` */
    PyObject *target = *(PyObject **)((char *)c->dest + pid_proc_offset);
    if (target != NULL && Py_TYPE(target) == Process_type && SLOT(target, proc_callers_off) != NULL) {
        PyObject *callers = SLOT(target, proc_callers_off);
        if (PyList_CheckExact(callers)) {
            if (PyList_Append(callers, (PyObject *)c) < 0) {
                return call_error(c, result);
            }
        }
        else if (callers == Py_None) {
            if ((callers = PyList_New(1)) == NULL) {
                return call_error(c, result);
            }
            Py_INCREF(c);
            PyList_SET_ITEM(callers, 0, (PyObject *)c);
            Py_XSETREF(SLOT(target, proc_callers_off), callers);
        }
        else {
            PyErr_SetString(PyExc_TypeError, "a process's `callers` must be a list or None");
            return call_error(c, result);
        }
        Py_INCREF(target);
        c->target = target;
    }
    else {
        PyObject *args[] = {me, c->dest, c->tag};
        PyObject *r = PyObject_Vectorcall(py_monitor_for_call, args, 3, NULL);
        if (r == NULL) {
            return call_error(c, result);
        }
        Py_DECREF(r);
    }
    /* send(pid, (self(), tag, msg)) */
    PyObject *request = PyTuple_Pack(3, SLOT(me, proc_pid_off), c->tag, c->msg);
    if (request == NULL) {
        return call_error(c, result);
    }
    PyObject *send_args[] = {c->dest, request};
    PyObject *r = k_send(NULL, send_args, 2, NULL);
    Py_DECREF(request);
    if (r == NULL) {
        return call_error(c, result);
    }
    Py_DECREF(r);
    /* _await_reply */
    box = p->mailbox;
    Py_ssize_t now = box != NULL && box != Py_None ? PyObject_Size(box) : 0;
    if (now < 0) {
        return call_error(c, result);
    }
    if (now > start) { /* a call to oneself: the reply may be here already */
        PyObject *startobj = PyLong_FromSsize_t(start);
        if (startobj == NULL) {
            return call_error(c, result);
        }
        PyObject *args[] = {me, c->tag, startobj, c->timeout != NULL ? c->timeout : Py_None};
        c->sub = PyObject_Vectorcall(py_await_reply, args, 4, NULL);
        Py_DECREF(startobj);
        if (c->sub == NULL) {
            return call_error(c, result);
        }
        c->mode = C_REPLY;
        return call_sub_send(c, Py_None, result);
    }
    if (c->timeout != NULL) {
        c->timer = task_timer((PyObject *)p->kernel, c->timeout, me);
        if (c->timer == NULL) {
            return call_error(c, result);
        }
    }
    Py_INCREF(c->tag);
    Py_XSETREF(p->wait_for, c->tag);
    Py_INCREF(REPLY);
    Py_XSETREF(p->waiting, REPLY);
    c->state = S_PARKED;
    Py_INCREF(PARK);
    *result = PARK;
    return PYGEN_NEXT;
}

static PySendResult
call_am_send(Call *c, PyObject *arg, PyObject **result)
{
    if (c->state == S_DONE) {
        PyErr_SetString(PyExc_RuntimeError, "cannot reuse already awaited coroutine");
        *result = NULL;
        return PYGEN_ERROR;
    }
    if (c->mode != C_FAST) {
        return call_sub_send(c, arg, result);
    }
    if (c->state == S_START) {
        return call_start(c, arg, result);
    }
    int timed_out = arg == TIMED_OUT;
    if (call_unwind(c, timed_out) < 0) {
        return call_error(c, result);
    }
    c->state = S_RESCHEDULED; /* woken: no longer parked, not done */
    return call_finish(c, arg, result);
}

static PyObject *
call_send(Call *c, PyObject *arg)
{
    PyObject *result;
    PySendResult status = call_am_send(c, arg, &result);
    return rcv_send_result(status, result);
}

static PyObject *
call_iternext(Call *c)
{
    PyObject *result;
    PySendResult status = call_am_send(c, Py_None, &result);
    if (status == PYGEN_RETURN && result == Py_None) {
        Py_DECREF(result);
        return NULL;
    }
    return rcv_send_result(status, result);
}

static PyObject *
call_throw(Call *c, PyObject *const *args, Py_ssize_t n)
{
    if (n < 1 || n > 3) {
        PyErr_SetString(PyExc_TypeError, "throw expected 1 to 3 arguments");
        return NULL;
    }
    if (c->mode != C_FAST && c->sub != NULL) {
        PyObject *sub = c->sub;
        Py_INCREF(sub);
        PyObject *res = PyObject_VectorcallMethod(
            s_throw, (PyObject *[]){sub, args[0], n > 1 ? args[1] : NULL, n > 2 ? args[2] : NULL}, n + 1, NULL);
        Py_DECREF(sub);
        if (res == NULL) {
            call_done(c);
        }
        return res;
    }
    if (call_unwind(c, 0) < 0) {
        call_done(c);
        return NULL;
    }
    call_done(c);
    return raise_thrown(args, n);
}

static PyObject *
call_close(Call *c, PyObject *Py_UNUSED(ignored))
{
    if (c->mode != C_FAST && c->sub != NULL) {
        PyObject *sub = c->sub;
        Py_INCREF(sub);
        PyObject *res = PyObject_CallMethodNoArgs(sub, s_close);
        Py_DECREF(sub);
        call_done(c);
        return res;
    }
    int err = call_unwind(c, 0);
    call_done(c);
    if (err < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef call_methods[] = {
    {"send", (PyCFunction)call_send, METH_O, NULL},
    {"throw", (PyCFunction)call_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)call_close, METH_NOARGS, NULL},
    {NULL},
};

/* What introspection (info.py) reads of a parked call: its destination and message, and call.py's call
 * when this drives it. */
static PyObject *
call_get_delegate(Call *c, void *closure)
{
    PyObject *o = c->mode == C_WHOLE && c->sub != NULL ? c->sub : Py_None;
    Py_INCREF(o);
    return o;
}

static PyMemberDef call_members[] = {
    {"dest", T_OBJECT, offsetof(Call, dest), READONLY, "whom it calls (None once done)"},
    {"msg", T_OBJECT, offsetof(Call, msg), READONLY, "the request (None once done)"},
    {"tag", T_OBJECT, offsetof(Call, tag), READONLY, "its tag, also its monitor's reference (None once done)"},
    {"target", T_OBJECT, offsetof(Call, target), READONLY, "the local process it waits on, while in its callers"},
    {NULL},
};

/* The caller's pid: links.settle_calls writes it into the monitors of the process called. */
static PyObject *
call_get_watcher(Call *c, void *closure)
{
    PyObject *o = c->proc != NULL && SLOT(c->proc, proc_pid_off) != NULL ? SLOT(c->proc, proc_pid_off) : Py_None;
    Py_INCREF(o);
    return o;
}

static PyGetSetDef call_getset[] = {
    {"_delegate", (getter)call_get_delegate, NULL, "call.py's call, when this drives it", NULL},
    {"watcher", (getter)call_get_watcher, NULL, "the caller's pid (None once done)", NULL},
    {NULL},
};

static PyAsyncMethods call_as_async = {
    .am_await = rcv_await,
    .am_send = (sendfunc)call_am_send,
};

static PyTypeObject Call_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "termite._core._kernelcore.Call",
    .tp_doc = "An awaited call() (termite/_core/call.py's call, in C).",
    .tp_basicsize = sizeof(Call),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)call_dealloc,
    .tp_traverse = (traverseproc)call_traverse,
    .tp_clear = (inquiry)call_clear,
    .tp_finalize = (destructor)call_finalize,
    .tp_as_async = &call_as_async,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)call_iternext,
    .tp_methods = call_methods,
    .tp_members = call_members,
    .tp_getset = call_getset,
};

/* call(dest, msg, timeout=None, default=NO_DEFAULT) */
static PyObject *
k_call(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (!call_ready || !ready_for_mail()) {
        PyErr_SetString(PyExc_RuntimeError, "termite._core._kernelcore.init_call() was not called");
        return NULL;
    }
    Py_ssize_t n = PyVectorcall_NARGS(nargsf), nkw = kwnames != NULL ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *timeout = n >= 3 ? args[2] : Py_None;
    int fast = (n == 2 || n == 3) && Py_TYPE(args[0]) == Pid_type;
    if (nkw == 1 && n == 2) {
        PyObject *name = PyTuple_GET_ITEM(kwnames, 0);
        fast = fast && (name == kw_timeout || PyUnicode_Compare(name, kw_timeout) == 0);
        timeout = args[2];
    }
    else if (nkw) {
        fast = 0;
    }
    if (fast && timeout != Py_None && !PyFloat_CheckExact(timeout) && !PyLong_CheckExact(timeout)) {
        fast = 0;
    }
    if (!fast) {
        return PyObject_Vectorcall(py_call, args, nargsf, kwnames);
    }
    Call *c;
    if (n_call_spares > 0) {
        c = call_spares[--n_call_spares];
        PyObject_Init((PyObject *)c, &Call_Type);
    }
    else if ((c = PyObject_GC_New(Call, &Call_Type)) == NULL) {
        return NULL;
    }
    c->mode = C_FAST;
    c->state = S_START;
    Py_INCREF(args[0]);
    c->dest = args[0];
    Py_INCREF(args[1]);
    c->msg = args[1];
    c->timeout = timeout != Py_None ? (Py_INCREF(timeout), timeout) : NULL;
    c->proc = NULL;
    c->tag = c->timer = c->sub = c->target = NULL;
    PyObject_GC_Track(c);
    return (PyObject *)c;
}

/* -- the end of a process ------------------------------------------------------- */

static PyObject *py_process_exited, *s_exit_waiters, *s_remove;

static int
empty_or_none(PyObject *o)
{
    return o == Py_None || ((PyAnySet_CheckExact(o) || PyDict_CheckExact(o) || PyList_CheckExact(o)) &&
                            PyObject_Size(o) == 0);
}

/* links.process_exited for a process that returned and that nobody hears about:
 * no links, no monitors, no name, no exit waiter; links.py's for every other end. */
static PyObject *
k_process_exited(PyObject *self, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    if (py_process_exited == NULL || !process_ready) {
        PyErr_SetString(PyExc_RuntimeError, "termite._core._kernelcore.init_exit() was not called");
        return NULL;
    }
    if (PyVectorcall_NARGS(nargsf) != 3 || kwnames != NULL || args[2] != Py_None ||
        Py_TYPE(args[0]) != Process_type) {
        return PyObject_Vectorcall(py_process_exited, args, nargsf, kwnames);
    }
    PyObject *proc = args[0];
    PyObject *pid = SLOT(proc, proc_pid_off), *table = SLOT(proc, proc_table_off);
    PyObject *links = SLOT(proc, proc_links_off), *monitors = SLOT(proc, proc_monitors_off);
    PyObject *name = SLOT(proc, proc_name_off), *callers = SLOT(proc, proc_callers_off);
    PyObject *watching = SLOT(proc, proc_watching_off);
    if (pid == NULL || table == NULL || links == NULL || monitors == NULL || callers == NULL || watching == NULL ||
        name != Py_None || Py_TYPE(pid) != Pid_type || !empty_or_none(links) || !empty_or_none(monitors) ||
        !empty_or_none(callers) || watching != Py_None) {
        return PyObject_Vectorcall(py_process_exited, args, nargsf, kwnames);
    }
    Py_INCREF(pid);
    Py_INCREF(table);
    PyObject *waiters = PyObject_GetAttr(table, s_exit_waiters), *ref = NULL, *procs = NULL, *r = NULL;
    if (waiters == NULL) {
        goto done;
    }
    if (!PyDict_CheckExact(waiters) ||
        (PyDict_GET_SIZE(waiters) && (PyDict_GetItemWithError(waiters, pid) != NULL || PyErr_Occurred()))) {
        if (!PyErr_Occurred()) {
            r = PyObject_Vectorcall(py_process_exited, args, nargsf, kwnames); /* someone waits for it */
        }
        goto done;
    }
    Task *t = (Task *)proc;
    PyObject **fields[] = {&t->waiting, &t->coro, &t->mailbox};
    PyObject *values[] = {DEAD, Py_None, Py_None};
    for (int i = 0; i < 3; i++) {
        Py_INCREF(values[i]);
        Py_XSETREF(*fields[i], values[i]);
    }
    set_slot(pid, pid_proc_offset, Py_None);
    /* table.remove(pid) */
    if ((ref = PyObject_GetAttr(table, s_ref)) == NULL) {
        goto done;
    }
    if (SLOT(pid, pid_node_off) == ref && SLOT(pid, pid_serial_off) != NULL) {
        if ((procs = PyObject_GetAttr(table, s_procs)) == NULL) {
            goto done;
        }
        if (PyDict_CheckExact(procs)) {
            r = dict_discard(procs, SLOT(pid, pid_serial_off)) < 0 ? NULL : (Py_INCREF(Py_None), Py_None);
            goto done;
        }
    }
    r = PyObject_CallMethodOneArg(table, s_remove, pid);
done:
    Py_DECREF(pid);
    Py_DECREF(table);
    Py_XDECREF(waiters);
    Py_XDECREF(ref);
    Py_XDECREF(procs);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *
init_exit(PyObject *module, PyObject *process_exited)
{
    Py_INCREF(process_exited);
    Py_XSETREF(py_process_exited, process_exited);
    Py_RETURN_NONE;
}

/* -- init ------------------------------------------------------------------- */

static int
keep(PyObject **slot, PyObject *o)
{
    Py_INCREF(o);
    Py_XSETREF(*slot, o);
    return 0;
}

static int
keep_type(PyTypeObject **slot, PyObject *o, const char *what)
{
    if (!PyType_Check(o)) {
        PyErr_Format(PyExc_TypeError, "%s must be a class", what);
        return -1;
    }
    Py_INCREF(o);
    Py_XSETREF(*slot, (PyTypeObject *)o);
    return 0;
}

static PyObject *
init_kernel(PyObject *module, PyObject *args)
{
    PyObject *park, *reschedule, *signal, *timed_out;
    if (!PyArg_ParseTuple(args, "OOOOn:init_kernel", &park, &reschedule, &signal, &timed_out, &SPAWN_BURST)) {
        return NULL;
    }
    if (keep_type(&Signal_type, signal, "Signal") < 0) {
        return NULL;
    }
    keep(&PARK, park);
    keep(&RESCHEDULE, reschedule);
    keep(&TIMED_OUT, timed_out);
    Py_RETURN_NONE;
}

static PyObject *
init_mailbox(PyObject *module, PyObject *args)
{
    PyObject *any_message, *scan, *reply, *delivered, *dead, *down, *refused, *tag, *pid, *deque;
    PyObject *send, *receive, *timeout_fn, *not_in_process, *no_default, *trace_sent, *trace_received;
    long fairness;
    if (!PyArg_ParseTuple(args, "OOOOOOOOOOOOOOOlOO:init_mailbox", &any_message, &scan, &reply, &delivered, &dead,
                          &down, &refused, &tag, &pid, &deque, &send, &receive, &timeout_fn, &not_in_process,
                          &no_default, &fairness, &trace_sent, &trace_received)) {
        return NULL;
    }
    if (keep_type(&Down_type, down, "Down") < 0 || keep_type(&Refused_type, refused, "Refused") < 0 ||
        keep_type(&Tag_type, tag, "Tag") < 0 || keep_type(&Pid_type, pid, "Pid") < 0) {
        return NULL;
    }
    PyObject *descr = PyObject_GetAttrString(pid, "_proc");
    if (descr == NULL) {
        return NULL;
    }
    int slot = Py_TYPE(descr) == &PyMemberDescr_Type && ((PyMemberDescrObject *)descr)->d_member->type == T_OBJECT_EX;
    pid_proc_offset = slot ? ((PyMemberDescrObject *)descr)->d_member->offset : -1;
    Py_DECREF(descr);
    if (!slot) {
        PyErr_SetString(PyExc_TypeError, "Pid._proc must be a __slots__ slot");
        return NULL;
    }
    keep(&ANY_MESSAGE, any_message);
    keep(&SCAN, scan);
    keep(&REPLY, reply);
    keep(&DELIVERED, delivered);
    keep(&DEAD, dead);
    keep(&deque_type, deque);
    keep(&py_send, send);
    keep(&py_receive, receive);
    keep(&timeout_result, timeout_fn);
    keep(&NotInProcess, not_in_process);
    keep(&NO_DEFAULT, no_default);
    keep(&py_trace_sent, trace_sent);
    keep(&py_trace_received, trace_received);
    FAIRNESS = fairness;
    PyObject *append = PyObject_GetAttrString(deque, "append");
    PyObject *popleft = PyObject_GetAttrString(deque, "popleft");
    if (append == NULL || popleft == NULL) {
        Py_XDECREF(append);
        Py_XDECREF(popleft);
        return NULL;
    }
    Py_XSETREF(deque_append, append);
    Py_XSETREF(deque_popleft, popleft);
    mailbox_ready = PARK != NULL;
    if (!mailbox_ready) {
        PyErr_SetString(PyExc_RuntimeError, "init_kernel() must be called before init_mailbox()");
        return NULL;
    }
    Py_RETURN_NONE;
}

/* init_table(ProcessTable, NodeRef): the slots the C kernel reads of a node's process table and of a NodeRef. */
static PyObject *
init_table(PyObject *module, PyObject *args)
{
    PyObject *table, *noderef;
    if (!PyArg_ParseTuple(args, "OO:init_table", &table, &noderef)) {
        return NULL;
    }
    if ((table_ref_off = slot_offset(table, "ref")) < 0 || (table_remote_off = slot_offset(table, "remote")) < 0 ||
        (table_guests_off = slot_offset(table, "guests")) < 0 ||
        (table_serials_off = slot_offset(table, "serials")) < 0 ||
        (table_procs_off = slot_offset(table, "procs")) < 0 || (table_kernel_off = slot_offset(table, "kernel")) < 0 ||
        (noderef_incarnation_off = slot_offset(noderef, "incarnation")) < 0 ||
        keep_type(&Table_type, table, "ProcessTable") < 0 || keep_type(&NodeRef_type, noderef, "NodeRef") < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* init_process(Process, Pid, defaults): Process's own slots and what Process.__init__ puts in
 * those it does not take as arguments; Pid's slots. */
static PyObject *
init_process(PyObject *module, PyObject *args)
{
    PyObject *process, *pid, *defaults;
    if (!PyArg_ParseTuple(args, "OOO!:init_process", &process, &pid, &PyDict_Type, &defaults)) {
        return NULL;
    }
    if (!PyType_Check(process) || !PyType_IsSubtype((PyTypeObject *)process, &Task_Type)) {
        PyErr_SetString(PyExc_TypeError, "Process must be a subclass of the C kernel's Task");
        return NULL;
    }
    if (keep_type(&Pid_type, pid, "Pid") < 0 || (proc_pid_off = slot_offset(process, "pid")) < 0 ||
        (proc_table_off = slot_offset(process, "table")) < 0 ||
        (proc_monitors_off = slot_offset(process, "monitors")) < 0 ||
        (proc_callers_off = slot_offset(process, "callers")) < 0 ||
        (proc_watching_off = slot_offset(process, "watching")) < 0 ||
        (proc_links_off = slot_offset(process, "links")) < 0 || (proc_name_off = slot_offset(process, "name")) < 0 ||
        (pid_node_off = slot_offset(pid, "node")) < 0 || (pid_serial_off = slot_offset(pid, "serial")) < 0 ||
        (pid_proc_offset = slot_offset(pid, "_proc")) < 0) {
        return NULL;
    }
    PyObject *entries = PyList_New(0);
    PyObject *name, *value;
    Py_ssize_t pos = 0;
    while (entries != NULL && PyDict_Next(defaults, &pos, &name, &value)) {
        const char *s = PyUnicode_AsUTF8(name);
        Py_ssize_t off = s != NULL ? slot_offset(process, s) : -1;
        PyObject *entry = off >= 0 ? Py_BuildValue("(nO)", off, value) : NULL;
        if (entry == NULL || PyList_Append(entries, entry) < 0) {
            Py_XDECREF(entry);
            Py_CLEAR(entries);
            break;
        }
        Py_DECREF(entry);
    }
    if (entries == NULL) {
        return NULL;
    }
    Py_XSETREF(process_defaults, PyList_AsTuple(entries));
    Py_DECREF(entries);
    if (process_defaults == NULL) {
        return NULL;
    }
    Py_INCREF(process);
    Py_XSETREF(Process_type, (PyTypeObject *)process);
    process_ready = 1;
    Py_RETURN_NONE;
}

static PyObject *
init_spawn(PyObject *module, PyObject *spawn)
{
    keep(&py_spawn, spawn);
    spawn_ready = 1;
    Py_RETURN_NONE;
}

static PyObject *
init_call(PyObject *module, PyObject *args)
{
    PyObject *call, *make_tag_fn, *monitor_for_call, *undo_call_monitor, *outcome, *await_reply;
    if (!PyArg_ParseTuple(args, "OOOOOO:init_call", &call, &make_tag_fn, &monitor_for_call, &undo_call_monitor,
                          &outcome, &await_reply)) {
        return NULL;
    }
    PyObject *globals = PyObject_GetAttrString(make_tag_fn, "__globals__");
    if (globals == NULL || !PyDict_Check(globals)) {
        Py_XDECREF(globals);
        PyErr_SetString(PyExc_TypeError, "make_tag must be ids.make_tag, a Python function");
        return NULL;
    }
    Py_XSETREF(ids_globals, globals);
    if (!process_ready) {
        PyErr_SetString(PyExc_RuntimeError, "init_process() must be called before init_call()");
        return NULL;
    }
    keep(&py_call, call);
    keep(&py_make_tag, make_tag_fn);
    keep(&py_monitor_for_call, monitor_for_call);
    keep(&py_undo_call_monitor, undo_call_monitor);
    keep(&py_outcome, outcome);
    keep(&py_await_reply, await_reply);
    call_ready = 1;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"init_process", init_process, METH_VARARGS, "init_process(Process, Pid, defaults)"},
    {"init_table", init_table, METH_VARARGS, "init_table(ProcessTable, NodeRef)"},
    {"init_spawn", init_spawn, METH_O, "init_spawn(spawn)"},
    {"init_exit", init_exit, METH_O, "init_exit(process_exited)"},
    {"init_call", init_call, METH_VARARGS,
     "init_call(call, make_tag, _monitor_for_call, _undo_call_monitor, _outcome, _await_reply)"},
    {"init_kernel", init_kernel, METH_VARARGS, "init_kernel(PARK, RESCHEDULE, Signal, TIMED_OUT, SPAWN_BURST)"},
    {"init_mailbox", init_mailbox, METH_VARARGS,
     "init_mailbox(ANY_MESSAGE, SCAN, REPLY, DELIVERED, DEAD, Down, Refused, Tag, Pid, deque, send, receive, "
     "_timeout_result, NotInProcess, NO_DEFAULT, FAIRNESS, _trace_sent, _trace_received)"},
    {"init_patterns", init_patterns, METH_O, "init_patterns(ANY)"},
    {"forget_tag_origin", forget_tag_origin, METH_NOARGS, "After a fork: read ids.py's tag origin again."},
    {"current_task", current_task, METH_NOARGS, "The task running on this thread, or None outside any task."},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "termite._core._kernelcore",
    .m_doc = "The kernel's hot path in C: run queue, turn, deliver, send, receive (see the contract in its source).",
    .m_size = -1,
    .m_methods = module_methods,
};

static int
intern(PyObject **slot, const char *s)
{
    *slot = PyUnicode_InternFromString(s);
    return *slot != NULL ? 0 : -1;
}

PyMODINIT_FUNC
PyInit__kernelcore(void)
{
    if (intern(&s_BUDGET, "BUDGET") || intern(&s_TURN_SECONDS, "TURN_SECONDS") || intern(&s_signal, "_signal") ||
        intern(&s_await_foreign, "_await_foreign") || intern(&s_timeout, "timeout") || intern(&s_value, "value") ||
        intern(&s_throw, "throw") || intern(&s_close, "close") || intern(&s_qualname, "__qualname__") ||
        intern(&s_ref, "ref") || intern(&s_serials, "serials") || intern(&s_procs, "procs") ||
        intern(&s_kernel, "kernel") || intern(&s_monitored, "monitored") || intern(&s_monitors, "monitors") ||
        intern(&s_pop, "pop") || intern(&s_exit_waiters, "exit_waiters") || intern(&s_remove, "remove") ||
        intern(&s_origin, "_origin") || intern(&s_tag_serials, "_tag_serials") ||
        intern(&s_remote, "remote") || intern(&s_guests, "guests") || intern(&s_incarnation, "incarnation") ||
        intern(&s_send, "send") || intern(&s_arm_timer, "_arm_timer") || intern(&s_burst_over, "_burst_over") ||
        intern(&s_kick, "kick") ||
        intern(&s_rebuild_timers, "_rebuild_timers")) {
        return NULL;
    }
    PyObject *heapq = PyImport_ImportModule("heapq"), *time_module = PyImport_ImportModule("time");
    heappush = heapq == NULL ? NULL : PyObject_GetAttrString(heapq, "heappush");
    monotonic = time_module == NULL ? NULL : PyObject_GetAttrString(time_module, "monotonic");
    Py_XDECREF(heapq);
    Py_XDECREF(time_module);
    if (heappush == NULL || monotonic == NULL) {
        return NULL;
    }
    kw_timeout = s_timeout;
    Py_INCREF(kw_timeout);
    zero = PyLong_FromLong(0);
    if (zero == NULL) {
        return NULL;
    }
    PyTypeObject *types[] = {&RunQueue_Type, &KernelCore_Type, &Task_Type, &Local_Type, &FastFunction_Type,
                             &Receive_Type, &Call_Type, &CTag_Type};
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
        if (PyType_Ready(types[i]) < 0) {
            return NULL;
        }
    }
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "RunQueue", (PyObject *)&RunQueue_Type) < 0 ||
        PyModule_AddObjectRef(m, "KernelCore", (PyObject *)&KernelCore_Type) < 0 ||
        PyModule_AddObjectRef(m, "Task", (PyObject *)&Task_Type) < 0 ||
        PyModule_AddObjectRef(m, "FastFunction", (PyObject *)&FastFunction_Type) < 0 ||
        PyModule_AddObjectRef(m, "Receive", (PyObject *)&Receive_Type) < 0 ||
        PyModule_AddObjectRef(m, "Call", (PyObject *)&Call_Type) < 0 ||
        PyModule_AddObjectRef(m, "Tag", (PyObject *)&CTag_Type) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    PyObject *local = PyType_GenericNew(&Local_Type, NULL, NULL);
    if (local == NULL || PyModule_AddObject(m, "local", local) < 0) {
        Py_XDECREF(local);
        Py_DECREF(m);
        return NULL;
    }
    struct {
        const char *name;
        vectorcallfunc fn;
    } functions[] = {{"deliver", k_deliver}, {"send", k_send}, {"receive", k_receive}, {"spawn", k_spawn},
                     {"call", k_call}, {"process_exited", k_process_exited}};
    for (size_t i = 0; i < sizeof(functions) / sizeof(functions[0]); i++) {
        PyObject *f = ff_new(functions[i].fn);
        if (f == NULL || PyModule_AddObject(m, functions[i].name, f) < 0) {
            Py_XDECREF(f);
            Py_DECREF(m);
            return NULL;
        }
    }
    return m;
}
