/* termite._move._framestate: read and write the suspended frame of a generator or
 * coroutine, for live process migration (termite/_move/continuation.py).
 *
 * CPython 3.11, 3.12 and 3.13: a generator embeds its _PyInterpreterFrame
 * (gi_iframe), whose layout is internal and changes in every minor version;
 * what differs is gathered in one section below ("Version differences").  On
 * other versions, on PyPy and on free-threaded builds (3.13t: other threads may
 * touch a frame while it is read or written) the module builds with
 * SUPPORTED = False and no functions.
 *
 *   get_frame(gen, null) -> (state, func, lasti, localsplus, stack, exc)
 *   set_frame(gen, func, state, lasti, localsplus, stack, exc, null)
 *   finish(gen) -> bool
 *
 * `state` is the generator's gi_frame_state (CREATED, SUSPENDED, and on 3.13
 * SUSPENDED_YIELD_FROM, suspended in an await or a yield from: the module
 * has these constants).  `lasti` is CPython's own _PyInterpreterFrame_LASTI,
 * in code units (inline caches included), the same as frame.f_lasti // 2: for
 * a suspended frame, the YIELD_VALUE on 3.11 and 3.12 (prev_instr), the
 * RESUME right after it on 3.13 (instr_ptr: where it goes on).
 *
 * `null` stands for a NULL slot (an unbound local, a NULL the compiler
 * pushed before a call) in both directions.  Everything is checked before
 * anything is written: bad input raises, it never crashes the interpreter.
 * (What set_frame cannot check is that the stack *contents* fit the code at
 * lasti: callers pass what get_frame gave for the same code.)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 && !defined(PYPY_VERSION) && !defined(Py_GIL_DISABLED)
#define TERMITE_FRAMES 1
#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE
#include "opcode.h"
#endif

#ifdef TERMITE_FRAMES

/* -- Version differences ----------------------------------------------------------
 *
 * FRAME_CODE(f)         the frame's code object (3.13: f_executable)
 * FRAME_FUNC(f), FRAME_FUNC_SLOT(f)  the frame's function, and where it holds it
 *                       (3.11: f_func; then f_funcobj)
 * GEN_CODE_SLOT(g)      3.11 only: the generator's own gi_code, kept equal to the frame's
 * base_opcode(code, i)  the opcode at code unit i, under what sys.monitoring (and
 *                       from 3.12 sys.settrace) put over it: INSTRUMENTED_LINE, _INSTRUCTION
 * IS_YIELD(op), IS_RESUME(op)  the opcodes a suspended frame sits between, in the
 *                       forms specializing and sys.monitoring give them
 * YIELD_OFFSET(lasti)   where the YIELD_VALUE is, given a suspended frame's lasti
 * SET_LASTI(f, code, lasti)  make a suspended frame go on after its YIELD_VALUE
 * IS_SUSPENDED(state)   a suspended state (3.13 has two)
 * STATE_FITS(state, code, at)  3.13: SUSPENDED_YIELD_FROM exactly when the YIELD_VALUE's
 *                       oparg says so (gi_yieldfrom and throw() rely on it)
 */
#define CODEUNITS(code) _PyCode_CODE(code)

#if PY_VERSION_HEX < 0x030C0000                         /* 3.11 */
#define FRAME_CODE(f) ((f)->f_code)
#define FRAME_CODE_SLOT(f) ((PyObject **)&(f)->f_code)
#define FRAME_FUNC(f) ((PyObject *)(f)->f_func)
#define FRAME_FUNC_SLOT(f) ((PyObject **)&(f)->f_func)
#define GEN_CODE_SLOT(g) ((PyObject **)&(g)->gi_code)
#define OPCODE(unit) _Py_OPCODE(unit)
#define OPARG(unit) _Py_OPARG(unit)
#define IS_YIELD(op) ((op) == YIELD_VALUE)
#define IS_RESUME(op) ((op) == RESUME || (op) == RESUME_QUICK)
#define YIELD_OFFSET(lasti) (lasti)
#define SET_LASTI(f, code, lasti) ((f)->prev_instr = CODEUNITS(code) + (lasti))
#define FRAME_SUSPENDED_YIELD_FROM FRAME_SUSPENDED
#define IS_SUSPENDED(state) ((state) == FRAME_SUSPENDED)
#define STATE_FITS(state, code, at) 1

