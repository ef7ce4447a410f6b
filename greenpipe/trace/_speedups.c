/*
 * Compiled fast path of the trace decoder.
 *
 * FastDecoder.decode does what PyFastDecoder.decode in _decode.py does:
 * parse the lines of a chunk with orjson and turn each complete, ordinary
 * event into an Event without running Python code. It stops at the first
 * line that needs anything else and returns that line's offset, so every
 * quirk and every rare case stays in the Python slow path. The tests
 * compare both versions on every real trace.
 *
 * Lines that begin with '{' and end with '}' are parsed a group at a
 * time, copied into one JSON array, because one orjson call per group
 * costs less than one per line. A group that fails to parse, or gives
 * another number of items than it has lines, is parsed line by line, in
 * place in the chunk. The parsed lines after one the slow path must see
 * are kept for the next call.
 *
 * Events are built without calling Event.__init__: the slots are written
 * through the offsets of the class's member descriptors, which the
 * constructor checks once.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

enum {
    F_NAME,
    F_CATEGORY,
    F_PID,
    F_TID,
    F_TS,
    F_DUR,
    F_PHASE,
    F_ARGS,
    F_PATH,
    F_HOSTNAME,
    N_FIELDS
};

static const char *const slot_names[N_FIELDS] = {
    "name", "category", "pid", "tid", "ts",
    "dur", "phase", "args", "path", "hostname",
};

/*
 * Event: the compiled form of greenpipe.trace.Event.
 *
 * The fast decoder leaves an event untracked by the collector when its
 * fields hold only strings, numbers, None and an untracked args dict (as
 * orjson builds it), as CPython does for such a dict. A replay keeps many
 * thousands of events in flight, and every collection would otherwise
 * walk them all. Such an args dict is reachable only through the event,
 * so reading event.args, assigning a field or pickling tracks the event
 * again before anything can put a container into it. Events built by the
 * constructor are always tracked, because the caller may still hold the
 * args dict it passed.
 * NOTE: object.__getattribute__(event, "args") and gc.get_referents(event)
 * reach args without tracking the event; a cycle then made through that
 * dict is never freed.
 */
typedef struct {
    PyObject_HEAD
    PyObject *fields[N_FIELDS];
    /* The ArgsConverter that still has to convert the numbers in args,
     * or NULL. */
    PyObject *pending;
} EventObject;

static PyTypeObject Event_Type;
static int event_normalise_args(EventObject *self);

/* Whether the collector may need to see through value. */
static int
may_be_tracked(PyObject *value)
{
    if (value == NULL || value == Py_None || PyUnicode_CheckExact(value) ||
        PyLong_CheckExact(value) || !PyObject_IS_GC(value)) {
        return 0;
    }
    if (PyTuple_CheckExact(value) || PyDict_CheckExact(value)) {
        return PyObject_GC_IsTracked(value);
    }
    return 1;
}

/* Stop tracking a new event whose fields cannot lead to a cycle. */
static void
event_untrack_if_plain(EventObject *event)
{
    int i;
    for (i = 0; i < N_FIELDS; i++) {
        if (may_be_tracked(event->fields[i])) {
            return;
        }
    }
    PyObject_GC_UnTrack(event);
}

static PyObject *
Event_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"name", "category", "pid", "tid", "ts", "dur",
                               "phase", "args", "path", "hostname", NULL};
    PyObject *values[N_FIELDS] = {NULL};
    values[F_PATH] = Py_None;
    values[F_HOSTNAME] = Py_None;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "OOOOOOOO|OO:Event", keywords, &values[0], &values[1],
            &values[2], &values[3], &values[4], &values[5], &values[6],
            &values[7], &values[8], &values[9])) {
        return NULL;
    }
    EventObject *self = (EventObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    int i;
    for (i = 0; i < N_FIELDS; i++) {
        Py_INCREF(values[i]);
        self->fields[i] = values[i];
    }
    return (PyObject *)self;
}

static int
Event_traverse(EventObject *self, visitproc visit, void *arg)
{
    int i;
    for (i = 0; i < N_FIELDS; i++) {
        Py_VISIT(self->fields[i]);
    }
    Py_VISIT(self->pending);
    return 0;
}

static int
Event_clear(EventObject *self)
{
    int i;
    for (i = 0; i < N_FIELDS; i++) {
        Py_CLEAR(self->fields[i]);
    }
    Py_CLEAR(self->pending);
    return 0;
}

static void
Event_dealloc(EventObject *self)
{
    PyObject_GC_UnTrack(self);
    /* The trashcan defers the freeing of nested events, so a long chain
       of events held in each other's fields cannot overflow the C stack. */
    Py_TRASHCAN_BEGIN(self, Event_dealloc)
    Event_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
    Py_TRASHCAN_END
}

/* The interned name "args", set when the module is initialised. */
static PyObject *args_name;

static int
is_args_name(PyObject *name)
{
    return name == args_name ||
           (PyUnicode_Check(name) && PyUnicode_GET_LENGTH(name) == 4 &&
            PyUnicode_CompareWithASCIIString(name, "args") == 0);
}

static int
Event_setattro(EventObject *self, PyObject *name, PyObject *value)
{
    if (PyObject_GenericSetAttr((PyObject *)self, name, value) < 0) {
        return -1;
    }
    if (self->pending != NULL && is_args_name(name)) {
        Py_CLEAR(self->pending); /* a new args dict is taken as it is */
    }
    /* The caller may still have value: a dict without a container in
     * it can get one later, even one that refers to this event. */
    if ((may_be_tracked(value) || (value != NULL && PyDict_Check(value))) &&
        !PyObject_GC_IsTracked((PyObject *)self)) {
        PyObject_GC_Track(self);
    }
    return 0;
}

/* Track the event before its args dict is handed out. */
static void
track_before_args(EventObject *self)
{
    if (!PyObject_GC_IsTracked((PyObject *)self)) {
        PyObject_GC_Track(self);
    }
}

static PyObject *
Event_getattro(EventObject *self, PyObject *name)
{
    if ((self->pending != NULL || !PyObject_GC_IsTracked((PyObject *)self)) &&
        is_args_name(name)) {
        if (event_normalise_args(self) < 0) {
            return NULL;
        }
        track_before_args(self);
    }
    return PyObject_GenericGetAttr((PyObject *)self, name);
}

static PyObject *
Event_repr(EventObject *self)
{
    static const int order[N_FIELDS] = {F_NAME, F_CATEGORY, F_PID,  F_TID,
                                        F_TS,   F_DUR,      F_PHASE, F_PATH,
                                        F_HOSTNAME, F_ARGS};
    if (event_normalise_args(self) < 0) {
        return NULL;
    }
    PyObject *parts = PyList_New(0);
    if (parts == NULL) {
        return NULL;
    }
    int i;
    for (i = 0; i < N_FIELDS; i++) {
        int field = order[i];
        PyObject *part;
        if (self->fields[field] == NULL) {
            part = PyUnicode_FromFormat("%s=<unset>", slot_names[field]);
        }
        else if (field == F_PID || field == F_TID || field == F_TS || field == F_DUR) {
            /* PyEvent formats the numbers with format(), not repr(). */
            PyObject *text = PyObject_Format(self->fields[field], NULL);
            part = text == NULL
                       ? NULL
                       : PyUnicode_FromFormat("%s=%U", slot_names[field], text);
            Py_XDECREF(text);
        }
        else {
            part = PyUnicode_FromFormat("%s=%R", slot_names[field], self->fields[field]);
        }
        if (part == NULL || PyList_Append(parts, part) < 0) {
            Py_XDECREF(part);
            Py_DECREF(parts);
            return NULL;
        }
        Py_DECREF(part);
    }
    PyObject *separator = PyUnicode_FromString(", ");
    PyObject *joined = separator == NULL ? NULL : PyUnicode_Join(separator, parts);
    Py_XDECREF(separator);
    Py_DECREF(parts);
    if (joined == NULL) {
        return NULL;
    }
    PyObject *text = PyUnicode_FromFormat("Event(%U)", joined);
    Py_DECREF(joined);
    return text;
}

