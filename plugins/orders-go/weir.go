// weir.go: the glue between Go and weir's plugin contract (wit/, world message-handler).
// Copy it next to your handler; set Handle in an init function, and build with
//
//	GOOS=wasip1 GOARCH=wasm go build -buildmode=c-shared -o handler.core.wasm .
//
// then turn the core module into a component (scripts/build-plugins does both; see
// docs/languages.md). No binding generator for Go runs here, so this file is the canonical ABI
// of weir:plugin@0.1.1 written out by hand: the memory layouts of the records, variants and
// results that cross the boundary, and the functions the host imports and exports.
//
// Memory: the host writes the message it hands over into memory it asks for with
// cabi_realloc. A Go allocation there could start a garbage collection, which reads the clock
// (an import), and a component may not call imports while the host is lowering arguments; so
// cabi_realloc hands out memory from a static arena instead, which is reset after every call.
// A message (all its strings, headers and payload together) must fit in the arena: 4 MiB.
package main

import (
	"runtime"
	"unsafe"
)

// Message is one message delivered to the handler.
type Message struct {
	ID            string
	Source        string
	Key           *string
	Headers       [][2]string
	Payload       []byte
	Offset        uint64
	Attempt       uint32
	TimestampMs   uint64
	ReplyTo       *string
	CorrelationID *string
}

// Header returns the value of the first header called name.
func (m *Message) Header(name string) (string, bool) {
	for _, h := range m.Headers {
		if h[0] == name {
			return h[1], true
		}
	}
	return "", false
}

// Outcome is what the handler asks weir to do with the message: build one with Ack, Retry,
// DeadLetter or Reply.
type Outcome struct {
	tag     uint8
	retryMs uint64
	bytes   []byte
}

// Ack acknowledges the message.
func Ack() Outcome { return Outcome{tag: 0} }

// Retry delivers the message again after ms milliseconds.
func Retry(ms uint64) Outcome { return Outcome{tag: 1, retryMs: ms} }

// DeadLetter moves the message to the dead-letter queue with a reason.
func DeadLetter(reason string) Outcome { return Outcome{tag: 2, bytes: []byte(reason)} }

// Reply answers a request with payload, then acknowledges it.
func Reply(payload []byte) Outcome { return Outcome{tag: 3, bytes: payload} }

// HandlerError is a failed invocation; weir retries it when Retryable.
type HandlerError struct {
	Message   string
	Retryable bool
}

func (e *HandlerError) Error() string { return e.Message }

// Handle is the handler; set it in an init function.
var Handle func(msg *Message) (Outcome, *HandlerError)

// Log levels.
const (
	LogTrace = iota
	LogDebug
	LogInfo
	LogWarn
	LogError
)

//go:wasmimport weir:plugin/log@0.1.1 log
func logImport(level uint32, ptr unsafe.Pointer, len uint32)

// Log writes a line into weir's log, tagged with the plugin and message.
func Log(level uint32, line string) {
	b := []byte(line)
	logImport(level, bytesPtr(b), uint32(len(b)))
	runtime.KeepAlive(b)
}

//go:wasmimport weir:plugin/kv@0.1.1 get
func kvGetImport(keyPtr unsafe.Pointer, keyLen uint32, ret unsafe.Pointer)

//go:wasmimport weir:plugin/kv@0.1.1 set
func kvSetImport(keyPtr unsafe.Pointer, keyLen uint32, valPtr unsafe.Pointer, valLen uint32, ret unsafe.Pointer)

// KvGet reads a key of the plugin's key-value state; found is false when it is not set.
func KvGet(key string) (value []byte, found bool, err *HandlerError) {
	k := []byte(key)
	ret := importRet()
	kvGetImport(bytesPtr(k), uint32(len(k)), unsafe.Pointer(ret))
	runtime.KeepAlive(k)
	if ret[0] != 0 {
		return nil, false, kvError(ret)
	}
	if ret[8] == 0 {
		return nil, false, nil
	}
	return loadBytes(ret[12:]), true, nil
}