#elif PY_VERSION_HEX < 0x030D0000                       /* 3.12 */
#define FRAME_CODE(f) ((f)->f_code)
#define FRAME_CODE_SLOT(f) ((PyObject **)&(f)->f_code)
#define FRAME_FUNC(f) ((f)->f_funcobj)
#define FRAME_FUNC_SLOT(f) (&(f)->f_funcobj)
#define OPCODE(unit) ((unit).op.code)
#define OPARG(unit) ((unit).op.arg)
#define IS_YIELD(op) ((op) == YIELD_VALUE || (op) == INSTRUMENTED_YIELD_VALUE)
#define IS_RESUME(op) ((op) == RESUME || (op) == INSTRUMENTED_RESUME)
#define YIELD_OFFSET(lasti) (lasti)
/* prev_instr: the code unit before the next one to run, here the YIELD_VALUE. */
#define SET_LASTI(f, code, lasti) ((f)->prev_instr = CODEUNITS(code) + (lasti))
#define FRAME_SUSPENDED_YIELD_FROM FRAME_SUSPENDED
#define IS_SUSPENDED(state) ((state) == FRAME_SUSPENDED)
#define STATE_FITS(state, code, at) 1
#define MONITORED_CODE 1

#else                                                   /* 3.13 */
#define FRAME_CODE(f) ((PyCodeObject *)(f)->f_executable)
#define FRAME_CODE_SLOT(f) (&(f)->f_executable)
#define FRAME_FUNC(f) ((f)->f_funcobj)
#define FRAME_FUNC_SLOT(f) (&(f)->f_funcobj)
#define OPCODE(unit) ((unit).op.code)
#define OPARG(unit) ((unit).op.arg)
#define IS_YIELD(op) ((op) == YIELD_VALUE || (op) == INSTRUMENTED_YIELD_VALUE)
#define IS_RESUME(op) ((op) == RESUME || (op) == RESUME_CHECK || (op) == INSTRUMENTED_RESUME)
/* instr_ptr: the instruction to run next, here the RESUME after the YIELD_VALUE
 * (YIELD_VALUE has no inline cache). */
#define YIELD_OFFSET(lasti) ((lasti) - 1)
#define SET_LASTI(f, code, lasti) ((f)->instr_ptr = CODEUNITS(code) + (lasti))
#define IS_SUSPENDED(state) FRAME_STATE_SUSPENDED(state)
/* YIELD_VALUE sets gi_frame_state = FRAME_SUSPENDED + oparg. */
#define STATE_FITS(state, code, at) ((state) == FRAME_SUSPENDED + OPARG(CODEUNITS(code)[at]))
#define MONITORED_CODE 1
#endif

/* As CPython's _Py_GetBaseOpcode (not exported): a line event's instruction
 * keeps the one it covers in lines[i], an instruction event's in
 * per_instruction_opcodes[i], in that order.  (3.11 traces without
 * rewriting the code.) */
static int
base_opcode(PyCodeObject *code, Py_ssize_t i)
{
    int op = OPCODE(CODEUNITS(code)[i]);
#ifdef MONITORED_CODE
    _PyCoMonitoringData *monitoring = code->_co_monitoring;
    if (op == INSTRUMENTED_LINE && monitoring != NULL && monitoring->lines != NULL) {
        op = monitoring->lines[i].original_opcode;
    }
    if (op == INSTRUMENTED_INSTRUCTION && monitoring != NULL && monitoring->per_instruction_opcodes != NULL) {
        op = monitoring->per_instruction_opcodes[i];
    }
#endif
    return op;
}

/* -- Reading and writing frames (the same on every version) ----------------------- */

static _PyInterpreterFrame *
frame_of(PyObject *gen)
{
    return (_PyInterpreterFrame *)((PyGenObject *)gen)->gi_iframe;
}

/* Generators and coroutines only: async generators add wrapped values and
 * asend/athrow objects that this module does not handle. */
static int
check_gen(PyObject *gen)
{
    if (PyGen_CheckExact(gen) || PyCoro_CheckExact(gen)) {
        return 0;
    }
    PyErr_Format(PyExc_TypeError, "expected a generator or a coroutine, got %.100s",
                 Py_TYPE(gen)->tp_name);
    return -1;
}