static PyObject *
Event_richcompare(PyObject *left, PyObject *right, int op)
{
    if ((op != Py_EQ && op != Py_NE) || !Py_IS_TYPE(left, &Event_Type) ||
        !Py_IS_TYPE(right, &Event_Type)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    EventObject *a = (EventObject *)left;
    EventObject *b = (EventObject *)right;
    if (event_normalise_args(a) < 0 || event_normalise_args(b) < 0) {
        return NULL;
    }
    int equal = 1;
    int i;
    for (i = 0; i < N_FIELDS && equal; i++) {
        PyObject *x = a->fields[i];
        PyObject *y = b->fields[i];
        if (x == NULL || y == NULL) {
            equal = x == y;
            continue;
        }
        equal = PyObject_RichCompareBool(x, y, Py_EQ);
        if (equal < 0) {
            return NULL;
        }
    }
    return PyBool_FromLong(op == Py_EQ ? equal : !equal);
}

static PyObject *
Event_reduce(EventObject *self, PyObject *Py_UNUSED(ignored))
{
    if (event_normalise_args(self) < 0) {
        return NULL;
    }
    track_before_args(self);
    PyObject *values = PyTuple_New(N_FIELDS);
    if (values == NULL) {
        return NULL;
    }
    int i;
    for (i = 0; i < N_FIELDS; i++) {
        if (self->fields[i] == NULL) {
            Py_DECREF(values);
            PyErr_Format(PyExc_TypeError,
                         "cannot pickle an Event whose %s was deleted",
                         slot_names[i]);
            return NULL;
        }
        Py_INCREF(self->fields[i]);
        PyTuple_SET_ITEM(values, i, self->fields[i]);
    }
    return Py_BuildValue("(ON)", (PyObject *)Py_TYPE(self), values);
}

static PyMethodDef Event_methods[] = {
    {"__reduce__", (PyCFunction)Event_reduce, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyMemberDef Event_members[N_FIELDS + 1];

static void
fill_event_members(void)
{
    static const char *const docs[N_FIELDS] = {
        "function or region name; '' when the line has none",
        "the cat field; '' when absent",
        "process id; 0 when absent",
        "thread id; 0 when absent",
        "start time in microseconds, an int; 0 when absent",
        "duration in microseconds, an int; 0 when absent",
        "the ph field ('X', 'M', 'C', ...); '' when absent",
        "the args object as decoded, numeric call arguments as int",
        "file path resolved from args.fhash or given inline, or None",
        "host name resolved from args.hhash or given inline, or None",
    };
    int i;
    for (i = 0; i < N_FIELDS; i++) {
        Event_members[i].name = slot_names[i];
        Event_members[i].type = T_OBJECT_EX;
        Event_members[i].offset =
            (Py_ssize_t)(offsetof(EventObject, fields) + i * sizeof(PyObject *));
        Event_members[i].flags = 0;
        Event_members[i].doc = docs[i];
    }
}

static PyTypeObject Event_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "greenpipe.trace.Event",
    .tp_basicsize = sizeof(EventObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Event(name, category, pid, tid, ts, dur, phase, args, path=None, "
              "hostname=None)\n\n"
              "One decoded trace event: the compiled form of\n"
              "greenpipe.trace._event.PyEvent, which describes the fields.",
    .tp_new = Event_new,
    .tp_dealloc = (destructor)Event_dealloc,
    .tp_traverse = (traverseproc)Event_traverse,
    .tp_clear = (inquiry)Event_clear,
    .tp_getattro = (getattrofunc)Event_getattro,
    .tp_setattro = (setattrofunc)Event_setattro,
    .tp_repr = (reprfunc)Event_repr,
    .tp_richcompare = Event_richcompare,
    .tp_hash = PyObject_HashNotImplemented,
    .tp_methods = Event_methods,
    .tp_members = Event_members,
};

/*
 * Key classification. orjson keeps a cache of key strings, so the same
 * key arrives as the same object line after line. A table indexed by the
 * object's address classifies most keys with one comparison, and a
 * dictionary lookup classifies the rest.
 */
enum {
    K_OTHER,
    K_NAME,
    K_CAT,
    K_PID,
    K_TID,
    K_TS,
    K_DUR,
    K_PH,
    K_ARGS,
    K_FHASH,
    K_HHASH,
    K_FNAME,
    K_PATH,
    K_HOSTNAME,
    K_KINDS
};
#define K_NUMERIC 0x100
#define K_KIND(code) ((code) & 0xff)

static const char *const key_texts[K_KINDS] = {
    NULL,    "name",  "cat",   "pid",   "tid",   "ts",       "dur",
    "ph",    "args",  "fhash", "hhash", "fname", "path",     "hostname",
};

#define KEY_SLOTS 256
#define ORDER_SLOTS 16
#define RECENT_SLOTS 32
#define NUMBER_FIELDS 3
#define NUMBER_SLOTS 64
#define HIT_BITS 6
#define HIT_SLOTS (1 << HIT_BITS)

typedef struct {
    PyObject *key;
    int code;
} KeySlot;

typedef struct {
    PyObject *key;
    PyObject *value;
} LastHit;

#define GROUP_LINES 64
#define GROUP_BYTES (256 * 1024)
#define SOLO_RUN_MIN GROUP_LINES
#define SOLO_RUN_MAX 4096

/* The lines of a group: where each starts in the chunk and its length. */
typedef struct {
    Py_ssize_t start[GROUP_LINES];
    Py_ssize_t length[GROUP_LINES];
    Py_ssize_t next; /* the offset after the group's last line */
    int count;
} ParseGroup;

typedef struct {
    PyObject_HEAD
    PyTypeObject *event_type;
    Py_ssize_t offsets[N_FIELDS];
    PyObject *loads;
    PyObject *decode_error;
    PyObject *files;
    PyObject *hosts;
    PyObject *resolve_file;
    PyObject *resolve_host;
    PyObject *convert;
    PyObject *numeric_args;
    /* Whether loads accepts a memoryview, so that lines are parsed in
     * place. */
    int parse_views;
    PyObject *key_kinds; /* key text -> K_ code */
    KeySlot key_slots[KEY_SLOTS];
    int known_keys;
    PyObject *key_objects[K_KINDS]; /* the key strings orjson hands out */
    int learned;
    /* The top-level keys of the last learned line, in order, and their
     * kinds: writers put the keys of every line in the same order. */
    PyObject *order_keys[ORDER_SLOTS];
    int order_kinds[ORDER_SLOTS];
    /* Names and categories seen lately, handed out again in place of
     * equal new strings: their hash is then computed once, not at every
     * set or dict lookup a consumer makes. */
    PyObject *recent_names[RECENT_SLOTS];
    PyObject *recent_categories[RECENT_SLOTS];
    /* Hash strings resolved lately, by a slot taken from their last
     * characters, with the path or host name each resolved to. */
    LastHit file_hits[HIT_SLOTS];
    LastHit host_hits[HIT_SLOTS];
    /* Strings converted to numbers lately, with their ints, because pid,
     * tid and many sizes repeat from line to line. Slots below
     * NUMBER_FIELDS belong to pid, tid and dur, and argument values share
     * the others by a slot taken from their text. */
    LastHit number_hits[NUMBER_SLOTS];
    /* Lines are parsed a group at a time, as one JSON array copied into
     * scratch: one orjson call per group costs less than one per line. */
    PyObject *scratch; /* a bytes object never handed out */
    /* After a group fails to parse, its lines and the next ones are
     * parsed one by one: solo_left more lines, and twice as many after
     * the next failure, so that a file of bad lines is not parsed twice. */
    Py_ssize_t solo_left;
    Py_ssize_t solo_run;
    /* Handed to events whose args numbers are left to convert. */
    PyObject *converter;
    /* The parsed lines of a group that come after a line handed to the
     * slow path, kept for the next call: stash_values[stash_index:] are
     * the values of the lines of stash_group in stash_data from there on. */
    PyObject *stash_data;
    PyObject *stash_values;
    int stash_index;
    ParseGroup stash_group;
    /* Counting mode: while tally_categories is set, an event whose ts and
     * end fit in a long long is counted here instead of being built (see
     * tally_event). */
    PyObject *tally_categories;
    Py_ssize_t tally_events;
    Py_ssize_t tally_application;
    int tally_spans;
    long long tally_first;
    long long tally_last;
} FastDecoder;

static void forget_hits(FastDecoder *self);

/* Outcomes of the helpers below. */
#define DONE 0
#define FALLBACK 1
#define FAILED (-1)
/* build_event counted the event and built none. */
#define COUNTED 3

static int
is_conversion_error(void)
{
    return PyErr_ExceptionMatches(PyExc_ValueError) ||
           PyErr_ExceptionMatches(PyExc_TypeError) ||
           PyErr_ExceptionMatches(PyExc_OverflowError);
}

/*
 * Parse an ASCII string of up to 18 decimal digits with an optional
 * leading '-'. Returns DONE with a new int in *result, FALLBACK for any
 * other text (the Python conversion decides), FAILED on memory error.
 */
static int
parse_plain_decimal(PyObject *text, PyObject **result)
{
    if (!PyUnicode_IS_ASCII(text)) {
        return FALLBACK;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    const char *digits = (const char *)PyUnicode_DATA(text);
    Py_ssize_t i = 0;
    int negative = 0;
    if (length > 0 && digits[0] == '-') {
        negative = 1;
        i = 1;
    }
    if (length - i < 1 || length - i > 18) {
        return FALLBACK;
    }
    long long value = 0;
    for (; i < length; i++) {
        unsigned int digit = (unsigned char)digits[i] - (unsigned int)'0';
        if (digit > 9) {
            return FALLBACK;
        }
        value = value * 10 + digit;
    }
    *result = PyLong_FromLongLong(negative ? -value : value);
    return *result == NULL ? FAILED : DONE;
}

/*
 * Whether a[0:size] equals b[0:size]. The strings compared here (hashes,
 * numbers, names) are short, and a call to memcmp costs more than the
 * comparison itself.
 */
static inline int
same_bytes(const unsigned char *a, const unsigned char *b, size_t size)
{
    while (size >= 8) {
        uint64_t x, y;
        memcpy(&x, a, 8);
        memcpy(&y, b, 8);
        if (x != y) {
            return 0;
        }
        a += 8;
        b += 8;
        size -= 8;
    }
    while (size > 0) {
        if (*a++ != *b++) {
            return 0;
        }
        size--;
    }
    return 1;
}

static inline int
same_string(PyObject *a, PyObject *b)
{
    if (a == b) {
        return 1;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(a);
    return length == PyUnicode_GET_LENGTH(b) &&
           PyUnicode_KIND(a) == PyUnicode_KIND(b) &&
           same_bytes(PyUnicode_DATA(a), PyUnicode_DATA(b),
                      (size_t)length * PyUnicode_KIND(a));
}

/* The number_hits slot of an argument value's text. */
static LastHit *
number_hit_for_text(FastDecoder *self, PyObject *text)
{
    if (!PyUnicode_IS_ASCII(text)) {
        return NULL;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(text);
    if (length == 0) {
        return NULL;
    }
    const unsigned char *digits = PyUnicode_1BYTE_DATA(text);
    size_t slot = (size_t)length * 31u + digits[0] * 7u + digits[length - 1];
    return &self->number_hits[NUMBER_FIELDS +
                              slot % (NUMBER_SLOTS - NUMBER_FIELDS)];
}

/*
 * Convert a number that is not an exact int, as _convert_number does.
 * A decimal string equal to the one last converted through hit (when not
 * NULL) gets the same int again. Returns DONE with a new reference,
 * FALLBACK when the value cannot be converted (no error left set),
 * FAILED on any other error.
 */
static int
convert_number(FastDecoder *self, PyObject *value, LastHit *hit,
               PyObject **result)
{
    if (PyUnicode_CheckExact(value)) {
        if (hit != NULL && hit->key != NULL && same_string(value, hit->key)) {
            Py_INCREF(hit->value);
            *result = hit->value;
            return DONE;
        }
        int outcome = parse_plain_decimal(value, result);
        if (outcome == DONE && hit != NULL) {
            Py_INCREF(value);
            Py_XSETREF(hit->key, value);
            Py_INCREF(*result);
            Py_XSETREF(hit->value, *result);
        }
        if (outcome != FALLBACK) {
            return outcome;
        }
    }
    *result = PyObject_CallOneArg(self->convert, value);
    if (*result != NULL) {
        return DONE;
    }
    if (is_conversion_error()) {
        PyErr_Clear();
        return FALLBACK;
    }
    return FAILED;
}

/*
 * The entries of a dict, read in place. PyDict_Next costs a call and a
 * few checks per entry, which is a good part of decoding an event with
 * ten top-level keys. CPython 3.11 to 3.13 store a dict that is not split
 * as a header, an index table of 1 << dk_log2_index_bytes bytes, then its
 * entries in insertion order, a deleted entry having a NULL value. An
 * entry is (key, value) when every key is a string and (hash, key, value)
 * otherwise or when the dict was presized, as orjson's top-level dicts
 * are. The layout is checked against PyDict_Next when the module loads.
 * Other versions, split dicts and a failed check use PyDict_Next.
 */
typedef struct {
    PyObject *const *first; /* the key of the first entry */
    Py_ssize_t stride;      /* in pointers, from one key to the next */
    Py_ssize_t count;       /* entries, deleted ones included */
} DictEntries;

/* The key and value of entry j. */
#define ENTRY_KEY(entries, j) ((entries)->first[(j) * (entries)->stride])
#define ENTRY_VALUE(entries, j) ((entries)->first[(j) * (entries)->stride + 1])

#if PY_VERSION_HEX >= 0x030B0000 && PY_VERSION_HEX < 0x030E0000 && \
    !defined(Py_GIL_DISABLED)
#define HAVE_DICT_LAYOUT 1
typedef struct {
    Py_ssize_t dk_refcnt;
    uint8_t dk_log2_size;
    uint8_t dk_log2_index_bytes;
    uint8_t dk_kind;
    uint32_t dk_version;
    Py_ssize_t dk_usable;
    Py_ssize_t dk_nentries;
    char dk_indices[];
} DictKeysHeader;
#define DICT_KEYS_GENERAL 0
#define DICT_KEYS_UNICODE 1
#else
#define HAVE_DICT_LAYOUT 0
#endif

/* Set when the module loads, once the layout above is checked. */
static int dict_layout_ok = 0;

/*
 * Fill entries with where the entries of dict are; return 0 when they
 * must be read with PyDict_Next instead.
 */
static inline int
dict_entries(PyObject *dict, DictEntries *entries)
{
#if HAVE_DICT_LAYOUT
    PyDictObject *object = (PyDictObject *)dict;
    if (dict_layout_ok && object->ma_values == NULL) {
        const DictKeysHeader *keys = (const DictKeysHeader *)object->ma_keys;
        PyObject *const *start =
            (PyObject *const *)(keys->dk_indices +
                                ((size_t)1 << keys->dk_log2_index_bytes));
        if (keys->dk_kind == DICT_KEYS_UNICODE) {
            entries->first = start;
            entries->stride = 2;
        }
        else if (keys->dk_kind == DICT_KEYS_GENERAL) {
            entries->first = start + 1; /* after the hash */
            entries->stride = 3;
        }
        else {
            return 0;
        }
        entries->count = keys->dk_nentries;
        return 1;
    }
#endif
    (void)dict;
    (void)entries;
    return 0;
}

/* Whether dict_entries reads dict as PyDict_Next does. */
static int
entries_agree(PyObject *dict)
{
    DictEntries entries;
    dict_layout_ok = 1;
    int found = dict_entries(dict, &entries);
    dict_layout_ok = 0;
    if (!found || entries.count < PyDict_GET_SIZE(dict)) {
        return 0;
    }
    Py_ssize_t pos = 0, index = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        while (index < entries.count && ENTRY_VALUE(&entries, index) == NULL) {
            index++;
        }
        if (index >= entries.count || ENTRY_KEY(&entries, index) != key ||
            ENTRY_VALUE(&entries, index) != value) {
            return 0;
        }
        index++;
    }
    for (; index < entries.count; index++) {
        if (ENTRY_VALUE(&entries, index) != NULL) {
            return 0;
        }
    }
    return 1;
}

/*
 * Check dict_entries against PyDict_Next on dicts of string keys, built
 * key by key and presized, with and without a deleted key, and on a dict
 * with an int key. Set dict_layout_ok if they all agree.
 */
static int
check_dict_layout(void)
{
#if HAVE_DICT_LAYOUT
    static const char *const names[] = {"id", "name", "cat", "pid", "tid",
                                        "ts", "dur", "ph", "args"};
    const int total = (int)(sizeof(names) / sizeof(names[0]));
    int agree = 1;
    for (int shape = 0; shape < 4 && agree; shape++) {
        for (int size = 0; size <= total && agree; size++) {
            PyObject *dict = shape == 1 ? _PyDict_NewPresized(total) : PyDict_New();
            if (dict == NULL) {
                return -1;
            }
            int failed = 0;
            for (int i = 0; i < size && !failed; i++) {
                PyObject *value = PyLong_FromLong(i);
                failed = value == NULL ||
                         PyDict_SetItemString(dict, names[i], value) < 0 ||
                         (shape == 3 && PyDict_SetItem(dict, value, value) < 0);
                Py_XDECREF(value);
            }
            if (!failed && shape == 2 && size > 2) {
                failed = PyDict_DelItemString(dict, names[1]) < 0;
            }
            if (failed) {
                Py_DECREF(dict);
                return -1;
            }
            agree = entries_agree(dict);
            Py_DECREF(dict);
        }
    }
    dict_layout_ok = agree;
#endif
    return 0;
}

static int
classify(FastDecoder *self, PyObject *key)
{
    /* Open addressing with linear probing; entries are never removed, and
     * once the table is three quarters full new keys are classified
     * without being remembered. */
    size_t index = (size_t)(((uintptr_t)key >> 4) * 0x9E3779B97F4A7C15ull >> 56) %
                   KEY_SLOTS;
    KeySlot *slot;
    for (;;) {
        slot = &self->key_slots[index];
        if (slot->key == key) {
            return slot->code;
        }
        if (slot->key == NULL) {
            break;
        }
        index = (index + 1) % KEY_SLOTS;
    }
    if (!PyUnicode_CheckExact(key)) {
        return K_OTHER;
    }
    int code = K_OTHER;
    PyObject *kind = PyDict_GetItemWithError(self->key_kinds, key);
    if (kind != NULL) {
        code = (int)PyLong_AsLong(kind);
    }
    else if (PyErr_Occurred()) {
        return FAILED;
    }
    int numeric = PySet_Contains(self->numeric_args, key);
    if (numeric < 0) {
        return FAILED;
    }
    if (numeric) {
        code |= K_NUMERIC;
    }
    if (self->known_keys < KEY_SLOTS * 3 / 4) {
        /* The entry keeps the key alive, so its address cannot be reused
         * by another string while the entry exists. */
        Py_INCREF(key);
        slot->key = key;
        slot->code = code;
        self->known_keys++;
    }
    return code;
}

/*
 * Look keys up with the very objects orjson puts in its dictionaries:
 * a lookup then matches by identity instead of comparing text. Called
 * on the first dictionaries of each batch, in case orjson's cache moved
 * on; a stale key object still finds its entry, only more slowly.
 */
static int
learn_keys(FastDecoder *self, PyObject *dict, int top_level)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    int index = 0;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        int code = classify(self, key);
        if (code < 0) {
            return FAILED;
        }
        code = K_KIND(code);
        if (code != K_OTHER && self->key_objects[code] != key) {
            Py_INCREF(key);
            Py_XSETREF(self->key_objects[code], key);
        }
        if (top_level && index < ORDER_SLOTS) {
            Py_INCREF(key);
            Py_XSETREF(self->order_keys[index], key);
            self->order_kinds[index] = code;
        }
        index++;
    }
    return DONE;
}

/* Whether value is a str with at least one character. */
static int
non_empty_string(PyObject *value)
{
    return value != NULL && PyUnicode_Check(value) &&
           PyUnicode_GET_LENGTH(value) > 0;
}

/*
 * Resolve a hash value through table, then through resolver, as
 * ``table.get(key)`` followed by ``resolver(key)``. Events name a few
 * files over and over, each time in a new string. So the strings found
 * in the table lately are kept in hits and compared byte for byte before
 * the table is hashed and searched. A string's slot comes from its length
 * and last four characters, where hex digits vary most.
 * Unresolved hashes are never remembered: the resolver counts each one.
 */
static int
resolve_hash(PyObject *key, PyObject *table, PyObject *resolver, LastHit *hits,
             PyObject **result)
{
    if (!PyUnicode_CheckExact(key) && !PyLong_CheckExact(key)) {
        return FALLBACK;
    }
    LastHit *hit = NULL;
    if (PyUnicode_CheckExact(key) && PyUnicode_IS_ASCII(key)) {
        Py_ssize_t length = PyUnicode_GET_LENGTH(key);
        const unsigned char *text = PyUnicode_1BYTE_DATA(key);
        uint32_t tail = 0;
        if (length >= 4) {
            memcpy(&tail, text + length - 4, 4);
        }
        else {
            memcpy(&tail, text, (size_t)length);
        }
        uint64_t mix = ((uint64_t)tail << 8) ^ (uint64_t)length;
        hit = &hits[(mix * 0x9E3779B97F4A7C15ull) >> (64 - HIT_BITS)];
        if (hit->key != NULL && same_string(key, hit->key)) {
            Py_INCREF(hit->value);
            *result = hit->value;
            return DONE;
        }
    }
    PyObject *found = PyDict_GetItemWithError(table, key);
    if (found != NULL && found != Py_None) {
        if (hit != NULL) {
            Py_INCREF(key);
            Py_XSETREF(hit->key, key);
            Py_INCREF(found);
            Py_XSETREF(hit->value, found);
        }
        Py_INCREF(found);
        *result = found;
        return DONE;
    }
    if (PyErr_Occurred()) {
        return FAILED;
    }
    *result = PyObject_CallOneArg(resolver, key);
    return *result == NULL ? FAILED : DONE;
}

/* Store a new reference to value, or to None when value is NULL. */
static void
set_or_none(PyObject **target, PyObject *value)
{
    if (value == NULL) {
        value = Py_None;
    }
    Py_INCREF(value);
    *target = value;
}

/* The values of the args keys that name the file and the host. */
typedef struct {
    PyObject *fhash;
    PyObject *hhash;
    PyObject *fname;
    PyObject *path;
    PyObject *hostname;
} ArgKeys;

/* Store value as the argument of kind, if it is one found keeps. */
static inline void
set_arg_key(ArgKeys *found, int kind, PyObject *value)
{
    switch (kind) {
    case K_FHASH:
        found->fhash = value;
        break;
    case K_HHASH:
        found->hhash = value;
        break;
    case K_FNAME:
        found->fname = value;
        break;
    case K_PATH:
        found->path = value;
        break;
    case K_HOSTNAME:
        found->hostname = value;
        break;
    default:
        break;
    }
}

/* Put value in found if key names the file or the host. */
static inline int
note_arg_key(FastDecoder *self, PyObject *key, PyObject *value, ArgKeys *found)
{
    PyObject *const *keys = self->key_objects;
    int kind;
    if (key == keys[K_FHASH]) {
        kind = K_FHASH;
    }
    else if (key == keys[K_HHASH]) {
        kind = K_HHASH;
    }
    else if (key == keys[K_FNAME]) {
        kind = K_FNAME;
    }
    else if (key == keys[K_HOSTNAME]) {
        kind = K_HOSTNAME;
    }
    else {
        kind = classify(self, key);
        if (kind < 0) {
            return FAILED;
        }
        kind = K_KIND(kind);
    }
    set_arg_key(found, kind, value);
    return DONE;
}

/*
 * Find the keys of found in args; values are borrowed. Most of these keys
 * are missing, so a walk over the entries read in place costs less than
 * a lookup per key. Dicts that cannot be read in place are searched.
 */
static int
look_up_arg_keys(FastDecoder *self, PyObject *args, ArgKeys *found)
{
    DictEntries entries;
    if (dict_entries(args, &entries)) {
        for (Py_ssize_t j = 0; j < entries.count; j++) {
            PyObject *value = ENTRY_VALUE(&entries, j);
            if (value != NULL &&
                note_arg_key(self, ENTRY_KEY(&entries, j), value, found) == FAILED) {
                return FAILED;
            }
        }
        return DONE;
    }
    PyObject *const *keys = self->key_objects;
    found->fhash = PyDict_GetItemWithError(args, keys[K_FHASH]);
    found->hhash = found->fhash != NULL || !PyErr_Occurred()
                       ? PyDict_GetItemWithError(args, keys[K_HHASH])
                       : NULL;
    if (PyErr_Occurred()) {
        return FAILED;
    }
    if (found->fhash == NULL || found->fhash == Py_None) {
        found->fname = PyDict_GetItemWithError(args, keys[K_FNAME]);
        if (!non_empty_string(found->fname) && !PyErr_Occurred()) {
            found->path = PyDict_GetItemWithError(args, keys[K_PATH]);
        }
    }
    if ((found->hhash == NULL || found->hhash == Py_None) && !PyErr_Occurred()) {
        found->hostname = PyDict_GetItemWithError(args, keys[K_HOSTNAME]);
    }
    return PyErr_Occurred() ? FAILED : DONE;
}

/*
 * Convert the numeric arguments of args to int in place, and fill found
 * in the same walk over the entries, which costs less than looking the
 * keys up. Values are borrowed.
 */
static int
normalise_args(FastDecoder *self, PyObject *args, ArgKeys *found)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(args, &pos, &key, &value)) {
        int code = classify(self, key);
        if (code < 0) {
            return FAILED;
        }
        if ((code & K_NUMERIC) && !PyLong_CheckExact(value)) {
            PyObject *number;
            LastHit *hit = PyUnicode_CheckExact(value)
                               ? number_hit_for_text(self, value)
                               : NULL;
            int outcome = convert_number(self, value, hit, &number);
            if (outcome == FAILED) {
                return FAILED;
            }
            if (outcome == DONE) {
                /* Replacing the value of an existing key is allowed while
                 * iterating: the set of keys does not change. */
                int failed = PyDict_SetItem(args, key, number);
                Py_DECREF(number);
                if (failed) {
                    return FAILED;
                }
                value = number; /* args owns a reference to it now */
            }
            /* FALLBACK: kept as found, like the Python version. */
        }
        set_arg_key(found, K_KIND(code), value);
    }
    return DONE;
}

/*
 * ArgsConverter: what an event needs to convert the numbers in its args
 * later. Events of writers that store numbers as strings are built
 * without the walk over args that converts them. It runs when args is
 * first read, compared, printed or pickled, so events that are only
 * counted, sorted by time or dropped by a filter never pay for it. An
 * event keeps the converter, not its decoder, so the decoder's hash
 * tables and buffers are freed with the file. The conversion is the
 * decoder's: _convert_number on the keys in NUMERIC_ARGS.
 * NOTE: Event.args.__get__(event), object.__getattribute__(event, "args")
 * and gc.get_referents(event) see the numbers still as strings.
 */
#define CONVERTER_SLOTS 32

typedef struct {
    PyObject_HEAD
    PyObject *convert;
    PyObject *numeric_args;
    /* Keys seen lately, by address, and whether each is numeric. */
    PyObject *keys[CONVERTER_SLOTS];
    char numeric[CONVERTER_SLOTS];
} ArgsConverter;

static PyTypeObject ArgsConverter_Type;

static PyObject *
converter_new(PyObject *convert, PyObject *numeric_args)
{
    ArgsConverter *self = PyObject_GC_New(ArgsConverter, &ArgsConverter_Type);
    if (self == NULL) {
        return NULL;
    }
    Py_INCREF(convert);
    self->convert = convert;
    Py_INCREF(numeric_args);
    self->numeric_args = numeric_args;
    memset(self->keys, 0, sizeof(self->keys));
    memset(self->numeric, 0, sizeof(self->numeric));
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int
ArgsConverter_traverse(ArgsConverter *self, visitproc visit, void *arg)
{
    Py_VISIT(self->convert);
    Py_VISIT(self->numeric_args);
    return 0;
}

static int
ArgsConverter_clear(ArgsConverter *self)
{
    Py_CLEAR(self->convert);
    Py_CLEAR(self->numeric_args);
    for (int i = 0; i < CONVERTER_SLOTS; i++) {
        Py_CLEAR(self->keys[i]);
    }
    return 0;
}

static void
ArgsConverter_dealloc(ArgsConverter *self)
{
    PyObject_GC_UnTrack(self);
    ArgsConverter_clear(self);
    PyObject_GC_Del(self);
}

static PyTypeObject ArgsConverter_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "greenpipe.trace._speedups.ArgsConverter",
    .tp_basicsize = sizeof(ArgsConverter),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The numbers of an event's args, still to convert.",
    .tp_dealloc = (destructor)ArgsConverter_dealloc,
    .tp_traverse = (traverseproc)ArgsConverter_traverse,
    .tp_clear = (inquiry)ArgsConverter_clear,
};

/* Whether key names a numeric argument: 1, 0, or -1 on error. */
static int
converter_is_numeric(ArgsConverter *self, PyObject *key)
{
    size_t slot = (size_t)(((uintptr_t)key >> 4) * 0x9E3779B97F4A7C15ull >> 59) %
                  CONVERTER_SLOTS;
    if (self->keys[slot] == key) {
        return self->numeric[slot];
    }
    int numeric = PyUnicode_CheckExact(key) ? PySet_Contains(self->numeric_args, key) : 0;
    if (numeric < 0) {
        return -1;
    }
    /* The slot keeps the key alive, so its address names no other key. */
    Py_INCREF(key);
    Py_XSETREF(self->keys[slot], key);
    self->numeric[slot] = (char)numeric;
    return numeric;
}

/* Convert the numeric arguments of args in place, as normalise_args does. */
static int
converter_convert(ArgsConverter *self, PyObject *args)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(args, &pos, &key, &value)) {
        if (PyLong_CheckExact(value)) {
            continue;
        }
        int numeric = converter_is_numeric(self, key);
        if (numeric <= 0) {
            if (numeric < 0) {
                return -1;
            }
            continue;
        }
        PyObject *number = NULL;
        int outcome = PyUnicode_CheckExact(value) ? parse_plain_decimal(value, &number)
                                                  : FALLBACK;
        if (outcome == FALLBACK) {
            number = PyObject_CallOneArg(self->convert, value);
            if (number == NULL) {
                if (!is_conversion_error()) {
                    return -1;
                }
                PyErr_Clear(); /* kept as found, like the Python version */
                continue;
            }
        }
        else if (outcome == FAILED) {
            return -1;
        }
        /* Replacing the value of an existing key is allowed while
         * iterating: the set of keys does not change. */
        int failed = PyDict_SetItem(args, key, number);
        Py_DECREF(number);
        if (failed) {
            return -1;
        }
    }
    return 0;
}