// KvSet writes a key of the plugin's key-value state; it commits with the invocation.
func KvSet(key string, value []byte) *HandlerError {
	k := []byte(key)
	ret := importRet()
	kvSetImport(bytesPtr(k), uint32(len(k)), bytesPtr(value), uint32(len(value)), unsafe.Pointer(ret))
	runtime.KeepAlive(k)
	runtime.KeepAlive(value)
	if ret[0] != 0 {
		return kvError(ret)
	}
	return nil
}

// kvError reads a kv-error (variant too-large(u64) | unavailable(string)) at ret[8:].
func kvError(ret *[24]byte) *HandlerError {
	if ret[8] == 1 {
		return &HandlerError{Message: "key-value store unavailable: " + string(loadBytes(ret[16:])), Retryable: true}
	}
	return &HandlerError{Message: "key or value larger than the host allows (" + itoa(load64(ret[16:])) + " bytes)"}
}

//go:wasmimport weir:plugin/publish@0.1.1 publish
func publishImport(destPtr unsafe.Pointer, destLen uint32, keyTag uint32, keyPtr unsafe.Pointer, keyLen uint32,
	headersPtr unsafe.Pointer, headersLen uint32, payloadPtr unsafe.Pointer, payloadLen uint32, ret unsafe.Pointer)

// Publish sends a message to a destination the plugin was granted; under exactly-once it
// becomes visible when the invocation commits.
func Publish(destination string, key *string, headers [][2]string, payload []byte) *HandlerError {
	dest := []byte(destination)
	var keyTag uint32
	var keyBytes []byte
	if key != nil {
		keyTag, keyBytes = 1, []byte(*key)
	}
	// list<tuple<string, string>>: four u32 per header (name ptr, len, value ptr, len).
	flat := make([]uint32, 4*len(headers))
	keep := make([][]byte, 0, 2*len(headers))
	for i, h := range headers {
		name, value := []byte(h[0]), []byte(h[1])
		keep = append(keep, name, value)
		flat[4*i] = uint32(uintptr(bytesPtr(name)))
		flat[4*i+1] = uint32(len(name))
		flat[4*i+2] = uint32(uintptr(bytesPtr(value)))
		flat[4*i+3] = uint32(len(value))
	}
	var headersPtr unsafe.Pointer
	if len(flat) > 0 {
		headersPtr = unsafe.Pointer(&flat[0])
	}
	ret := importRet()
	publishImport(bytesPtr(dest), uint32(len(dest)), keyTag, bytesPtr(keyBytes), uint32(len(keyBytes)),
		headersPtr, uint32(len(headers)), bytesPtr(payload), uint32(len(payload)), unsafe.Pointer(ret))
	runtime.KeepAlive(dest)
	runtime.KeepAlive(keyBytes)
	runtime.KeepAlive(flat)
	runtime.KeepAlive(keep)
	runtime.KeepAlive(payload)
	if ret[0] == 0 {
		return nil
	}
	// publish-error: unknown-destination(string) | not-permitted(string) | too-large(u64) | too-many(u32)
	var why string
	switch ret[8] {
	case 0:
		why = "unknown destination " + string(loadBytes(ret[16:]))
	case 1:
		why = "not permitted to publish to " + string(loadBytes(ret[16:]))
	case 2:
		why = "message larger than " + itoa(load64(ret[16:])) + " bytes"
	default:
		why = "more than " + itoa(uint64(load32(ret[16:]))) + " publishes in one invocation"
	}
	return &HandlerError{Message: "cannot publish to " + destination + ": " + why}
}

// The export: weir:plugin/handler@0.1.1#handle. The message record (96 bytes, see
// loadMessage) is passed by pointer; the result goes in a return area (24 bytes):
// result<outcome, handler-error>.
//
//go:wasmexport weir:plugin/handler@0.1.1#handle
func handleExport(msg unsafe.Pointer) unsafe.Pointer {
	m := loadMessage((*[96]byte)(msg))
	arenaUsed = 0 // everything the host wrote for this call is copied out
	outcome, herr := Handle(m)
	exportRet = [3]uint64{}
	ret := (*[24]byte)(unsafe.Pointer(&exportRet))
	if herr != nil {
		keepAlive = []byte(herr.Message)
		ret[0] = 1
		store32(ret[8:], uint32(uintptr(bytesPtr(keepAlive))))
		store32(ret[12:], uint32(len(keepAlive)))
		if herr.Retryable {
			ret[16] = 1
		}
		return unsafe.Pointer(ret)
	}
	ret[8] = outcome.tag
	switch outcome.tag {
	case 1:
		store64(ret[16:], outcome.retryMs)
	case 2, 3:
		keepAlive = outcome.bytes
		store32(ret[16:], uint32(uintptr(bytesPtr(keepAlive))))
		store32(ret[20:], uint32(len(keepAlive)))
	}
	return unsafe.Pointer(ret)
}

