package data

import (
	"encoding/binary"
	"fmt"
	"math"
)

// This file is a minimal Python unpickler: enough for the dictionaries of
// numpy arrays and lists of ints that the downsampled-ImageNet batch files
// hold, written by Python 2 or 3 with pickle protocols 1 to 5 (binary
// opcodes). It builds no Python objects beyond these; an unknown opcode or
// global is an error. Everything is read from an in-memory buffer, every
// length is checked against what remains, and bytes are sub-slices of the
// buffer, so a malformed file can neither panic nor make it allocate more
// than its own size.
//
// Values: nil (None), bool, int64, float64, string (str), []byte (bytes,
// bytearray, Python 2 str), pyTuple, *pyList, *pyDict, pyGlobal, *ndarray,
// *npDtype.

// pyTuple is a Python tuple.
type pyTuple []any

// pyList is a Python list.
type pyList struct{ items []any }

// pyDict is a Python dict, in insertion order.
type pyDict struct{ keys, vals []any }

// get returns the value of a string key.
func (d *pyDict) get(key string) (any, bool) {
	for i, k := range d.keys {
		if s, ok := k.(string); ok && s == key {
			return d.vals[i], true
		}
		if b, ok := k.([]byte); ok && string(b) == key {
			return d.vals[i], true
		}
	}
	return nil, false
}

// pyGlobal is a reference to a Python global (a class or function).
type pyGlobal struct{ module, name string }

// npDtype is a numpy dtype: kind and size as in "u1", "i8", "f4", with the
// byte order '<', '>', '|' or '=' (native, taken as little-endian).
type npDtype struct {
	str   string
	order byte
}

// littleEndian reports whether multi-byte elements are stored little-endian.
func (t *npDtype) littleEndian() bool { return t.order != '>' }

// ndarray is a numpy array: its shape, element type, memory order and raw
// bytes.
type ndarray struct {
	shape   []int
	dtype   *npDtype
	fortran bool
	data    []byte
}

// count returns the number of elements, or -1 if it is 2^40 or more.
func (a *ndarray) count() int {
	const limit = 1 << 40
	n := 1
	for _, s := range a.shape {
		if s < 0 || (s > 0 && n > limit/s) {
			return -1
		}
		n *= s
	}
	return n
}

// unpickler holds the state of one load.
type unpickler struct {
	buf       []byte
	pos       int
	stack     []any
	metastack [][]any
	memo      map[int]any
}

// unpickle parses a pickle held in buf and returns its value.
func unpickle(buf []byte) (v any, err error) {
	u := &unpickler{buf: buf, memo: map[int]any{}}
	defer func() {
		// The reader checks every length and type; this is a last guard so
		// that a bug can only ever turn into an error.
		if r := recover(); r != nil {
			v, err = nil, fmt.Errorf("pickle: at byte %d: internal error: %v", u.pos, r)
		}
	}()
	return u.run()
}

func (u *unpickler) errf(format string, args ...any) error {
	return fmt.Errorf("pickle: at byte %d: %s", u.pos, fmt.Sprintf(format, args...))
}

// take returns the next n bytes.
func (u *unpickler) take(n uint64) ([]byte, error) {
	if n > uint64(len(u.buf)-u.pos) {
		return nil, u.errf("truncated: need %d bytes, %d left", n, len(u.buf)-u.pos)
	}
	b := u.buf[u.pos : u.pos+int(n) : u.pos+int(n)]
	u.pos += int(n)
	return b, nil
}

func (u *unpickler) u8() (uint64, error) {
	b, err := u.take(1)
	if err != nil {
		return 0, err
	}
	return uint64(b[0]), nil
}

func (u *unpickler) u16() (uint64, error) {
	b, err := u.take(2)
	if err != nil {
		return 0, err
	}
	return uint64(binary.LittleEndian.Uint16(b)), nil
}

func (u *unpickler) u32() (uint64, error) {
	b, err := u.take(4)
	if err != nil {
		return 0, err
	}
	return uint64(binary.LittleEndian.Uint32(b)), nil
}