/* Convert the numbers of an event's args if its decoder left them. */
static int
event_normalise_args(EventObject *self)
{
    PyObject *converter = self->pending;
    if (converter == NULL) {
        return 0;
    }
    PyObject *args = self->fields[F_ARGS];
    if (args != NULL && PyDict_CheckExact(args) &&
        ((ArgsConverter *)converter)->convert != NULL) {
        /* Another thread may read args while convert runs: both convert,
         * and the second finds ints. */
        Py_INCREF(converter);
        Py_INCREF(args);
        int failed = converter_convert((ArgsConverter *)converter, args);
        Py_DECREF(args);
        Py_DECREF(converter);
        if (failed) {
            return -1;
        }
    }
    if (self->pending == converter) {
        self->pending = NULL;
        Py_DECREF(converter);
    }
    return 0;
}

/*
 * Fill fields[F_PATH] and fields[F_HOSTNAME] from args; convert its
 * numeric arguments first when normalise is set.
 */
static int
resolve_args(FastDecoder *self, PyObject *args, int normalise,
             PyObject **fields)
{
    ArgKeys found = {NULL, NULL, NULL, NULL, NULL};
    int outcome = normalise ? normalise_args(self, args, &found)
                            : look_up_arg_keys(self, args, &found);
    if (outcome == FAILED) {
        return FAILED;
    }
    PyObject *fhash = found.fhash, *hhash = found.hhash;
    PyObject *fname = found.fname, *path = found.path;
    PyObject *hostname = found.hostname;

    if (fhash != NULL && fhash != Py_None) {
        outcome = resolve_hash(fhash, self->files, self->resolve_file,
                               self->file_hits, &fields[F_PATH]);
        if (outcome != DONE) {
            return outcome;
        }
    }
    else {
        set_or_none(&fields[F_PATH], non_empty_string(fname)  ? fname
                                     : non_empty_string(path) ? path
                                                              : NULL);
    }
    if (hhash != NULL && hhash != Py_None) {
        outcome = resolve_hash(hhash, self->hosts, self->resolve_host,
                               self->host_hits, &fields[F_HOSTNAME]);
        if (outcome != DONE) {
            return outcome;
        }
    }
    else {
        set_or_none(&fields[F_HOSTNAME],
                    non_empty_string(hostname) ? hostname : NULL);
    }
    return DONE;
}

