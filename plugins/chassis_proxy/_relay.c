/* The relay legs' data_received in C: relay.py's hot path without the interpreter.
 *
 * relay.py is the reference: its RelayLeg classes hold the same fields and do the same
 * thing in Python, and they are what runs when this module was not built (no compiler).
 * Here is only what every buffer of a relayed connection pays for: forwarding it, the
 * counters, and, with query digests on, recording a repeated command whose answer is
 * shaped as its last one. Everything else (a first answer, an answer to follow across
 * reads, a command the server does not answer, the slow log) is a call to the same
 * Python method of relay.Tracking that the reference makes, so behaviour lives in one
 * place. tests/proxy/test_relay_legs.py runs the same conversations through both.
 *
 * Leg.kind selects the behaviour (relay.py sets it from each class's KIND):
 * 0 server leg, 1 client leg, 2 tracked client leg, 3 tracked server leg.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

/* Protocol facts the legs need (chassis_mysql.constants.Command; the test checks them). */
#define COM_QUIT 0x01
#define COM_QUERY 0x03
#define COM_STMT_EXECUTE 0x17
#define COM_STMT_SEND_LONG_DATA 0x18
#define COM_STMT_CLOSE 0x19

enum { KIND_SERVER = 0, KIND_CLIENT = 1, KIND_TRACKED_CLIENT = 2, KIND_TRACKED_SERVER = 3 };

typedef struct {
    PyObject_HEAD
    PyObject *on_lost;
    PyObject *transport;
    PyObject *peer;
    PyObject *last;
    PyObject *at_command;
    PyObject *tracking;
    PyObject *turn;
    Py_ssize_t nbytes;
    Py_ssize_t commands;
    char is_client;
    char paused;
    int kind;
} Leg;

static PyObject *s_write, *s_pending, *s_started, *s_tracker, *s_slots, *s_answer, *s_follow,
    *s_whole, *s_unanswered, *s_times, *s_pend, *s_last, *s_size, *s_head, *s_tail,
    *s_long_query_time, *s_slow;

static int unanswered(unsigned char command)
{
    return command == COM_QUIT || command == COM_STMT_CLOSE || command == COM_STMT_SEND_LONG_DATA;
}