static PyObject *
get_frame(PyObject *module, PyObject *args)
{
    PyObject *gen, *null;
    if (!PyArg_ParseTuple(args, "OO:get_frame", &gen, &null) || check_gen(gen) < 0) {
        return NULL;
    }
    int state = ((PyGenObject *)gen)->gi_frame_state;
    if (state >= FRAME_COMPLETED || state == FRAME_EXECUTING) {
        /* No frame to read: finished, or running right now. */
        return Py_BuildValue("(iOi()()O)", state, Py_None, -1, Py_None);
    }
    _PyInterpreterFrame *frame = frame_of(gen);
    PyCodeObject *code = FRAME_CODE(frame);
    if (FRAME_FUNC(frame) == NULL || code == NULL || !PyCode_Check(code)) {  /* 3.13: f_executable may be None */
        PyErr_SetString(PyExc_RuntimeError, "generator frame in an unexpected state");
        return NULL;
    }
    int nlocals = code->co_nlocalsplus;
    int depth = frame->stacktop - nlocals;
    if (depth < 0 || depth > code->co_stacksize) {
        PyErr_SetString(PyExc_RuntimeError, "generator frame in an unexpected state");
        return NULL;
    }
    PyObject *localsplus = PyTuple_New(nlocals);
    PyObject *stack = PyTuple_New(depth);
    if (localsplus == NULL || stack == NULL) {
        Py_XDECREF(localsplus);
        Py_XDECREF(stack);
        return NULL;
    }
    for (int i = 0; i < nlocals + depth; i++) {
        PyObject *value = frame->localsplus[i];
        value = value != NULL ? value : null;
        Py_INCREF(value);
        if (i < nlocals) {
            PyTuple_SET_ITEM(localsplus, i, value);
        }
        else {
            PyTuple_SET_ITEM(stack, i - nlocals, value);
        }
    }
    PyObject *exc = ((PyGenObject *)gen)->gi_exc_state.exc_value;
    return Py_BuildValue("(iOiNNO)", state, FRAME_FUNC(frame),
                         _PyInterpreterFrame_LASTI(frame), localsplus, stack,
                         exc != NULL ? exc : null);
}

/* Swap *slot for a new strong reference to value; return the old one to drop later. */
static PyObject *
swap(PyObject **slot, PyObject *value)
{
    PyObject *old = *slot;
    Py_XINCREF(value);
    *slot = value;
    return old;
}

static PyObject *
set_frame(PyObject *module, PyObject *args)
{
    PyObject *gen, *func, *localsplus, *stack, *exc, *null;
    int state, lasti;
    if (!PyArg_ParseTuple(args, "OO!iiO!O!OO:set_frame", &gen, &PyFunction_Type, &func,
                          &state, &lasti, &PyTuple_Type, &localsplus, &PyTuple_Type, &stack,
                          &exc, &null)
        || check_gen(gen) < 0) {
        return NULL;
    }
    PyGenObject *g = (PyGenObject *)gen;
    _PyInterpreterFrame *frame = frame_of(gen);
    PyCodeObject *code = (PyCodeObject *)((PyFunctionObject *)func)->func_code;
    PyCodeObject *old_code = FRAME_CODE(frame);

    /* (The frame's size is nlocalsplus + stacksize, both checked below.)
     * The generator must be fresh (made by calling a function over code
     * shaped like `code`), and still hold its frame. */
    if (g->gi_frame_state >= FRAME_CLEARED || g->gi_frame_state == FRAME_EXECUTING
        || IS_SUSPENDED(g->gi_frame_state) || frame->stacktop != old_code->co_nlocalsplus) {
        PyErr_SetString(PyExc_ValueError, "set_frame needs a generator that never ran");
        return NULL;
    }
    if (!PyCode_Check(code) || code->co_nlocalsplus != old_code->co_nlocalsplus
        || code->co_stacksize != old_code->co_stacksize
        || (code->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ITERABLE_COROUTINE))
               != (old_code->co_flags & (CO_GENERATOR | CO_COROUTINE | CO_ITERABLE_COROUTINE))) {
        PyErr_SetString(PyExc_ValueError, "the function's code does not fit this generator's frame");
        return NULL;
    }
    Py_ssize_t nlocals = code->co_nlocalsplus;
    Py_ssize_t depth = PyTuple_GET_SIZE(stack);
    if (PyTuple_GET_SIZE(localsplus) != nlocals || depth > code->co_stacksize) {
        PyErr_SetString(PyExc_ValueError, "wrong number of locals, or a stack deeper than the code allows");
        return NULL;
    }
    Py_ssize_t ninstructions = Py_SIZE(code);  /* in code units */
    if (IS_SUSPENDED(state)) {
        /* Suspended means: at a YIELD_VALUE, followed by its RESUME. */
        int at = YIELD_OFFSET(lasti);
        if (at < 0 || at + 1 >= ninstructions
            || !IS_YIELD(base_opcode(code, at)) || !IS_RESUME(base_opcode(code, at + 1))) {
            PyErr_Format(PyExc_ValueError, "instruction offset %d is not a yield in %U", lasti,
                         code->co_qualname);
            return NULL;
        }
        if (!STATE_FITS(state, code, at)) {
            PyErr_Format(PyExc_ValueError, "state %d does not fit the yield at %d in %U", state, lasti,
                         code->co_qualname);
            return NULL;
        }
    }
    else if (state == FRAME_CREATED) {
        /* Not started: the fresh frame already sits where it should. */
        if (lasti != _PyInterpreterFrame_LASTI(frame) || depth != 0) {
            PyErr_SetString(PyExc_ValueError, "a generator that never ran has no stack");
            return NULL;
        }
    }
    else {
        PyErr_Format(PyExc_ValueError, "cannot set a frame to state %d", state);
        return NULL;
    }

    /* All checked: write, keeping what is replaced until the frame is whole
     * (dropping it may run arbitrary code). */
    PyObject *old = PyTuple_New(nlocals + 4);
    if (old == NULL) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nlocals; i++) {
        PyObject *value = PyTuple_GET_ITEM(localsplus, i);
        PyTuple_SET_ITEM(old, i, swap(&frame->localsplus[i], value == null ? NULL : value));
    }
    for (Py_ssize_t i = 0; i < depth; i++) {  /* the stack was empty: nothing to replace */
        PyObject *value = PyTuple_GET_ITEM(stack, i);
        frame->localsplus[nlocals + i] = Py_XNewRef(value == null ? NULL : value);
    }
    frame->stacktop = (int)(nlocals + depth);
    PyTuple_SET_ITEM(old, nlocals, swap(FRAME_FUNC_SLOT(frame), func));
    PyTuple_SET_ITEM(old, nlocals + 1, swap(FRAME_CODE_SLOT(frame), (PyObject *)code));
    PyTuple_SET_ITEM(old, nlocals + 2, swap(&g->gi_exc_state.exc_value, exc == null ? NULL : exc));