/* Replace *field by an equal ASCII string from cache, or remember it. */
static void
reuse_string(PyObject **cache, PyObject **field)
{
    PyObject *value = *field;
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value)) {
        return;
    }
    Py_ssize_t length = PyUnicode_GET_LENGTH(value);
    if (length == 0 || length > 64) {
        return;
    }
    const unsigned char *text = PyUnicode_1BYTE_DATA(value);
    size_t slot = ((size_t)length * 31u + text[0] * 7u + text[length - 1]) %
                  RECENT_SLOTS;
    PyObject *known = cache[slot];
    if (known == value) {
        return;
    }
    if (known != NULL && PyUnicode_GET_LENGTH(known) == length &&
        same_bytes(PyUnicode_1BYTE_DATA(known), text, (size_t)length)) {
        Py_INCREF(known);
        Py_SETREF(*field, known);
        return;
    }
    Py_INCREF(value);
    Py_XSETREF(cache[slot], value);
}

/* Put value in found if key names one of the fields read from a line. */
static inline int
note_field(FastDecoder *self, PyObject *key, PyObject *value, int index,
           PyObject **found)
{
    int kind;
    if (index < ORDER_SLOTS && self->order_keys[index] == key) {
        kind = self->order_kinds[index];
    }
    else {
        kind = classify(self, key);
        if (kind < 0) {
            return FAILED;
        }
        kind = K_KIND(kind);
    }
    if (kind >= K_NAME && kind <= K_ARGS) {
        found[kind - K_NAME] = value;
    }
    return DONE;
}

/*
 * Count the event of fields in the tally, as the dry run's scan would:
 * one more event, one more application event when its category is not
 * in tally_categories, and its ts and ts + dur in the span. Returns
 * COUNTED, DONE when ts or the end does not fit in a long long (the
 * event is then built, and the caller compares Python ints), or FAILED.
 */