// loadMessage copies the message record out of the arena. Layout (offsets in bytes): id 0,
// source 8 (ptr, len), key 16 (option: tag, then ptr and len at 20), headers 28, payload 36,
// offset 48 (u64), attempt 56 (u32), timestamp-ms 64, reply-to 72, correlation-id 84.
func loadMessage(r *[96]byte) *Message {
	m := &Message{
		ID:            string(loadBytes(r[0:])),
		Source:        string(loadBytes(r[8:])),
		Key:           loadOption(r[16:]),
		Payload:       loadBytes(r[36:]),
		Offset:        load64(r[48:]),
		Attempt:       load32(r[56:]),
		TimestampMs:   load64(r[64:]),
		ReplyTo:       loadOption(r[72:]),
		CorrelationID: loadOption(r[84:]),
	}
	n := load32(r[32:])
	base := uintptr(load32(r[28:]))
	m.Headers = make([][2]string, n)
	for i := range m.Headers {
		h := (*[16]byte)(unsafe.Pointer(base + uintptr(16*i)))
		m.Headers[i] = [2]string{string(loadBytes(h[0:])), string(loadBytes(h[8:]))}
	}
	return m
}

// The arena cabi_realloc allocates from, and the return areas: uint64 arrays, so they are
// 8-byte aligned as the canonical ABI requires.
const arenaSize = 4 << 20

var (
	arena     [arenaSize / 8]uint64
	arenaUsed uintptr
	retArea   [3]uint64
	exportRet [3]uint64
	keepAlive []byte // what the last result points at, until the next call
)

// importRet is the return area an import writes its result into (24 bytes).
func importRet() *[24]byte {
	retArea = [3]uint64{}
	return (*[24]byte)(unsafe.Pointer(&retArea))
}

//go:wasmexport cabi_realloc
func cabiRealloc(old unsafe.Pointer, oldSize, align, newSize uint32) unsafe.Pointer {
	start := (arenaUsed + uintptr(align) - 1) &^ (uintptr(align) - 1)
	if start+uintptr(newSize) > arenaSize {
		panic("weir glue: message larger than the 4 MiB arena")
	}
	arenaUsed = start + uintptr(newSize)
	p := unsafe.Add(unsafe.Pointer(&arena), start)
	if old != nil {
		copy(unsafe.Slice((*byte)(p), newSize), unsafe.Slice((*byte)(old), oldSize))
	}
	return p
}

func bytesPtr(b []byte) unsafe.Pointer {
	if len(b) == 0 {
		return nil
	}
	return unsafe.Pointer(&b[0])
}

// loadBytes copies a (ptr, len) pair's bytes into Go memory.
func loadBytes(b []byte) []byte {
	ptr, n := uintptr(load32(b)), load32(b[4:])
	out := make([]byte, n)
	if n > 0 {
		copy(out, unsafe.Slice((*byte)(unsafe.Pointer(ptr)), n))
	}
	return out
}

// loadOption reads an option<string>: a tag byte, then (ptr, len) at +4.
func loadOption(b []byte) *string {
	if b[0] == 0 {
		return nil
	}
	s := string(loadBytes(b[4:]))
	return &s
}

func load32(b []byte) uint32 {
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}

func load64(b []byte) uint64 { return uint64(load32(b)) | uint64(load32(b[4:]))<<32 }

func store32(b []byte, v uint32) {
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}

func store64(b []byte, v uint64) { store32(b, uint32(v)); store32(b[4:], uint32(v>>32)) }

func itoa(n uint64) string {
	var buf [20]byte
	i := len(buf)
	for {
		i--
		buf[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(buf[i:])
		}
	}
}

// A c-shared module needs a main; the host never calls it.
func main() {}