#ifdef GEN_CODE_SLOT
    PyTuple_SET_ITEM(old, nlocals + 3, swap(GEN_CODE_SLOT(g), (PyObject *)code));
#else
    PyTuple_SET_ITEM(old, nlocals + 3, Py_NewRef(Py_None));
#endif
    /* f_globals and f_builtins are borrowed from the function. */
    frame->f_globals = ((PyFunctionObject *)func)->func_globals;
    frame->f_builtins = ((PyFunctionObject *)func)->func_builtins;
    if (IS_SUSPENDED(state)) {
        SET_LASTI(frame, code, lasti);
    }
    g->gi_frame_state = (int8_t)state;
    Py_DECREF(old);
    Py_RETURN_NONE;
}

/* Mark a suspended or unstarted generator as finished, so that it can never
 * run again and deallocating it runs no finally block, no __exit__ and no
 * "never awaited" warning; its frame is still cleared (references dropped)
 * when it is deallocated. */
static PyObject *
finish(PyObject *module, PyObject *gen)
{
    if (check_gen(gen) < 0) {
        return NULL;
    }
    PyGenObject *g = (PyGenObject *)gen;
    if (g->gi_frame_state == FRAME_CREATED || IS_SUSPENDED(g->gi_frame_state)) {
        g->gi_frame_state = FRAME_COMPLETED;
        Py_RETURN_TRUE;
    }
    Py_RETURN_FALSE;
}

static PyMethodDef methods[] = {
    {"get_frame", get_frame, METH_VARARGS,
     "get_frame(gen, null) -> (state, func, lasti, localsplus, stack, exc)"},
    {"set_frame", set_frame, METH_VARARGS,
     "set_frame(gen, func, state, lasti, localsplus, stack, exc, null): fill a fresh generator's frame"},
    {"finish", finish, METH_O, "finish(gen) -> bool: mark a generator finished without running it"},
    {NULL, NULL, 0, NULL},
};

#else /* not CPython 3.11 to 3.13 */

static PyMethodDef methods[] = {{NULL, NULL, 0, NULL}};

#endif

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "termite._move._framestate", "Suspended generator frames (CPython 3.11 to 3.13).", -1, methods,
};

PyMODINIT_FUNC
PyInit__framestate(void)
{
    PyObject *module = PyModule_Create(&module_def);
    if (module == NULL) {
        return NULL;
    }
#ifdef TERMITE_FRAMES
    int supported = 1;
    if (PyModule_AddIntConstant(module, "CREATED", FRAME_CREATED) < 0
        || PyModule_AddIntConstant(module, "SUSPENDED", FRAME_SUSPENDED) < 0
        || PyModule_AddIntConstant(module, "SUSPENDED_YIELD_FROM", FRAME_SUSPENDED_YIELD_FROM) < 0
        || PyModule_AddIntConstant(module, "EXECUTING", FRAME_EXECUTING) < 0
        || PyModule_AddIntConstant(module, "COMPLETED", FRAME_COMPLETED) < 0) {
        Py_DECREF(module);
        return NULL;
    }
#else
    int supported = 0;
#endif
    if (PyModule_AddObjectRef(module, "SUPPORTED", supported ? Py_True : Py_False) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