static int
tally_event(FastDecoder *self, PyObject **fields)
{
    int overflow = 0;
    long long ts = PyLong_AsLongLongAndOverflow(fields[F_TS], &overflow);
    if (overflow || (ts == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return DONE;
    }
    long long dur = PyLong_AsLongLongAndOverflow(fields[F_DUR], &overflow);
    if (overflow || (dur == -1 && PyErr_Occurred())) {
        PyErr_Clear();
        return DONE;
    }
    long long end;
    if (__builtin_add_overflow(ts, dur, &end)) {
        return DONE;
    }
    int known = PySet_Contains(self->tally_categories, fields[F_CATEGORY]);
    if (known < 0) {
        return FAILED;
    }
    self->tally_events++;
    if (!known) {
        self->tally_application++;
    }
    if (!self->tally_spans) {
        self->tally_spans = 1;
        self->tally_first = ts;
        self->tally_last = end;
    }
    else {
        if (ts < self->tally_first) {
            self->tally_first = ts;
        }
        if (end > self->tally_last) {
            self->tally_last = end;
        }
    }
    return COUNTED;
}

/*
 * Build the Event of one parsed line. Returns DONE with a new Event in
 * *event, COUNTED when the event went to the tally instead, FALLBACK when
 * the slow path must decide, FAILED on error. When FALLBACK is returned,
 * data is unchanged but for numeric arguments converted to int, which the
 * slow path would convert the same way.
 */
static int
build_event(FastDecoder *self, PyObject *data, PyObject **event)
{
    PyObject *fields[N_FIELDS] = {NULL};
    PyObject *found[K_ARGS] = {NULL};
    int outcome = FAILED;
    int i;

    if (!PyDict_CheckExact(data)) {
        return FALLBACK;
    }
    if (!self->learned) {
        if (learn_keys(self, data, 1) == FAILED) {
            return FAILED;
        }
        PyObject *args = PyDict_GetItemWithError(data, self->key_objects[K_ARGS]);
        if (args != NULL && PyDict_CheckExact(args) &&
            learn_keys(self, args, 0) == FAILED) {
            return FAILED;
        }
        if (PyErr_Occurred()) {
            return FAILED;
        }
        self->learned = 1;
    }
    /* One pass over the entries, each key checked against the one found
     * at the same position before; this costs less than a lookup per
     * field. */
    DictEntries entries;
    if (dict_entries(data, &entries)) {
        int index = 0;
        for (Py_ssize_t j = 0; j < entries.count; j++) {
            PyObject *value = ENTRY_VALUE(&entries, j);
            if (value != NULL &&
                note_field(self, ENTRY_KEY(&entries, j), value, index++, found) ==
                    FAILED) {
                return FAILED;
            }
        }
    }
    else {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        int index = 0;
        while (PyDict_Next(data, &pos, &key, &value)) {
            if (note_field(self, key, value, index++, found) == FAILED) {
                return FAILED;
            }
        }
    }
    PyObject *mark = found[K_PH - K_NAME];
    if (mark != NULL && PyUnicode_CheckExact(mark) &&
        PyUnicode_GET_LENGTH(mark) == 1 && PyUnicode_READ_CHAR(mark, 0) == 'M') {
        return FALLBACK; /* metadata: the slow path fills the tables */
    }
    for (i = 0; i < 7; i++) {
        if (found[i] == NULL) {
            outcome = FALLBACK;
            goto finish;
        }
        Py_INCREF(found[i]);
        fields[i] = found[i];
    }

    if (!PyUnicode_CheckExact(fields[F_NAME]) || !PyUnicode_CheckExact(fields[F_CATEGORY])) {
        outcome = FALLBACK; /* the slow path counts a bad line */
        goto finish;
    }
    reuse_string(self->recent_names, &fields[F_NAME]);
    reuse_string(self->recent_categories, &fields[F_CATEGORY]);

    if (!PyUnicode_CheckExact(fields[F_PHASE]) && PyUnicode_Check(fields[F_PHASE])) {
        outcome = FALLBACK; /* a str subclass: let Python compare */
        goto finish;
    }

    PyObject *args = found[K_ARGS - K_NAME];
    if (args == NULL || args == Py_None) {
        args = PyDict_New();
        if (args == NULL) {
            goto finish;
        }
    }
    else if (PyDict_CheckExact(args)) {
        Py_INCREF(args);
    }
    else {
        outcome = FALLBACK;
        goto finish;
    }
    fields[F_ARGS] = args;

    int normalise = 0;
    if (!PyLong_CheckExact(fields[F_PID]) || !PyLong_CheckExact(fields[F_TID]) ||
        !PyLong_CheckExact(fields[F_TS]) || !PyLong_CheckExact(fields[F_DUR])) {
        PyObject *numbers[4] = {NULL};
        for (i = 0; i < 4; i++) {
            PyObject *value = fields[F_PID + i];
            if (PyLong_CheckExact(value)) {
                Py_INCREF(value);
                numbers[i] = value;
                continue;
            }
            /* pid, tid and dur have a slot each. ts grows with every
             * event, so it is never remembered. */
            static const int number_slots[4] = {0, 1, -1, 2};
            LastHit *hit = number_slots[i] < 0
                               ? NULL
                               : &self->number_hits[number_slots[i]];
            int converted = convert_number(self, value, hit, &numbers[i]);
            if (converted != DONE) {
                outcome = converted;
                while (i-- > 0) {
                    Py_DECREF(numbers[i]);
                }
                goto finish;
            }
        }
        for (i = 0; i < 4; i++) {
            Py_SETREF(fields[F_PID + i], numbers[i]);
        }
        /* Writers that store these numbers as strings do the same for
         * sizes, offsets and results. */
        normalise = 1;
    }

    /* Compiled events convert the numbers in args when args is read. */
    int later = normalise && self->event_type == &Event_Type &&
                PyDict_GET_SIZE(args) > 0;
    if (PyDict_GET_SIZE(args) > 0) {
        outcome = resolve_args(self, args, normalise && !later, fields);
        if (outcome != DONE) {
            goto finish;
        }
    }
    else {
        set_or_none(&fields[F_PATH], NULL);
        set_or_none(&fields[F_HOSTNAME], NULL);
    }

    if (self->tally_categories != NULL) {
        outcome = tally_event(self, fields);
        if (outcome != DONE) {
            goto finish;
        }
    }
    PyObject *new_event = self->event_type->tp_alloc(self->event_type, 0);
    if (new_event == NULL) {
        outcome = FAILED;
        goto finish;
    }
    for (i = 0; i < N_FIELDS; i++) {
        /* The new object's slots are NULL: each takes its reference. */
        *(PyObject **)((char *)new_event + self->offsets[i]) = fields[i];
        fields[i] = NULL;
    }
    if (self->event_type == &Event_Type) {
        if (later) {
            Py_INCREF(self->converter);
            ((EventObject *)new_event)->pending = self->converter;
        }
        event_untrack_if_plain((EventObject *)new_event);
    }
    *event = new_event;
    outcome = DONE;

finish:
    for (i = 0; i < N_FIELDS; i++) {
        Py_XDECREF(fields[i]);
    }
    return outcome;
}

/* Whether the last byte of text that is not JSON whitespace is '}'. */
static int
ends_with_brace(const char *text, Py_ssize_t size)
{
    while (size > 0) {
        char last = text[size - 1];
        if (last != ' ' && last != '\t' && last != '\r' && last != '\n' &&
            last != '\v' && last != '\f') {
            return last == '}';
        }
        size--;
    }
    return 0;
}

/*
 * A memoryview over a bytes object, moved from line to line so that
 * orjson parses each line in place, without a bytes object per line.
 * orjson 3.13 reads the view's buf and len when it is called and keeps
 * no reference to it. parse_line still checks, and the view owns a
 * reference to the bytes object, so a view that a loads function keeps
 * never points to freed memory.
 */
typedef struct {
    PyObject *view;
    char *buf;
    Py_ssize_t len;
} LineView;

/* Point the view at text[0:size], creating it first when needed. */
static PyObject *
line_view_move(LineView *line, PyObject *data, const char *text, Py_ssize_t size)
{
    if (line->view == NULL) {
        line->view = PyMemoryView_FromObject(data);
        if (line->view == NULL) {
            return NULL;
        }
        Py_buffer *buffer = PyMemoryView_GET_BUFFER(line->view);
        line->buf = buffer->buf;
        line->len = buffer->len;
    }
    Py_buffer *buffer = PyMemoryView_GET_BUFFER(line->view);
    buffer->buf = (void *)text;
    buffer->len = size;
    buffer->shape[0] = size;
    return line->view;
}

/* Give the view back its whole buffer and drop it. */
static void
line_view_release(LineView *line)
{
    if (line->view == NULL) {
        return;
    }
    Py_buffer *buffer = PyMemoryView_GET_BUFFER(line->view);
    buffer->buf = line->buf;
    buffer->len = line->len;
    buffer->shape[0] = line->len;
    Py_CLEAR(line->view);
}

/*
 * Parse text[0:size] with orjson. Returns a new reference, or NULL with
 * the error set.
 */
static PyObject *
parse_line(FastDecoder *self, LineView *line, PyObject *data, const char *text,
           Py_ssize_t size)
{
    if (!self->parse_views) {
        PyObject *copy = PyBytes_FromStringAndSize(text, size);
        if (copy == NULL) {
            return NULL;
        }
        PyObject *value = PyObject_Vectorcall(self->loads, &copy, 1, NULL);
        Py_DECREF(copy);
        return value;
    }
    PyObject *view = line_view_move(line, data, text, size);
    if (view == NULL) {
        return NULL;
    }
    PyObject *value = PyObject_Vectorcall(self->loads, &view, 1, NULL);
    if (Py_REFCNT(view) != 1 ||
        ((PyMemoryViewObject *)view)->exports != 0) {
        /* Something kept the view or a buffer of it: leave it at this
         * line and use a new view for the next one. */
        Py_CLEAR(line->view);
    }
    return value;
}

/*
 * Bytes that open or close a string or a container, or escape the next
 * byte in a string: 1 in this table, 0 for all others.
 */
static const unsigned char json_structural[256] = {
    ['"'] = 1, ['\\'] = 1, ['{'] = 1, ['}'] = 1, ['['] = 1, [']'] = 1,
};

/*
 * Whether the '{' that begins text[0:size] is closed by its last byte
 * that is not whitespace, outside any string. A line that parses alone
 * passes.
 */
static int
closes_at_end(const char *text, Py_ssize_t size)
{
    const unsigned char *bytes = (const unsigned char *)text;
    Py_ssize_t depth = 0;
    int in_string = 0;
    Py_ssize_t i;
    for (i = 0; i < size; i++) {
        unsigned char c = bytes[i];
        if (!json_structural[c]) {
            continue;
        }
        if (in_string) {
            if (c == '\\') {
                i++; /* the escaped byte cannot end the string */
            }
            else if (c == '"') {
                in_string = 0;
            }
        }
        else if (c == '"') {
            in_string = 1;
        }
        else if (c == '{' || c == '[') {
            depth++;
        }
        else if (c == '}' || c == ']') {
            if (--depth == 0) {
                break;
            }
        }
    }
    if (depth != 0) {
        return 0;
    }
    for (i++; i < size; i++) {
        if (bytes[i] != ' ' && bytes[i] != '\t' && bytes[i] != '\r') {
            return 0;
        }
    }
    return 1;
}

/*
 * Gather up to limit lines from offset on that begin with '{' and end
 * with '}'. Stops at the first other line and before the group's text
 * would pass GROUP_BYTES.
 *
 * Lines that are invalid alone can still parse once joined into an
 * array: {"a":"} and {"} by a string that runs from one line into the
 * next, {"a":[{} and {}]},{} by an array. With a line that contains two
 * objects to make up the count, the array even has one item per line.
 * So that a group parses only when each of its lines parses alone,
 * parse_group puts a newline between the lines, which JSON forbids inside
 * a string. And a line that contains '[' joins a group only when
 * closes_at_end holds for it. The first line of a group that leaves a
 * container open then leaves an object open, and the '{' of the next line
 * cannot follow a comma there. A line with two objects still parses, but
 * the array then has an item too many.
 */
static void
gather_group(const char *text, Py_ssize_t size, Py_ssize_t offset,
             Py_ssize_t limit, ParseGroup *group)
{
    Py_ssize_t total = 0;
    group->count = 0;
    group->next = offset;
    while (group->count < limit && group->count < GROUP_LINES && offset < size) {
        const char *start = text + offset;
        const char *newline = memchr(start, '\n', (size_t)(size - offset));
        Py_ssize_t length = newline != NULL ? newline - start : size - offset;
        if (length == 0 || start[0] != '{' || !ends_with_brace(start, length)) {
            break;
        }
        total += length + 1;
        if (total > GROUP_BYTES) {
            break;
        }
        if (memchr(start, '[', (size_t)length) != NULL && !closes_at_end(start, length)) {
            break;
        }
        group->start[group->count] = offset;
        group->length[group->count] = length;
        group->count++;
        offset = newline != NULL ? offset + length + 1 : size;
        group->next = offset;
    }
}

/*
 * Parse the lines of group as one JSON array: copy them into scratch
 * between '[' and ']', with ",\n" between lines. Returns a list
 * with one item per line, or NULL with no error set when the group must
 * be parsed line by line. That happens when a line did not parse, or when
 * the array has another length, as when a line contains two objects. On
 * any other failure it returns NULL with the error set.
 */
static PyObject *
parse_group(FastDecoder *self, LineView *view, const char *text,
            const ParseGroup *group)
{
    Py_ssize_t needed = 2;
    for (int i = 0; i < group->count; i++) {
        needed += group->length[i] + 2;
    }
    if (self->scratch == NULL || PyBytes_GET_SIZE(self->scratch) < needed) {
        line_view_release(view);
        Py_CLEAR(self->scratch);
        self->scratch = PyBytes_FromStringAndSize(NULL, needed < 4096 ? 4096 : needed);
        if (self->scratch == NULL) {
            return NULL;
        }
    }
    char *out = PyBytes_AS_STRING(self->scratch);
    Py_ssize_t used = 0;
    out[used++] = '[';
    for (int i = 0; i < group->count; i++) {
        if (i > 0) {
            /* A string left open by the line before would take in this
             * raw newline, and JSON forbids that: see gather_group. */
            out[used++] = ',';
            out[used++] = '\n';
        }
        memcpy(out + used, text + group->start[i], (size_t)group->length[i]);
        used += group->length[i];
    }
    out[used++] = ']';

    PyObject *scratch_view = line_view_move(view, self->scratch, out, used);
    if (scratch_view == NULL) {
        return NULL;
    }
    PyObject *values = PyObject_Vectorcall(self->loads, &scratch_view, 1, NULL);
    if (Py_REFCNT(scratch_view) != 1 ||
        ((PyMemoryViewObject *)scratch_view)->exports != 0) {
        /* Someone kept the view: never write to this buffer again. */
        Py_CLEAR(view->view);
        Py_CLEAR(self->scratch);
    }
    if (values == NULL) {
        if (PyErr_ExceptionMatches(self->decode_error)) {
            PyErr_Clear();
        }
        return NULL;
    }
    if (!PyList_CheckExact(values) || PyList_GET_SIZE(values) != group->count) {
        Py_DECREF(values);
        return NULL;
    }
    return values;
}

static void
clear_stash(FastDecoder *self)
{
    Py_CLEAR(self->stash_data);
    Py_CLEAR(self->stash_values);
}

/* Keep values[index:] for the next call. */
static void
keep_stash(FastDecoder *self, PyObject *data, PyObject *values,
           const ParseGroup *group, int index)
{
    if (self->stash_values != values) {
        Py_INCREF(values);
        Py_XSETREF(self->stash_values, values);
        self->stash_group = *group;
    }
    if (self->stash_data != data) {
        Py_INCREF(data);
        Py_XSETREF(self->stash_data, data);
    }
    self->stash_index = index;
}

/* The index in the stash of the line at offset of data, or -1. */
static int
find_in_stash(FastDecoder *self, PyObject *data, Py_ssize_t offset)
{
    if (self->stash_data == data) {
        const ParseGroup *group = &self->stash_group;
        for (int i = self->stash_index; i < group->count; i++) {
            if (group->start[i] == offset) {
                return i;
            }
            if (group->start[i] > offset) {
                break;
            }
        }
    }
    clear_stash(self);
    return -1;
}

/* Outcome of build_group when a line went to the slow path. */
#define STOPPED 2

/*
 * Build the events of values[index:], the parsed lines of group, until
 * limit events are in out. Returns DONE, STOPPED with *value set to the
 * line the slow path must handle, or FAILED. What is left is stashed.
 */
static int
build_group(FastDecoder *self, PyObject *data, PyObject *values,
            const ParseGroup *group, int index, Py_ssize_t limit,
            PyObject *out, Py_ssize_t *count, Py_ssize_t *offset,
            PyObject **value)
{
    int outcome = DONE;
    Py_INCREF(values); /* clear_stash may drop the stash's reference */
    int i;
    for (i = index; i < group->count; i++) {
        if (*count >= limit) {
            break;
        }
        PyObject *parsed = PyList_GET_ITEM(values, i);
        PyObject *event = NULL;
        int built = build_event(self, parsed, &event);
        if (built == FALLBACK) {
            Py_INCREF(parsed);
            *value = parsed;
            outcome = STOPPED;
            i++;
            break;
        }
        if (built == FAILED) {
            outcome = FAILED;
            break;
        }
        if (built != COUNTED) {
            int failed = PyList_Append(out, event);
            Py_DECREF(event);
            if (failed) {
                outcome = FAILED;
                break;
            }
        }
        (*count)++;
        *offset = i + 1 < group->count ? group->start[i + 1] : group->next;
    }
    if (outcome != FAILED && i < group->count) {
        /* When values is the stash, group is stash_group and stays. */
        keep_stash(self, data, values, group, i);
    }
    else {
        clear_stash(self);
    }
    Py_DECREF(values);
    return outcome;
}

static PyObject *
FastDecoder_decode(FastDecoder *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "decode(data, offset, limit, out) takes 4 arguments");
        return NULL;
    }
    PyObject *data = args[0];
    PyObject *out = args[3];
    if (!PyBytes_CheckExact(data) || !PyList_CheckExact(out)) {
        PyErr_SetString(PyExc_TypeError,
                        "decode needs bytes for data and a list for out");
        return NULL;
    }
    Py_ssize_t offset = PyLong_AsSsize_t(args[1]);
    if (offset == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t limit = PyLong_AsSsize_t(args[2]);
    if (limit == -1 && PyErr_Occurred()) {
        return NULL;
    }
    Py_ssize_t size = PyBytes_GET_SIZE(data);
    if (offset < 0 || offset > size) {
        PyErr_Format(PyExc_ValueError,
                     "offset must be between 0 and %zd, not %zd", size, offset);
        return NULL;
    }

    /* The hash resolutions remembered in file_hits and host_hits stay
     * in use until the caller calls forget(). */
    self->learned = 0;
    const char *text = PyBytes_AS_STRING(data);
    LineView line = {NULL, NULL, 0};
    LineView group_view = {NULL, NULL, 0};
    PyObject *value = NULL; /* the parsed line handed to the slow path */
    Py_ssize_t count = 0;
    int stopped = 0;
    while (count < limit && offset < size && !stopped) {
        if (self->stash_values != NULL) {
            int index = find_in_stash(self, data, offset);
            if (index >= 0) {
                int built = build_group(self, data, self->stash_values,
                                        &self->stash_group, index, limit, out,
                                        &count, &offset, &value);
                if (built == FAILED) {
                    goto error;
                }
                stopped = built == STOPPED;
                continue;
            }
        }
        if (self->solo_left <= 0 && self->parse_views) {
            ParseGroup group;
            gather_group(text, size, offset, limit - count, &group);
            if (group.count >= 2) {
                PyObject *values = parse_group(self, &group_view, text, &group);
                if (values != NULL) {
                    self->solo_run = SOLO_RUN_MIN;
                    int built = build_group(self, data, values, &group, 0, limit,
                                            out, &count, &offset, &value);
                    Py_DECREF(values);
                    if (built == FAILED) {
                        goto error;
                    }
                    stopped = built == STOPPED;
                    continue;
                }
                if (PyErr_Occurred()) {
                    goto error;
                }
                self->solo_left = self->solo_run;
                if (self->solo_run < SOLO_RUN_MAX) {
                    self->solo_run *= 2;
                }
            }
        }
        if (self->solo_left > 0) {
            self->solo_left--;
        }
        const char *start = text + offset;
        const char *newline = memchr(start, '\n', (size_t)(size - offset));
        Py_ssize_t length = newline != NULL ? newline - start : size - offset;
        if (!ends_with_brace(start, length)) {
            break;
        }
        PyObject *parsed = parse_line(self, &line, data, start, length);
        if (parsed == NULL) {
            if (PyErr_ExceptionMatches(self->decode_error)) {
                PyErr_Clear();
                break;
            }
            goto error;
        }
        PyObject *event = NULL;
        int outcome = build_event(self, parsed, &event);
        if (outcome == FALLBACK) {
            value = parsed;
            break;
        }
        Py_DECREF(parsed);
        if (outcome == FAILED) {
            goto error;
        }
        if (outcome != COUNTED) {
            int failed = PyList_Append(out, event);
            Py_DECREF(event);
            if (failed) {
                goto error;
            }
        }
        count++;
        offset = newline != NULL ? offset + length + 1 : size;
    }
    line_view_release(&line);
    line_view_release(&group_view);
    PyObject *result = Py_BuildValue("(nnO)", offset, count,
                                     value != NULL ? value : Py_None);
    Py_XDECREF(value);
    return result;

error:
    line_view_release(&line);
    line_view_release(&group_view);
    return NULL;
}