/* time.monotonic(): CLOCK_MONOTONIC in seconds, the clock relay.py and queries.py use. */
static double monotonic(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* 0 when turn, the flag both legs share (a query is running), is a one-item list. */
static int check_turn(PyObject *turn)
{
    if (turn != NULL && PyList_Check(turn) && PyList_GET_SIZE(turn) >= 1)
        return 0;
    PyErr_SetString(PyExc_TypeError, "a relay leg's turn must be a one-item list");
    return -1;
}

/* turn[0] = value */
static int set_turn(Leg *self, PyObject *value)
{
    if (check_turn(self->turn) < 0)
        return -1;
    PyObject *old = PyList_GET_ITEM(self->turn, 0);
    Py_INCREF(value);
    PyList_SET_ITEM(self->turn, 0, value);
    Py_XDECREF(old);
    return 0;
}

static int turn_is_set(Leg *self, int *result)
{
    if (check_turn(self->turn) < 0)
        return -1;
    int truth = PyObject_IsTrue(PyList_GET_ITEM(self->turn, 0));
    if (truth < 0)
        return -1;
    *result = truth;
    return 0;
}

/* What every leg does with a buffer: keep it as the last, count it, write it on. */
static int forward(Leg *self, PyObject *data, Py_ssize_t n)
{
    Py_INCREF(data);
    Py_XSETREF(self->last, data);
    self->nbytes += n;
    if (self->peer == NULL || self->peer == Py_None) {
        PyErr_SetString(PyExc_RuntimeError, "a relay leg has no peer transport");
        return -1;
    }
    PyObject *args[2] = {self->peer, data};
    PyObject *r = PyObject_VectorcallMethod(s_write, args, 2 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 0;
}

static PyObject *call_method(PyObject *obj, PyObject *name, PyObject *a, PyObject *b)
{
    PyObject *args[3] = {obj, a, b};
    size_t nargs = b != NULL ? 3 : (a != NULL ? 2 : 1);
    return PyObject_VectorcallMethod(name, args, nargs | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
}

/* Returns 1 when at_command took the buffer (the proxy is stopping), 0 if not, -1 on error. */
static int stopping_at_command(Leg *self)
{
    if (self->at_command == NULL || self->at_command == Py_None)
        return 0;
    int running;
    if (turn_is_set(self, &running) < 0)
        return -1;
    if (running)
        return 0;
    PyObject *r = PyObject_CallNoArgs(self->at_command);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return 1;
}

static int client_data(Leg *self, PyObject *data, const unsigned char *p, Py_ssize_t n)
{
    if (n > 4 && p[3] == 0) {
        int taken = stopping_at_command(self);
        if (taken != 0)
            return taken < 0 ? -1 : 0;
        self->commands += 1;
        if (!unanswered(p[4]) && set_turn(self, Py_True) < 0)
            return -1;
    }
    return forward(self, data, n);
}

static int tracked_client_data(Leg *self, PyObject *data, const unsigned char *p, Py_ssize_t n)
{
    int starts = n > 4 && p[3] == 0;
    if (starts) {
        int taken = stopping_at_command(self);
        if (taken != 0)
            return taken < 0 ? -1 : 0;
    }
    if (forward(self, data, n) < 0)
        return -1;
    if (!starts)
        return 0;
    self->commands += 1;
    PyObject *tracking = self->tracking;
    PyObject *pending = PyObject_GetAttr(tracking, s_pending);
    if (pending == NULL)
        return -1;
    int idle = pending == Py_None;
    Py_DECREF(pending);
    if (unanswered(p[4])) {
        if (idle) {
            PyObject *r = call_method(tracking, s_unanswered, data, NULL);
            if (r == NULL)
                return -1;
            Py_DECREF(r);
        }
        return 0;
    }
    if (set_turn(self, Py_True) < 0)
        return -1;
    if (!idle)
        return 0;
    if (PyObject_SetAttr(tracking, s_pending, data) < 0)
        return -1;
    PyObject *started = PyFloat_FromDouble(monotonic());
    if (started == NULL)
        return -1;
    int rc = PyObject_SetAttr(tracking, s_started, started);
    Py_DECREF(started);
    return rc;
}

/* relay.Tracking.timed for an answer shaped as its slot's last one. */
static int timed(PyObject *tracking, PyObject *slot, PyObject *data)
{
    double now = monotonic();
    PyObject *started_obj = PyObject_GetAttr(tracking, s_started);
    if (started_obj == NULL)
        return -1;
    double started = PyFloat_AsDouble(started_obj);
    Py_DECREF(started_obj);
    if (started == -1.0 && PyErr_Occurred())
        return -1;
    double seconds = now - started;
    PyObject *times = PyObject_GetAttr(slot, s_times);
    if (times == NULL)
        return -1;
    if (!PyList_Check(times)) {
        Py_DECREF(times);
        PyErr_SetString(PyExc_TypeError, "a digest slot's times must be a list");
        return -1;
    }
    if (PyList_GET_SIZE(times) == 0) {
        PyObject *r = call_method(slot, s_pend, NULL, NULL);
        if (r == NULL) {
            Py_DECREF(times);
            return -1;
        }
        Py_DECREF(r);
    }
    PyObject *value = PyFloat_FromDouble(seconds);
    if (value == NULL) {
        Py_DECREF(times);
        return -1;
    }
    int rc = PyList_Append(times, value);
    Py_DECREF(times);
    if (rc < 0) {
        Py_DECREF(value);
        return -1;
    }
    PyObject *last = PyFloat_FromDouble(now);
    if (last == NULL || PyObject_SetAttr(slot, s_last, last) < 0) {
        Py_XDECREF(last);
        Py_DECREF(value);
        return -1;
    }
    Py_DECREF(last);
    PyObject *limit_obj = PyObject_GetAttr(tracking, s_long_query_time);
    if (limit_obj == NULL) {
        Py_DECREF(value);
        return -1;
    }
    double limit = PyFloat_AsDouble(limit_obj);
    Py_DECREF(limit_obj);
    if (limit == -1.0 && PyErr_Occurred()) {
        Py_DECREF(value);
        return -1;
    }
    if (seconds >= limit) {
        PyObject *args[4] = {tracking, slot, data, value};
        PyObject *r = PyObject_VectorcallMethod(s_slow, args, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        if (r == NULL) {
            Py_DECREF(value);
            return -1;
        }
        Py_DECREF(r);
    }
    Py_DECREF(value);
    return 0;
}

/* 1 when the answer in p[0:n] is shaped as slot's last one (size, head, tail), else 0. */
static int shaped_as_last(PyObject *slot, const unsigned char *p, Py_ssize_t n)
{
    PyObject *size_obj = PyObject_GetAttr(slot, s_size);
    if (size_obj == NULL)
        return -1;
    Py_ssize_t size = PyLong_AsSsize_t(size_obj);
    Py_DECREF(size_obj);
    if (size == -1 && PyErr_Occurred())
        return -1;
    if (size != n)
        return 0;
    PyObject *head = PyObject_GetAttr(slot, s_head);
    if (head == NULL)
        return -1;
    PyObject *tail = PyObject_GetAttr(slot, s_tail);
    if (tail == NULL) {
        Py_DECREF(head);
        return -1;
    }
    int same = 0;
    if (PyBytes_Check(head) && PyBytes_Check(tail)) {
        Py_ssize_t h = PyBytes_GET_SIZE(head), t = PyBytes_GET_SIZE(tail);
        /* head_at is slice(0, len(head)) and tail_at slice(size - len(tail), size):
           an empty slice reads b"", so a head or tail longer than the answer never matches */
        same = h <= n && t <= n && memcmp(p, PyBytes_AS_STRING(head), h) == 0 &&
               memcmp(p + n - t, PyBytes_AS_STRING(tail), t) == 0;
    }
    Py_DECREF(head);
    Py_DECREF(tail);
    return same;
}

static int tracked_server_data(Leg *self, PyObject *data, const unsigned char *p, Py_ssize_t n)
{
    if (set_turn(self, Py_False) < 0 || forward(self, data, n) < 0)
        return -1;
    PyObject *tracking = self->tracking;
    PyObject *packet = PyObject_GetAttr(tracking, s_pending);
    if (packet == NULL)
        return -1;
    if (packet == Py_None) {
        Py_DECREF(packet);
        return 0;
    }
    if (!PyBytes_Check(packet)) {
        Py_DECREF(packet);
        PyErr_SetString(PyExc_TypeError, "relay.Tracking.pending must be bytes or None");
        return -1;
    }
    int rc = 0;
    PyObject *r = NULL;
    Py_ssize_t plen = PyBytes_GET_SIZE(packet);
    if (plen == 0) {  /* an answer followed, or the client's turn over */
        PyObject *tracker = PyObject_GetAttr(tracking, s_tracker);
        if (tracker == NULL) {
            Py_DECREF(packet);
            return -1;
        }
        if (tracker != Py_None) {
            r = call_method(tracking, s_answer, data, NULL);
            rc = r == NULL ? -1 : 0;
            Py_XDECREF(r);
        }
        else {
            rc = PyObject_SetAttr(tracking, s_pending, Py_None);
        }
        Py_DECREF(tracker);
        Py_DECREF(packet);
        return rc;
    }
    /* the first answer to a command */
    if (PyObject_SetAttr(tracking, s_pending, Py_None) < 0) {
        Py_DECREF(packet);
        return -1;
    }
    const unsigned char *q = (const unsigned char *)PyBytes_AS_STRING(packet);
    unsigned char command = plen > 4 ? q[4] : 0;
    PyObject *key = NULL;
    if (command == COM_STMT_EXECUTE && plen > 4) {
        key = PyBytes_FromStringAndSize((const char *)q + 4, plen >= 9 ? 5 : plen - 4);
        if (key == NULL) {
            Py_DECREF(packet);
            return -1;
        }
    }
    else if (command == COM_QUERY && plen > 4) {
        key = packet;
        Py_INCREF(key);
    }
    if (key == NULL) {
        r = call_method(tracking, s_follow, packet, data);
        Py_DECREF(packet);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        return 0;
    }
    PyObject *slots = PyObject_GetAttr(tracking, s_slots);
    PyObject *slot = NULL;
    if (slots != NULL) {
        if (PyDict_CheckExact(slots)) {
            slot = PyDict_GetItemWithError(slots, key);  /* borrowed */
            Py_XINCREF(slot);
        }
        else {
            PyErr_SetString(PyExc_TypeError, "relay.Tracking.slots must be a dict");
        }
    }
    Py_DECREF(key);
    Py_XDECREF(slots);
    if (slot == NULL && PyErr_Occurred()) {
        Py_DECREF(packet);
        return -1;
    }
    int shaped = slot == NULL ? 0 : shaped_as_last(slot, p, n);
    if (shaped < 0) {
        rc = -1;
    }
    else if (shaped) {
        /* Tracking.whole for an answer shaped as the slot's last one, without its lookups */
        rc = timed(tracking, slot, data);
    }
    else {
        /* a first answer, or not shaped as the last */
        r = call_method(tracking, s_whole, packet, data);
        if (r == NULL) {
            rc = -1;
        }
        else {
            int whole = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (whole < 0) {
                rc = -1;
            }
            else if (!whole) {
                r = call_method(tracking, s_follow, packet, data);
                rc = r == NULL ? -1 : 0;
                Py_XDECREF(r);
            }
        }
    }
    Py_XDECREF(slot);
    Py_DECREF(packet);
    return rc;
}

static PyObject *Leg_data_received(Leg *self, PyObject *data)
{
    PyObject *owned = NULL;
    if (!PyBytes_Check(data)) {  /* uvloop and asyncio give bytes; anything else is copied */
        owned = PyBytes_FromObject(data);
        if (owned == NULL)
            return NULL;
        data = owned;
    }
    const unsigned char *p = (const unsigned char *)PyBytes_AS_STRING(data);
    Py_ssize_t n = PyBytes_GET_SIZE(data);
    int rc;
    switch (self->kind) {
    case KIND_CLIENT:
        rc = client_data(self, data, p, n);
        break;
    case KIND_TRACKED_CLIENT:
    case KIND_TRACKED_SERVER:
        if (self->tracking == NULL || self->tracking == Py_None) {
            PyErr_SetString(PyExc_TypeError, "a tracked relay leg needs its relay.Tracking");
            rc = -1;
        }
        else {
            rc = self->kind == KIND_TRACKED_CLIENT ? tracked_client_data(self, data, p, n)
                                                   : tracked_server_data(self, data, p, n);
        }
        break;
    default:
        rc = set_turn(self, Py_False) < 0 ? -1 : forward(self, data, n);
        break;
    }
    Py_XDECREF(owned);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Leg(kind, on_lost, transport, peer, is_client, turn, tracking=None): relay.LegBase's
 * __init__ with the kind, in C, as a login sets up two legs. */
static int Leg_init(Leg *self, PyObject *args, PyObject *kwds)
{
    static char *names[] = {"kind", "on_lost", "transport", "peer", "is_client", "turn", "tracking", NULL};
    int kind, is_client;
    PyObject *on_lost, *transport, *peer, *turn, *tracking = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "iOOOpO|O:Leg", names, &kind, &on_lost, &transport,
                                     &peer, &is_client, &turn, &tracking))
        return -1;
    if (kind < KIND_SERVER || kind > KIND_TRACKED_SERVER) {
        PyErr_Format(PyExc_ValueError, "a relay leg's kind is 0 to 3, not %d", kind);
        return -1;
    }
    if (check_turn(turn) < 0)
        return -1;
    self->kind = kind;
    self->is_client = (char)is_client;
    self->paused = 0;
    self->nbytes = 0;
    self->commands = 0;
    Py_INCREF(on_lost);
    Py_XSETREF(self->on_lost, on_lost);
    Py_INCREF(transport);
    Py_XSETREF(self->transport, transport);
    Py_INCREF(peer);
    Py_XSETREF(self->peer, peer);
    Py_INCREF(turn);
    Py_XSETREF(self->turn, turn);
    Py_INCREF(tracking);
    Py_XSETREF(self->tracking, tracking);
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    if (empty == NULL)
        return -1;
    Py_XSETREF(self->last, empty);
    Py_XSETREF(self->at_command, Py_NewRef(Py_None));
    return 0;
}

/* Leg is a static type: the heap subclass's own traverse (subtype_traverse) visits the
 * instance's type before calling this one, so this does not. */
static int Leg_traverse(Leg *self, visitproc visit, void *arg)
{
    Py_VISIT(self->on_lost);
    Py_VISIT(self->transport);
    Py_VISIT(self->peer);
    Py_VISIT(self->last);
    Py_VISIT(self->at_command);
    Py_VISIT(self->tracking);
    Py_VISIT(self->turn);
    return 0;
}

static int Leg_clear(Leg *self)
{
    Py_CLEAR(self->on_lost);
    Py_CLEAR(self->transport);
    Py_CLEAR(self->peer);
    Py_CLEAR(self->last);
    Py_CLEAR(self->at_command);
    Py_CLEAR(self->tracking);
    Py_CLEAR(self->turn);
    return 0;
}

static void Leg_dealloc(Leg *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    Leg_clear(self);
    tp->tp_free((PyObject *)self);
}

static PyMethodDef Leg_methods[] = {
    {"data_received", (PyCFunction)Leg_data_received, METH_O,
     "Forward a buffer to the peer, count it and, when tracking, record its command."},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Leg_members[] = {
    {"on_lost", T_OBJECT, offsetof(Leg, on_lost), 0, NULL},
    {"transport", T_OBJECT, offsetof(Leg, transport), 0, NULL},
    {"peer", T_OBJECT, offsetof(Leg, peer), 0, NULL},
    {"last", T_OBJECT, offsetof(Leg, last), 0, NULL},
    {"at_command", T_OBJECT, offsetof(Leg, at_command), 0, NULL},
    {"tracking", T_OBJECT, offsetof(Leg, tracking), 0, NULL},
    {"turn", T_OBJECT, offsetof(Leg, turn), 0, NULL},
    {"nbytes", T_PYSSIZET, offsetof(Leg, nbytes), 0, NULL},
    {"commands", T_PYSSIZET, offsetof(Leg, commands), 0, NULL},
    {"is_client", T_BOOL, offsetof(Leg, is_client), 0, NULL},
    {"paused", T_BOOL, offsetof(Leg, paused), 0, NULL},
    {"kind", T_INT, offsetof(Leg, kind), 0, NULL},
    {NULL, 0, 0, 0, NULL},
};

static PyTypeObject LegType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "chassis_proxy._relay.Leg",
    .tp_doc = PyDoc_STR("The fields and data_received of relay.py's legs, in C."),
    .tp_basicsize = sizeof(Leg),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_BASETYPE | Py_TPFLAGS_HAVE_GC,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Leg_init,
    .tp_dealloc = (destructor)Leg_dealloc,
    .tp_traverse = (traverseproc)Leg_traverse,
    .tp_clear = (inquiry)Leg_clear,
    .tp_methods = Leg_methods,
    .tp_members = Leg_members,
};

static struct PyModuleDef relay_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "chassis_proxy._relay",
    .m_doc = PyDoc_STR("relay.py's hot path in C (see relay.py, the reference)."),
    .m_size = -1,
};

static const struct {
    PyObject **name;
    const char *text;
} names[] = {
    {&s_write, "write"}, {&s_pending, "pending"}, {&s_started, "started"}, {&s_tracker, "tracker"},
    {&s_slots, "slots"}, {&s_answer, "answer"}, {&s_follow, "follow"}, {&s_whole, "whole"},
    {&s_unanswered, "unanswered"}, {&s_times, "times"}, {&s_pend, "pend"}, {&s_last, "last"},
    {&s_size, "size"}, {&s_head, "head"}, {&s_tail, "tail"}, {&s_long_query_time, "long_query_time"},
    {&s_slow, "slow_answer"},
};

PyMODINIT_FUNC PyInit__relay(void)
{
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if ((*names[i].name = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    if (PyType_Ready(&LegType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&relay_module);
    if (m == NULL)
        return NULL;
    Py_INCREF(&LegType);
    if (PyModule_AddObject(m, "Leg", (PyObject *)&LegType) < 0) {
        Py_DECREF(&LegType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "COM_QUIT", COM_QUIT) < 0 ||
        PyModule_AddIntConstant(m, "COM_QUERY", COM_QUERY) < 0 ||
        PyModule_AddIntConstant(m, "COM_STMT_EXECUTE", COM_STMT_EXECUTE) < 0 ||
        PyModule_AddIntConstant(m, "COM_STMT_SEND_LONG_DATA", COM_STMT_SEND_LONG_DATA) < 0 ||
        PyModule_AddIntConstant(m, "COM_STMT_CLOSE", COM_STMT_CLOSE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