func (u *unpickler) u64() (uint64, error) {
	b, err := u.take(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// line returns the bytes up to the next newline, without it.
func (u *unpickler) line() (string, error) {
	for i := u.pos; i < len(u.buf); i++ {
		if u.buf[i] == '\n' {
			s := string(u.buf[u.pos:i])
			u.pos = i + 1
			return s, nil
		}
	}
	return "", u.errf("truncated: unterminated line")
}

func (u *unpickler) push(v any) { u.stack = append(u.stack, v) }

func (u *unpickler) pop() (any, error) {
	if len(u.stack) == 0 {
		return nil, u.errf("stack underflow")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

func (u *unpickler) top() (any, error) {
	if len(u.stack) == 0 {
		return nil, u.errf("stack underflow")
	}
	return u.stack[len(u.stack)-1], nil
}

// popMark returns the items pushed since the last MARK and restores the
// stack below it.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.metastack) == 0 {
		return nil, u.errf("no MARK on the stack")
	}
	items := u.stack
	u.stack = u.metastack[len(u.metastack)-1]
	u.metastack = u.metastack[:len(u.metastack)-1]
	return items, nil
}

// pushBytes pushes length-prefixed bytes (as []byte or, for str, string).
func (u *unpickler) pushCounted(n uint64, err error, asString bool) error {
	if err != nil {
		return err
	}
	b, err := u.take(n)
	if err != nil {
		return err
	}
	if asString {
		u.push(string(b))
	} else {
		u.push(b)
	}
	return nil
}

func (u *unpickler) run() (any, error) {
	for {
		op, err := u.u8()
		if err != nil {
			return nil, u.errf("truncated: no STOP opcode")
		}
		switch op {
		case 0x80: // PROTO
			p, err := u.u8()
			if err != nil {
				return nil, err
			}
			if p > 5 {
				return nil, u.errf("unsupported pickle protocol %d", p)
			}
		case 0x95: // FRAME: the whole pickle is in memory, so frames need no handling
			n, err := u.u64()
			if err != nil {
				return nil, err
			}
			if n > uint64(len(u.buf)-u.pos) {
				return nil, u.errf("truncated: frame of %d bytes, %d left", n, len(u.buf)-u.pos)
			}
		case '.': // STOP
			v, err := u.pop()
			if err != nil {
				return nil, err
			}
			return v, nil
		case '(': // MARK
			u.metastack = append(u.metastack, u.stack)
			u.stack = nil
		case '0': // POP
			if len(u.stack) == 0 {
				if _, err := u.popMark(); err != nil {
					return nil, err
				}
			} else if _, err := u.pop(); err != nil {
				return nil, err
			}
		case '1': // POP_MARK
			if _, err := u.popMark(); err != nil {
				return nil, err
			}
		case '2': // DUP
			v, err := u.top()
			if err != nil {
				return nil, err
			}
			u.push(v)
		case 'N':
			u.push(nil)
		case 0x88:
			u.push(true)
		case 0x89:
			u.push(false)
		case 'J': // BININT
			n, err := u.u32()
			if err != nil {
				return nil, err
			}
			u.push(int64(int32(uint32(n))))
		case 'K': // BININT1
			n, err := u.u8()
			if err != nil {
				return nil, err
			}
			u.push(int64(n))
		case 'M': // BININT2
			n, err := u.u16()
			if err != nil {
				return nil, err
			}
			u.push(int64(n))
		case 0x8a, 0x8b: // LONG1, LONG4
			var n uint64
			if op == 0x8a {
				n, err = u.u8()
			} else {
				n, err = u.u32()
			}
			if err != nil {
				return nil, err
			}
			b, err := u.take(n)
			if err != nil {
				return nil, err
			}
			v, ok := decodeLong(b)
			if !ok {
				return nil, u.errf("integer of %d bytes does not fit in 64 bits", len(b))
			}
			u.push(v)
		case 'G': // BINFLOAT
			b, err := u.take(8)
			if err != nil {
				return nil, err
			}
			u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
		case 'U': // SHORT_BINSTRING (Python 2 str, kept as bytes)
			n, err := u.u8()
			if err := u.pushCounted(n, err, false); err != nil {
				return nil, err
			}
		case 'T': // BINSTRING (Python 2 str, kept as bytes)
			n, err := u.u32()
			if err == nil && n > math.MaxInt32 {
				return nil, u.errf("BINSTRING with negative length")
			}
			if err := u.pushCounted(n, err, false); err != nil {
				return nil, err
			}
		case 'C': // SHORT_BINBYTES
			n, err := u.u8()
			if err := u.pushCounted(n, err, false); err != nil {
				return nil, err
			}
		case 'B': // BINBYTES
			n, err := u.u32()
			if err := u.pushCounted(n, err, false); err != nil {
				return nil, err
			}
		case 0x8e, 0x96: // BINBYTES8, BYTEARRAY8
			n, err := u.u64()
			if err := u.pushCounted(n, err, false); err != nil {
				return nil, err
			}
		case 0x8c: // SHORT_BINUNICODE
			n, err := u.u8()
			if err := u.pushCounted(n, err, true); err != nil {
				return nil, err
			}
		case 'X': // BINUNICODE
			n, err := u.u32()
			if err := u.pushCounted(n, err, true); err != nil {
				return nil, err
			}
		case 0x8d: // BINUNICODE8
			n, err := u.u64()
			if err := u.pushCounted(n, err, true); err != nil {
				return nil, err
			}
		case ')':
			u.push(pyTuple{})
		case 't': // TUPLE
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			u.push(pyTuple(items))
		case 0x85, 0x86, 0x87: // TUPLE1..3
			n := int(op - 0x84)
			if len(u.stack) < n {
				return nil, u.errf("stack underflow")
			}
			t := make(pyTuple, n)
			copy(t, u.stack[len(u.stack)-n:])
			u.stack = u.stack[:len(u.stack)-n]
			u.push(t)
		case ']':
			u.push(&pyList{})
		case 'l': // LIST
			items, err := u.popMark()
			if err != nil {
				return nil, err
			}
			u.push(&pyList{items: items})
		case 'a', 'e': // APPEND, APPENDS
			var items []any
			if op == 'a' {
				v, err := u.pop()
				if err != nil {
					return nil, err
				}
				items = []any{v}
			} else if items, err = u.popMark(); err != nil {
				return nil, err
			}
			t, err := u.top()
			if err != nil {
				return nil, err
			}
			l, ok := t.(*pyList)
			if !ok {
				return nil, u.errf("APPEND to a %s, not a list", typeName(t))
			}
			l.items = append(l.items, items...)
		case '}':
			u.push(&pyDict{})
		case 'd', 's', 'u': // DICT, SETITEM, SETITEMS
			var items []any
			switch op {
			case 's':
				if len(u.stack) < 2 {
					return nil, u.errf("stack underflow")
				}
				items = slicesClone(u.stack[len(u.stack)-2:])
				u.stack = u.stack[:len(u.stack)-2]
			default:
				if items, err = u.popMark(); err != nil {
					return nil, err
				}
			}
			if len(items)%2 != 0 {
				return nil, u.errf("odd number of items for a dict")
			}
			var d *pyDict
			if op == 'd' {
				d = &pyDict{}
				u.push(d)
			} else {
				t, err := u.top()
				if err != nil {
					return nil, err
				}
				var ok bool
				if d, ok = t.(*pyDict); !ok {
					return nil, u.errf("SETITEM on a %s, not a dict", typeName(t))
				}
			}
			for i := 0; i < len(items); i += 2 {
				d.keys = append(d.keys, items[i])
				d.vals = append(d.vals, items[i+1])
			}
		case 'c': // GLOBAL
			mod, err := u.line()
			if err != nil {
				return nil, err
			}
			name, err := u.line()
			if err != nil {
				return nil, err
			}
			u.push(pyGlobal{mod, name})
		case 0x93: // STACK_GLOBAL
			name, err1 := u.pop()
			mod, err2 := u.pop()
			if err1 != nil || err2 != nil {
				return nil, u.errf("stack underflow")
			}
			ms, ok1 := asString(mod)
			ns, ok2 := asString(name)
			if !ok1 || !ok2 {
				return nil, u.errf("STACK_GLOBAL needs two strings")
			}
			u.push(pyGlobal{ms, ns})
		case 'R': // REDUCE
			args, err1 := u.pop()
			fn, err2 := u.pop()
			if err1 != nil || err2 != nil {
				return nil, u.errf("stack underflow")
			}
			t, ok := args.(pyTuple)
			if !ok {
				return nil, u.errf("REDUCE arguments are a %s, not a tuple", typeName(args))
			}
			g, ok := fn.(pyGlobal)
			if !ok {
				return nil, u.errf("REDUCE of a %s, not a global", typeName(fn))
			}
			v, err := u.call(g, t)
			if err != nil {
				return nil, err
			}
			u.push(v)
		case 'b': // BUILD
			state, err := u.pop()
			if err != nil {
				return nil, err
			}
			obj, err := u.top()
			if err != nil {
				return nil, err
			}
			if err := u.build(obj, state); err != nil {
				return nil, err
			}
		case 'q', 'r': // BINPUT, LONG_BINPUT
			var i uint64
			if op == 'q' {
				i, err = u.u8()
			} else {
				i, err = u.u32()
			}
			if err != nil {
				return nil, err
			}
			v, err := u.top()
			if err != nil {
				return nil, err
			}
			u.memo[int(i)] = v
		case 0x94: // MEMOIZE
			v, err := u.top()
			if err != nil {
				return nil, err
			}
			u.memo[len(u.memo)] = v
		case 'h', 'j': // BINGET, LONG_BINGET
			var i uint64
			if op == 'h' {
				i, err = u.u8()
			} else {
				i, err = u.u32()
			}
			if err != nil {
				return nil, err
			}
			v, ok := u.memo[int(i)]
			if !ok {
				return nil, u.errf("memo entry %d was never stored", i)
			}
			u.push(v)
		case 0x98: // READONLY_BUFFER: nothing to do
		default:
			if op >= 0x20 && op < 0x7f {
				return nil, u.errf("unsupported opcode %q (text pickles of protocol 0 are not read: re-save with protocol 2 or later)", rune(op))
			}
			return nil, u.errf("unsupported opcode 0x%02x", op)
		}
	}
}

// call applies one of the few globals that numpy pickles use.
func (u *unpickler) call(g pyGlobal, args pyTuple) (any, error) {
	switch g.module + "." + g.name {
	case "numpy.core.multiarray._reconstruct", "numpy._core.multiarray._reconstruct":
		// _reconstruct(ndarray, (0,), b'b'); the content comes with BUILD.
		return &ndarray{}, nil
	case "numpy.dtype":
		if len(args) < 1 {
			return nil, u.errf("numpy.dtype without arguments")
		}
		s, ok := asString(args[0])
		if !ok {
			return nil, u.errf("numpy.dtype of a %s", typeName(args[0]))
		}
		return &npDtype{str: s, order: '|'}, nil
	case "_codecs.encode":
		// Python 3 bytes pickled with protocol 2: encode(str, 'latin1').
		if len(args) != 2 {
			return nil, u.errf("_codecs.encode with %d arguments", len(args))
		}
		s, ok1 := args[0].(string)
		enc, ok2 := asString(args[1])
		if !ok1 || !ok2 || (enc != "latin1" && enc != "latin-1") {
			return nil, u.errf("_codecs.encode: only encode(str, 'latin1') is supported")
		}
		return latin1(s)
	case "builtins.bytes", "__builtin__.bytes", "builtins.bytearray", "__builtin__.bytearray":
		switch {
		case len(args) == 0:
			return []byte{}, nil
		case len(args) == 1:
			if b, ok := args[0].([]byte); ok {
				return b, nil
			}
		case len(args) == 2:
			if s, ok := args[0].(string); ok {
				return latin1(s)
			}
		}
		return nil, u.errf("%s.%s: unsupported arguments", g.module, g.name)
	case "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar":
		if len(args) != 2 {
			return nil, u.errf("numpy scalar with %d arguments", len(args))
		}
		t, ok := args[0].(*npDtype)
		raw, ok2 := asBytes(args[1])
		if !ok || !ok2 {
			return nil, u.errf("numpy scalar: unsupported arguments")
		}
		a := &ndarray{dtype: t, data: raw}
		vals, err := a.ints()
		if err != nil {
			return nil, u.errf("numpy scalar: %v", err)
		}
		if len(vals) != 1 {
			return nil, u.errf("numpy scalar of %d bytes for dtype %s", len(raw), t.str)
		}
		return vals[0], nil
	case "numpy.core.numeric._frombuffer", "numpy._core.numeric._frombuffer":
		// Protocol 5: _frombuffer(buffer, dtype, shape, order).
		if len(args) != 4 {
			return nil, u.errf("numpy _frombuffer with %d arguments", len(args))
		}
		raw, ok1 := asBytes(args[0])
		t, ok2 := args[1].(*npDtype)
		shape, ok3 := args[2].(pyTuple)
		order, ok4 := asString(args[3])
		if !ok1 || !ok2 || !ok3 || !ok4 {
			return nil, u.errf("numpy _frombuffer: unsupported arguments")
		}
		a := &ndarray{dtype: t, data: raw, fortran: order == "F"}
		if err := a.setShape(shape); err != nil {
			return nil, u.errf("numpy _frombuffer: %v", err)
		}
		return a, nil
	}
	return nil, u.errf("unsupported global %s.%s", g.module, g.name)
}

// build applies BUILD's state to a numpy array or dtype.
func (u *unpickler) build(obj, state any) error {
	st, ok := state.(pyTuple)
	if !ok {
		return u.errf("BUILD state is a %s, not a tuple", typeName(state))
	}
	switch o := obj.(type) {
	case *npDtype:
		// (version, byteorder, subarray, names, fields, elsize, alignment, flags)
		if len(st) < 2 {
			return u.errf("numpy dtype state of %d items", len(st))
		}
		s, ok := asString(st[1])
		if !ok || len(s) != 1 {
			return u.errf("numpy dtype byte order is not one character")
		}
		o.order = s[0]
		return nil
	case *ndarray:
		// (version, shape, dtype, is_fortran, data), or without the version.
		if len(st) == 5 {
			st = st[1:]
		}
		if len(st) != 4 {
			return u.errf("numpy array state of %d items", len(st))
		}
		shape, ok1 := st[0].(pyTuple)
		t, ok2 := st[1].(*npDtype)
		fortran, ok3 := st[2].(bool)
		raw, ok4 := asBytes(st[3])
		if !ok1 || !ok2 || !ok3 {
			return u.errf("numpy array state has the wrong types")
		}
		if !ok4 {
			return u.errf("numpy array of Python objects (dtype %s) is not supported", t.str)
		}
		o.dtype, o.fortran, o.data = t, fortran, raw
		if err := o.setShape(shape); err != nil {
			return u.errf("numpy array: %v", err)
		}
		return nil
	}
	return u.errf("BUILD on a %s", typeName(obj))
}

// setShape sets the shape and checks it against the data size.
func (a *ndarray) setShape(shape pyTuple) error {
	a.shape = make([]int, len(shape))
	for i, s := range shape {
		v, ok := s.(int64)
		if !ok {
			// Name the type only: printing a value could take forever
			// (a tuple nested k deep with 3 references to the level below
			// prints 3^k items).
			return fmt.Errorf("dimension %d is a %s, not an int", i, typeName(s))
		}
		if v < 0 || v > math.MaxInt32 {
			return fmt.Errorf("bad dimension %d", v)
		}
		a.shape[i] = int(v)
	}
	size, err := a.itemSize()
	if err != nil {
		return err
	}
	n := a.count()
	if n < 0 || uint64(n)*uint64(size) != uint64(len(a.data)) {
		return fmt.Errorf("shape %v of dtype %s needs %d bytes, has %d", a.shape, a.dtype.str, uint64(max(n, 0))*uint64(size), len(a.data))
	}
	return nil
}

// itemSize returns the size of one element of the dtype.
func (a *ndarray) itemSize() (int, error) {
	s := a.dtype.str
	if len(s) > 0 && (s[0] == '<' || s[0] == '>' || s[0] == '|' || s[0] == '=') {
		s = s[1:]
	}
	if len(s) == 2 && s[1] >= '1' && s[1] <= '8' && (s[0] == 'u' || s[0] == 'i' || s[0] == 'f' || s[0] == 'b') {
		return int(s[1] - '0'), nil
	}
	return 0, fmt.Errorf("unsupported dtype %q", a.dtype.str)
}

// kind returns the dtype's kind letter: 'u', 'i', 'f' or 'b'.
func (a *ndarray) kind() byte {
	s := a.dtype.str
	if len(s) > 0 && (s[0] == '<' || s[0] == '>' || s[0] == '|' || s[0] == '=') {
		s = s[1:]
	}
	if s == "" {
		return 0
	}
	return s[0]
}

// ints returns the elements of an integer (or bool) array.
func (a *ndarray) ints() ([]int64, error) {
	size, err := a.itemSize()
	if err != nil {
		return nil, err
	}
	k := a.kind()
	if k != 'u' && k != 'i' && k != 'b' {
		return nil, fmt.Errorf("dtype %s is not an integer type", a.dtype.str)
	}
	if size != 1 && size != 2 && size != 4 && size != 8 {
		return nil, fmt.Errorf("unsupported dtype %s", a.dtype.str)
	}
	if len(a.data)%size != 0 {
		return nil, fmt.Errorf("%d bytes of dtype %s", len(a.data), a.dtype.str)
	}
	var bo binary.ByteOrder = binary.LittleEndian
	if !a.dtype.littleEndian() {
		bo = binary.BigEndian
	}
	out := make([]int64, len(a.data)/size)
	for i := range out {
		b := a.data[i*size : (i+1)*size]
		var v uint64
		switch size {
		case 1:
			v = uint64(b[0])
		case 2:
			v = uint64(bo.Uint16(b))
		case 4:
			v = uint64(bo.Uint32(b))
		case 8:
			v = bo.Uint64(b)
		}
		if k == 'i' { // sign-extend
			shift := 64 - 8*uint(size)
			out[i] = int64(v<<shift) >> shift
		} else {
			if v > math.MaxInt64 {
				return nil, fmt.Errorf("value %d does not fit in int64", v)
			}
			out[i] = int64(v)
		}
	}
	return out, nil
}

// decodeLong decodes a little-endian two's-complement integer of at most 8
// bytes.
func decodeLong(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, true
	}
	if len(b) > 8 {
		// Accept sign-extension bytes beyond the eighth.
		ext := byte(0)
		if b[7]&0x80 != 0 {
			ext = 0xff
		}
		for _, c := range b[8:] {
			if c != ext {
				return 0, false
			}
		}
		b = b[:8]
	}
	var v uint64
	for i := len(b) - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	shift := 64 - 8*uint(len(b))
	return int64(v<<shift) >> shift, true
}

// latin1 encodes a string of code points below 256 as bytes.
func latin1(s string) ([]byte, error) {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		if r > 0xff {
			return nil, fmt.Errorf("pickle: latin1 bytes with code point %U", r)
		}
		out = append(out, byte(r))
	}
	return out, nil
}

// asString returns the text of a str or (Python 2) bytes value.
func asString(v any) (string, bool) {
	switch s := v.(type) {
	case string:
		return s, true
	case []byte:
		return string(s), true
	}
	return "", false
}

// asBytes returns the bytes of a bytes or (Python 2) str value.
func asBytes(v any) ([]byte, bool) {
	switch b := v.(type) {
	case []byte:
		return b, true
	case string:
		return []byte(b), true
	}
	return nil, false
}

// typeName names the Python type of an unpickled value, for errors.
func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "None"
	case bool:
		return "bool"
	case int64:
		return "int"
	case float64:
		return "float"
	case string:
		return "str"
	case []byte:
		return "bytes"
	case pyTuple:
		return "tuple"
	case *pyList:
		return "list"
	case *pyDict:
		return "dict"
	case pyGlobal:
		return "global"
	case *ndarray:
		return "numpy array"
	case *npDtype:
		return "numpy dtype"
	}
	return fmt.Sprintf("%T", v)
}

// slicesClone copies a slice of values.
func slicesClone(s []any) []any { return append([]any(nil), s...) }