/* The offset of a slot of the Event class, checked. */
static int
slot_offset(PyTypeObject *type, const char *name, Py_ssize_t *offset)
{
    PyObject *descriptor = PyObject_GetAttrString((PyObject *)type, name);
    if (descriptor == NULL) {
        return FAILED;
    }
    int ok = Py_IS_TYPE(descriptor, &PyMemberDescr_Type);
    if (ok) {
        PyMemberDef *member = ((PyMemberDescrObject *)descriptor)->d_member;
        ok = member->type == T_OBJECT_EX && member->offset > 0 &&
             member->offset + (Py_ssize_t)sizeof(PyObject *) <=
                 type->tp_basicsize;
        *offset = member->offset;
    }
    Py_DECREF(descriptor);
    if (!ok) {
        PyErr_Format(PyExc_TypeError,
                     "%s.%s is not a slot the fast decoder can fill",
                     type->tp_name, name);
        return FAILED;
    }
    return DONE;
}

static int
FastDecoder_init(FastDecoder *self, PyObject *args, PyObject *kwargs)
{
    PyObject *event_type, *loads, *decode_error, *files, *hosts;
    PyObject *resolve_file, *resolve_host, *convert, *numeric_args;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) > 0) {
        PyErr_SetString(PyExc_TypeError, "FastDecoder takes no keyword arguments");
        return -1;
    }
    if (!PyArg_ParseTuple(args, "O!OOO!O!OOOO!:FastDecoder", &PyType_Type,
                          &event_type, &loads, &decode_error, &PyDict_Type,
                          &files, &PyDict_Type, &hosts, &resolve_file,
                          &resolve_host, &convert, &PyFrozenSet_Type,
                          &numeric_args)) {
        return -1;
    }
    PyTypeObject *type = (PyTypeObject *)event_type;
    if (type->tp_itemsize != 0 || type->tp_alloc == NULL) {
        PyErr_SetString(PyExc_TypeError, "the event class must be a slotted class");
        return -1;
    }
    for (int i = 0; i < N_FIELDS; i++) {
        if (slot_offset(type, slot_names[i], &self->offsets[i]) == FAILED) {
            return -1;
        }
    }
    Py_INCREF(event_type);
    Py_XSETREF(self->event_type, type);
    Py_INCREF(loads);
    Py_XSETREF(self->loads, loads);
    Py_INCREF(decode_error);
    Py_XSETREF(self->decode_error, decode_error);
    Py_INCREF(files);
    Py_XSETREF(self->files, files);
    Py_INCREF(hosts);
    Py_XSETREF(self->hosts, hosts);
    Py_INCREF(resolve_file);
    Py_XSETREF(self->resolve_file, resolve_file);
    Py_INCREF(resolve_host);
    Py_XSETREF(self->resolve_host, resolve_host);
    Py_INCREF(convert);
    Py_XSETREF(self->convert, convert);
    Py_INCREF(numeric_args);
    Py_XSETREF(self->numeric_args, numeric_args);
    PyObject *converter = converter_new(convert, numeric_args);
    if (converter == NULL) {
        return -1;
    }
    Py_XSETREF(self->converter, converter);

    PyObject *kinds = PyDict_New();
    if (kinds == NULL) {
        return -1;
    }
    for (int kind = K_NAME; kind < K_KINDS; kind++) {
        PyObject *code = PyLong_FromLong(kind);
        int failed = code == NULL ||
                     PyDict_SetItemString(kinds, key_texts[kind], code) < 0;
        Py_XDECREF(code);
        if (failed) {
            Py_DECREF(kinds);
            return -1;
        }
    }
    Py_XSETREF(self->key_kinds, kinds);

    /* Lines are parsed in place when loads takes a memoryview (orjson
     * 3.13 does, except on free-threaded builds), from a bytes copy
     * otherwise. */
    PyObject *probe = PyMemoryView_FromMemory((char *)"{}", 2, PyBUF_READ);
    if (probe == NULL) {
        return -1;
    }
    PyObject *parsed = PyObject_CallOneArg(loads, probe);
    Py_DECREF(probe);
    self->parse_views = parsed != NULL && PyDict_CheckExact(parsed);
    if (parsed != NULL) {
        Py_DECREF(parsed);
    }
    else if (PyErr_ExceptionMatches(PyExc_Exception)) {
        PyErr_Clear();
    }
    else {
        return -1;
    }
    self->solo_left = 0;
    self->solo_run = SOLO_RUN_MIN;
    for (int kind = K_NAME; kind < K_KINDS; kind++) {
        PyObject *text = PyUnicode_InternFromString(key_texts[kind]);
        if (text == NULL) {
            return -1;
        }
        Py_XSETREF(self->key_objects[kind], text);
    }
    return 0;
}

