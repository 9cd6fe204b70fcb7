/* termite._move._framestate: read and write the suspended frame of a generator or
 * coroutine, for live process migration (termite/_move/continuation.py).
 *
 * CPython 3.11 only: a generator embeds its _PyInterpreterFrame (gi_iframe),
 * whose layout is internal and changes in every minor version.  On other
 * versions the module builds with SUPPORTED = False and no functions.
 *
 *   get_frame(gen, null) -> (state, func, lasti, localsplus, stack, exc)
 *   set_frame(gen, func, state, lasti, localsplus, stack, exc, null)
 *   finish(gen) -> bool
 *
 * `null` stands for a NULL slot (an unbound local, a NULL the compiler
 * pushed before a call) in both directions.  Everything is checked before
 * anything is written: bad input raises, it never crashes the interpreter.
 * (What set_frame cannot check is that the stack *contents* fit the code at
 * lasti: callers pass what get_frame gave for the same code.)
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030C0000
#define TERMITE_FRAMES 1
#define Py_BUILD_CORE 1
#include "internal/pycore_frame.h"
#undef Py_BUILD_CORE
#include "opcode.h"
#endif

#ifdef TERMITE_FRAMES

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
    PyCodeObject *code = frame->f_code;
    int nlocals = code->co_nlocalsplus;
    int depth = frame->stacktop - nlocals;
    if (frame->f_func == NULL || depth < 0 || depth > code->co_stacksize) {
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
    return Py_BuildValue("(iOiNNO)", state, (PyObject *)frame->f_func,
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
    PyCodeObject *old_code = frame->f_code;

    /* (The frame's size is nlocalsplus + stacksize, both checked below.)
     * The generator must be fresh (made by calling a function over code
     * shaped like `code`), and still hold its frame. */
    if (g->gi_frame_state >= FRAME_CLEARED || g->gi_frame_state == FRAME_EXECUTING
        || g->gi_frame_state == FRAME_SUSPENDED || frame->stacktop != old_code->co_nlocalsplus) {
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
    _Py_CODEUNIT *instructions = _PyCode_CODE(code);
    Py_ssize_t ninstructions = Py_SIZE(code);  /* in code units */
    if (state == FRAME_SUSPENDED) {
        /* Suspended means: at a YIELD_VALUE, followed by its RESUME. */
        if (lasti < 0 || lasti + 1 >= ninstructions
            || _Py_OPCODE(instructions[lasti]) != YIELD_VALUE
            || (_Py_OPCODE(instructions[lasti + 1]) != RESUME
                && _Py_OPCODE(instructions[lasti + 1]) != RESUME_QUICK)) {
            PyErr_Format(PyExc_ValueError, "instruction offset %d is not a yield in %U", lasti,
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
    PyTuple_SET_ITEM(old, nlocals, swap((PyObject **)&frame->f_func, func));
    PyTuple_SET_ITEM(old, nlocals + 1, swap((PyObject **)&frame->f_code, (PyObject *)code));
    PyTuple_SET_ITEM(old, nlocals + 2, swap((PyObject **)&g->gi_code, (PyObject *)code));
    PyTuple_SET_ITEM(old, nlocals + 3, swap(&g->gi_exc_state.exc_value, exc == null ? NULL : exc));
    /* f_globals and f_builtins are borrowed from f_func. */
    frame->f_globals = ((PyFunctionObject *)func)->func_globals;
    frame->f_builtins = ((PyFunctionObject *)func)->func_builtins;
    if (state == FRAME_SUSPENDED) {
        frame->prev_instr = instructions + lasti;
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
    if (g->gi_frame_state == FRAME_CREATED || g->gi_frame_state == FRAME_SUSPENDED) {
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

#else /* not CPython 3.11 */

static PyMethodDef methods[] = {{NULL, NULL, 0, NULL}};

#endif

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "termite._move._framestate", "Suspended generator frames (CPython 3.11).", -1, methods,
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