static void
forget_numbers(FastDecoder *self)
{
    for (int i = 0; i < NUMBER_SLOTS; i++) {
        Py_CLEAR(self->number_hits[i].key);
        Py_CLEAR(self->number_hits[i].value);
    }
}

static void
forget_hits(FastDecoder *self)
{
    for (int i = 0; i < HIT_SLOTS; i++) {
        Py_CLEAR(self->file_hits[i].key);
        Py_CLEAR(self->file_hits[i].value);
        Py_CLEAR(self->host_hits[i].key);
        Py_CLEAR(self->host_hits[i].value);
    }
}

static int
FastDecoder_traverse(FastDecoder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->event_type);
    Py_VISIT(self->loads);
    Py_VISIT(self->decode_error);
    Py_VISIT(self->files);
    Py_VISIT(self->hosts);
    Py_VISIT(self->resolve_file);
    Py_VISIT(self->resolve_host);
    Py_VISIT(self->convert);
    Py_VISIT(self->numeric_args);
    Py_VISIT(self->stash_values);
    Py_VISIT(self->stash_data);
    Py_VISIT(self->converter);
    Py_VISIT(self->tally_categories);
    return 0;
}

static int
FastDecoder_clear(FastDecoder *self)
{
    Py_CLEAR(self->event_type);
    Py_CLEAR(self->loads);
    Py_CLEAR(self->decode_error);
    Py_CLEAR(self->files);
    Py_CLEAR(self->hosts);
    Py_CLEAR(self->resolve_file);
    Py_CLEAR(self->resolve_host);
    Py_CLEAR(self->convert);
    Py_CLEAR(self->numeric_args);
    Py_CLEAR(self->key_kinds);
    for (int i = 0; i < KEY_SLOTS; i++) {
        Py_CLEAR(self->key_slots[i].key);
    }
    self->known_keys = 0;
    for (int i = 0; i < K_KINDS; i++) {
        Py_CLEAR(self->key_objects[i]);
    }
    for (int i = 0; i < ORDER_SLOTS; i++) {
        Py_CLEAR(self->order_keys[i]);
    }
    for (int i = 0; i < RECENT_SLOTS; i++) {
        Py_CLEAR(self->recent_names[i]);
        Py_CLEAR(self->recent_categories[i]);
    }
    forget_hits(self);
    forget_numbers(self);
    Py_CLEAR(self->scratch);
    clear_stash(self);
    Py_CLEAR(self->converter);
    Py_CLEAR(self->tally_categories);
    return 0;
}

static void
FastDecoder_dealloc(FastDecoder *self)
{
    PyObject_GC_UnTrack(self);
    FastDecoder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
FastDecoder_decode_checked(FastDecoder *self, PyObject *const *args,
                           Py_ssize_t nargs)
{
    if (self->event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "FastDecoder was not initialised");
        return NULL;
    }
    return FastDecoder_decode(self, args, nargs);
}

static PyObject *
FastDecoder_forget(FastDecoder *self, PyObject *Py_UNUSED(ignored))
{
    forget_hits(self);
    Py_RETURN_NONE;
}

static PyObject *
FastDecoder_close(FastDecoder *self, PyObject *Py_UNUSED(ignored))
{
    Py_CLEAR(self->scratch);
    clear_stash(self);
    Py_RETURN_NONE;
}

static PyObject *
FastDecoder_count_events(FastDecoder *self, PyObject *categories)
{
    if (categories == Py_None) {
        Py_CLEAR(self->tally_categories);
        Py_RETURN_NONE;
    }
    if (!PyAnySet_CheckExact(categories)) {
        PyErr_Format(PyExc_TypeError,
                     "count_events needs a set or frozenset of categories, not %.100s",
                     Py_TYPE(categories)->tp_name);
        return NULL;
    }
    Py_INCREF(categories);
    Py_XSETREF(self->tally_categories, categories);
    Py_RETURN_NONE;
}

static PyObject *
FastDecoder_take_tally(FastDecoder *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *result;
    if (self->tally_spans) {
        result = Py_BuildValue("(nnLL)", self->tally_events, self->tally_application,
                               self->tally_first, self->tally_last);
    }
    else {
        result = Py_BuildValue("(nnOO)", self->tally_events, self->tally_application,
                               Py_None, Py_None);
    }
    if (result != NULL) {
        self->tally_events = 0;
        self->tally_application = 0;
        self->tally_spans = 0;
    }
    return result;
}

static PyMethodDef FastDecoder_methods[] = {
    {"count_events", (PyCFunction)FastDecoder_count_events, METH_O,
     "count_events(categories)\n\n"
     "From now on, count each event that decode would build instead of\n"
     "building it, when its ts and ts + dur fit in 64 bits: see\n"
     "take_tally. categories is a set of the categories that are not\n"
     "application events; None turns counting off."},
    {"take_tally", (PyCFunction)FastDecoder_take_tally, METH_NOARGS,
     "take_tally() -> (events, application, first_ts, last_end)\n\n"
     "Return what was counted since the last call and start again from\n"
     "zero. first_ts and last_end are None when nothing was counted."},
    {"forget", (PyCFunction)FastDecoder_forget, METH_NOARGS,
     "forget()\n\n"
     "Forget the hash resolutions remembered so far. Call it whenever the\n"
     "files or hosts tables may have changed."},
    {"close", (PyCFunction)FastDecoder_close, METH_NOARGS,
     "close()\n\n"
     "Drop the buffer and the parsed lines kept between calls; call it\n"
     "when the file is done."},
    {"decode", (PyCFunction)(void (*)(void))FastDecoder_decode_checked,
     METH_FASTCALL,
     "decode(data, offset, limit, out) -> (offset, count, value)\n\n"
     "Append the events of up to limit lines of data, from the line at\n"
     "byte offset on, to out, stopping at the first line the slow path\n"
     "must handle. Return the offset where decoding stopped, the number\n"
     "of lines decoded and the parsed value of the line at that offset\n"
     "(None when it was not parsed, did not parse, or count is limit)."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FastDecoder_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "greenpipe.trace._speedups.FastDecoder",
    .tp_basicsize = sizeof(FastDecoder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Compiled fast path of the trace decoder.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)FastDecoder_init,
    .tp_dealloc = (destructor)FastDecoder_dealloc,
    .tp_traverse = (traverseproc)FastDecoder_traverse,
    .tp_clear = (inquiry)FastDecoder_clear,
    .tp_methods = FastDecoder_methods,
};

/*
 * Flatten: iterate over the items of the lists that an iterator yields,
 * with close() passed on to that iterator. It does what a generator with
 * "for batch in source: yield from batch" does, without resuming a
 * Python frame per item.
 */
typedef struct {
    PyObject_HEAD
    PyObject *source;  /* iterator of lists, NULL once exhausted or closed */
    PyObject *current; /* the list being walked, or NULL */
    Py_ssize_t index;
} Flatten;

static PyObject *
Flatten_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    PyObject *iterable;
    if (kwargs != NULL && PyDict_GET_SIZE(kwargs) > 0) {
        PyErr_SetString(PyExc_TypeError, "Flatten takes no keyword arguments");
        return NULL;
    }
    if (!PyArg_ParseTuple(args, "O:Flatten", &iterable)) {
        return NULL;
    }
    PyObject *source = PyObject_GetIter(iterable);
    if (source == NULL) {
        return NULL;
    }
    Flatten *self = (Flatten *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(source);
        return NULL;
    }
    self->source = source;
    return (PyObject *)self;
}

static PyObject *
Flatten_next(Flatten *self)
{
    for (;;) {
        if (self->current != NULL) {
            if (self->index < PyList_GET_SIZE(self->current)) {
                PyObject *item = PyList_GET_ITEM(self->current, self->index);
                self->index++;
                Py_INCREF(item);
                return item;
            }
            Py_CLEAR(self->current);
        }
        if (self->source == NULL) {
            return NULL;
        }
        PyObject *batch = PyIter_Next(self->source);
        if (batch == NULL) {
            Py_CLEAR(self->source); /* exhausted, or it raised */
            return NULL;
        }
        if (!PyList_CheckExact(batch)) {
            PyErr_Format(PyExc_TypeError, "Flatten needs lists, not %.100s",
                         Py_TYPE(batch)->tp_name);
            Py_DECREF(batch);
            return NULL;
        }
        self->current = batch;
        self->index = 0;
    }
}

static PyObject *
Flatten_close(Flatten *self, PyObject *Py_UNUSED(ignored))
{
    Py_CLEAR(self->current);
    PyObject *source = self->source;
    if (source == NULL) {
        Py_RETURN_NONE;
    }
    self->source = NULL;
    PyObject *result = PyObject_CallMethod(source, "close", NULL);
    if (result == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear(); /* a plain iterator has nothing to close */
        result = Py_None;
        Py_INCREF(result);
    }
    Py_DECREF(source);
    return result;
}

static int
Flatten_traverse(Flatten *self, visitproc visit, void *arg)
{
    Py_VISIT(self->source);
    Py_VISIT(self->current);
    return 0;
}

static int
Flatten_clear(Flatten *self)
{
    Py_CLEAR(self->source);
    Py_CLEAR(self->current);
    return 0;
}

static void
Flatten_dealloc(Flatten *self)
{
    PyObject_GC_UnTrack(self);
    Flatten_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Flatten_methods[] = {
    {"close", (PyCFunction)Flatten_close, METH_NOARGS,
     "Drop the current list and close the source iterator."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Flatten_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "greenpipe.trace._speedups.Flatten",
    .tp_basicsize = sizeof(Flatten),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Flatten(iterable_of_lists): iterate over the lists' items.",
    .tp_new = Flatten_new,
    .tp_dealloc = (destructor)Flatten_dealloc,
    .tp_traverse = (traverseproc)Flatten_traverse,
    .tp_clear = (inquiry)Flatten_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)Flatten_next,
    .tp_methods = Flatten_methods,
};

/*
 * bytes.count(b"\n") looks at one byte at a time in CPython 3.11 (about
 * five instructions per byte under callgrind); memchr is vectorised.
 * The GIL stays held: counting a chunk takes less time than getting the
 * GIL back from a decoding thread can take (up to the switch interval).
 */
/*
 * Scanner: the per-event bookkeeping of the replay's decode stage over a
 * batch of events, in one call instead of a loop in Python. It reads the
 * slots of the Event class at their checked offsets, like FastDecoder.
 */
typedef struct {
    PyObject_HEAD
    PyTypeObject *event_type;
    Py_ssize_t ts;
    Py_ssize_t dur;
    Py_ssize_t category;
    Py_ssize_t name;
} Scanner;

static int
Scanner_init(Scanner *self, PyObject *args, PyObject *kwargs)
{
    PyTypeObject *type;
    if (!PyArg_ParseTuple(args, "O!:Scanner", &PyType_Type, &type)) {
        return -1;
    }
    if (slot_offset(type, "ts", &self->ts) == FAILED ||
        slot_offset(type, "dur", &self->dur) == FAILED ||
        slot_offset(type, "category", &self->category) == FAILED ||
        slot_offset(type, "name", &self->name) == FAILED) {
        return -1;
    }
    Py_INCREF(type);
    Py_XSETREF(self->event_type, type);
    return 0;
}

static void
Scanner_dealloc(Scanner *self)
{
    Py_XDECREF(self->event_type);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

#define SLOT(object, offset) (*(PyObject **)((char *)(object) + (offset)))

/* Read the int in a slot as a long long; return 0 when it is anything else. */
static int
slot_int(PyObject *event, Py_ssize_t offset, long long *value)
{
    PyObject *number = SLOT(event, offset);
    if (number == NULL || !PyLong_CheckExact(number)) {
        return 0;
    }
    int overflow;
    *value = PyLong_AsLongLongAndOverflow(number, &overflow);
    return !overflow && !(*value == -1 && PyErr_Occurred());
}

static PyObject *
Scanner_scan(Scanner *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "scan(events, categories, names, io_out, named_out, span) "
                        "takes 6 arguments");
        return NULL;
    }
    PyObject *events = args[0], *categories = args[1], *names = args[2];
    PyObject *io_out = args[3], *named_out = args[4], *span = args[5];
    if (!PyList_CheckExact(events) || !PyAnySet_Check(categories) ||
        !PyAnySet_Check(names) || !PyList_CheckExact(io_out) ||
        !PyList_CheckExact(named_out) || !PyList_CheckExact(span) ||
        PyList_GET_SIZE(span) != 2) {
        PyErr_SetString(PyExc_TypeError,
                        "scan needs lists of events, io_out, named_out, a set of "
                        "categories and of names, and a list of 2 for span");
        return NULL;
    }
    if (self->event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Scanner was not initialised");
        return NULL;
    }
    long long first = 0, last = 0;
    int have_first = 0, have_last = 0;
    PyObject *known = PyList_GET_ITEM(span, 0);
    if (known != Py_None) {
        if (!PyLong_CheckExact(known)) {
            Py_RETURN_NONE;
        }
        int overflow;
        first = PyLong_AsLongLongAndOverflow(known, &overflow);
        if (overflow || (first == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        have_first = 1;
    }
    known = PyList_GET_ITEM(span, 1);
    if (known != Py_None) {
        if (!PyLong_CheckExact(known)) {
            Py_RETURN_NONE;
        }
        int overflow;
        last = PyLong_AsLongLongAndOverflow(known, &overflow);
        if (overflow || (last == -1 && PyErr_Occurred())) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        have_last = 1;
    }

    /* The first pass reads the times and checks every event. It changes
     * nothing, so returning None leaves the lists as they were. */
    Py_ssize_t count = PyList_GET_SIZE(events);
    Py_ssize_t i;
    for (i = 0; i < count; i++) {
        PyObject *event = PyList_GET_ITEM(events, i);
        long long ts, dur, end;
        if (Py_TYPE(event) != self->event_type ||
            SLOT(event, self->category) == NULL || SLOT(event, self->name) == NULL ||
            !slot_int(event, self->ts, &ts) || !slot_int(event, self->dur, &dur) ||
            __builtin_add_overflow(ts, dur, &end)) {
            PyErr_Clear();
            Py_RETURN_NONE;
        }
        if (!have_first || ts < first) {
            first = ts;
            have_first = 1;
        }
        if (!have_last || end > last) {
            last = end;
            have_last = 1;
        }
    }

    Py_ssize_t application = 0;
    for (i = 0; i < count; i++) {
        PyObject *event = PyList_GET_ITEM(events, i);
        int found = PySet_Contains(categories, SLOT(event, self->category));
        if (found < 0) {
            return NULL;
        }
        if (!found) {
            application++;
            continue;
        }
        if (PyList_Append(io_out, event) < 0) {
            return NULL;
        }
        found = PySet_Contains(names, SLOT(event, self->name));
        if (found < 0 || (found && PyList_Append(named_out, event) < 0)) {
            return NULL;
        }
    }
    if (have_first) {
        PyObject *value = PyLong_FromLongLong(first);
        if (value == NULL) {
            return NULL;
        }
        PyList_SetItem(span, 0, value);
    }
    if (have_last) {
        PyObject *value = PyLong_FromLongLong(last);
        if (value == NULL) {
            return NULL;
        }
        PyList_SetItem(span, 1, value);
    }
    return PyLong_FromSsize_t(application);
}

static PyMethodDef Scanner_methods[] = {
    {"scan", (PyCFunction)(void (*)(void))Scanner_scan, METH_FASTCALL,
     "scan(events, categories, names, io_out, named_out, span) -> int or None\n\n"
     "Widen span to the events' start and end times, append the events whose\n"
     "category is in categories to io_out, and those of them whose name is in\n"
     "names to named_out as well. Return how many events were left out, or\n"
     "None, changing nothing, when an event needs the Python version."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject Scanner_Type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "greenpipe.trace._speedups.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Scanner(event_type): sorts batches of events for the replay.",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Scanner_init,
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_methods = Scanner_methods,
};

static PyObject *
count_newlines(PyObject *Py_UNUSED(module), PyObject *data)
{
    if (!PyBytes_CheckExact(data)) {
        PyErr_Format(PyExc_TypeError, "count_newlines needs bytes, not %.100s",
                     Py_TYPE(data)->tp_name);
        return NULL;
    }
    const char *cursor = PyBytes_AS_STRING(data);
    const char *end = cursor + PyBytes_GET_SIZE(data);
    Py_ssize_t count = 0;
    while (cursor < end) {
        const char *found = memchr(cursor, '\n', (size_t)(end - cursor));
        if (found == NULL) {
            break;
        }
        count++;
        cursor = found + 1;
    }
    return PyLong_FromSsize_t(count);
}

static PyMethodDef module_methods[] = {
    {"count_newlines", (PyCFunction)count_newlines, METH_O,
     "count_newlines(data) -> int\n\nNumber of b'\\n' bytes in data."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "greenpipe.trace._speedups",
    .m_doc = "Compiled fast path of the trace decoder.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    fill_event_members();
    args_name = PyUnicode_InternFromString("args");
    if (args_name == NULL || check_dict_layout() < 0) {
        return NULL;
    }
    if (PyType_Ready(&Event_Type) < 0 || PyType_Ready(&ArgsConverter_Type) < 0 ||
        PyType_Ready(&FastDecoder_Type) < 0 ||
        PyType_Ready(&Flatten_Type) < 0 || PyType_Ready(&Scanner_Type) < 0) {
        return NULL;
    }
    /* The field names, as a slotted class lists them. */
    PyObject *names = PyTuple_New(N_FIELDS);
    if (names == NULL) {
        return NULL;
    }
    int i;
    for (i = 0; i < N_FIELDS; i++) {
        PyObject *text = PyUnicode_InternFromString(slot_names[i]);
        if (text == NULL) {
            Py_DECREF(names);
            return NULL;
        }
        PyTuple_SET_ITEM(names, i, text);
    }
    int failed = PyDict_SetItemString(Event_Type.tp_dict, "__slots__", names);
    Py_DECREF(names);
    if (failed) {
        return NULL;
    }
    PyType_Modified(&Event_Type);
    PyObject *module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    if (PyModule_AddIntConstant(module, "READS_DICTS_IN_PLACE", dict_layout_ok) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&Event_Type);
    if (PyModule_AddObject(module, "Event", (PyObject *)&Event_Type) < 0) {
        Py_DECREF(&Event_Type);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&FastDecoder_Type);
    if (PyModule_AddObject(module, "FastDecoder", (PyObject *)&FastDecoder_Type) < 0) {
        Py_DECREF(&FastDecoder_Type);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&Flatten_Type);
    if (PyModule_AddObject(module, "Flatten", (PyObject *)&Flatten_Type) < 0) {
        Py_DECREF(&Flatten_Type);
        Py_DECREF(module);
        return NULL;
    }
    Py_INCREF(&Scanner_Type);
    if (PyModule_AddObject(module, "Scanner", (PyObject *)&Scanner_Type) < 0) {
        Py_DECREF(&Scanner_Type);
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
