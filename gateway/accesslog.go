package gateway

import (
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"time"
	"unicode/utf8"
)

// AccessLogMode says which requests the gateway's access log records.
type AccessLogMode string

// Access log modes.
const (
	// AccessLogOff records none.
	AccessLogOff AccessLogMode = "off"
	// AccessLogSampled records one request in Config.AccessLogSample, and
	// every answer of 5xx.
	AccessLogSampled AccessLogMode = "sampled"
	// AccessLogFull records every request.
	AccessLogFull AccessLogMode = "full"
)

// accessRecord is what the access log keeps of one request: fixed-size
// copies of the request's bytes, so that taking a record allocates
// nothing, and the writer goroutine formats it later.
type accessRecord struct {
	start    time.Time
	duration time.Duration
	status   int
	client   netip.Addr
	rev      *revision // nil: matched no revision
	replica  string    // the endpoint's address, a string that outlives the request
	coldMs   int64     // -1: not a cold start
	retries  int32

	methodLen, hostLen, pathLen, traceLen uint16
	method                                [16]byte
	host                                  [128]byte
	path                                  [256]byte
	trace                                 [32]byte // the trace id, hex
}

// capture copies a request's method, host and path (cut to their arrays'
// size) and trace id into r.
func (r *accessRecord) capture(method, host, path, trace []byte) {
	r.methodLen = uint16(copy(r.method[:], method))
	r.hostLen = uint16(copy(r.host[:], host))
	r.pathLen = uint16(copy(r.path[:], path))
	r.traceLen = uint16(copy(r.trace[:], trace))
}

// accessLog is the gateway's access log: requests hand records to a ring
// of preallocated slots through two channels of slot numbers (free and
// full), and one goroutine writes them out as JSON lines. A request never
// waits for the writer nor allocates: when no slot is free, its record is
// dropped and counted.
type accessLog struct {
	mode   AccessLogMode
	sample uint64
	w      io.Writer
	slots  []accessRecord
	free   chan int32
	full   chan int32
	// dropped counts records no slot was free for; may be nil.
	dropped interface{ Inc() }
}

// newAccessLog returns the log writing to w, or nil when mode is off or w
// is nil.
func newAccessLog(mode AccessLogMode, sample, buffer int, w io.Writer) *accessLog {
	if mode == AccessLogOff || mode == "" || w == nil {
		return nil
	}
	l := &accessLog{mode: mode, sample: uint64(max(sample, 1)), w: w, slots: make([]accessRecord, buffer),
		free: make(chan int32, buffer), full: make(chan int32, buffer)}
	for i := range buffer {
		l.free <- int32(i)
	}
	return l
}

// wants reports whether a request that ended with status is recorded.
func (l *accessLog) wants(status int) bool {
	return l.mode == AccessLogFull || status >= 500 || rand.Uint64()%l.sample == 0
}

// record hands r to the writer, or drops it when no slot is free. It does
// not block and allocates nothing.
func (l *accessLog) record(r *accessRecord) {
	select {
	case i := <-l.free:
		l.slots[i] = *r
		l.full <- i // never blocks: the slots number no more than its room
	default:
		if l.dropped != nil {
			l.dropped.Inc()
		}
	}
}

// run writes records until stop is closed, then what is left, and
// returns. A write error is reported once on errs (may be nil) and the
// records are dropped until the writer takes them again.
func (l *accessLog) run(stop <-chan struct{}, errs func(error)) {
	var buf []byte
	failing := false
	write := func(i int32) {
		buf = appendAccessRecord(buf[:0], &l.slots[i])
		l.free <- i
		if _, err := l.w.Write(buf); err != nil {
			if !failing && errs != nil {
				errs(err)
			}
			failing = true
			return
		}
		failing = false
	}
	for {
		select {
		case i := <-l.full:
			write(i)
		case <-stop:
			for {
				select {
				case i := <-l.full:
					write(i)
				default:
					return
				}
			}
		}
	}
}

// appendAccessRecord appends r as one JSON line.
func appendAccessRecord(b []byte, r *accessRecord) []byte {
	b = append(b, `{"time":"`...)
	b = r.start.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","msg":"request","method":`...)
	b = appendJSONString(b, r.method[:r.methodLen])
	b = append(b, `,"host":`...)
	b = appendJSONString(b, r.host[:r.hostLen])
	b = append(b, `,"path":`...)
	b = appendJSONString(b, r.path[:r.pathLen])
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(r.status), 10)
	b = append(b, `,"duration_seconds":`...)
	b = strconv.AppendFloat(b, r.duration.Seconds(), 'f', -1, 64)
	if r.rev != nil {
		b = append(b, `,"namespace":`...)
		b = appendJSONString(b, []byte(r.rev.key.Namespace))
		b = append(b, `,"function":`...)
		b = appendJSONString(b, []byte(r.rev.function))
		b = append(b, `,"revision":`...)
		b = appendJSONString(b, []byte(r.rev.key.Name))
	}
	if r.replica != "" {
		b = append(b, `,"replica":`...)
		b = appendJSONString(b, []byte(r.replica))
	}
	if r.client.IsValid() {
		b = append(b, `,"client":"`...)
		b = r.client.Unmap().AppendTo(b)
		b = append(b, '"')
	}
	if r.traceLen > 0 {
		b = append(b, `,"trace_id":`...)
		b = appendJSONString(b, r.trace[:r.traceLen])
	}
	if r.retries > 0 {
		b = append(b, `,"retries":`...)
		b = strconv.AppendInt(b, int64(r.retries), 10)
	}
	if r.coldMs >= 0 {
		b = append(b, `,"cold_start_ms":`...)
		b = strconv.AppendInt(b, r.coldMs, 10)
	}
	return append(b, "}\n"...)
}

// appendJSONString appends s as a JSON string: quotes, backslashes and
// control characters escaped, invalid UTF-8 replaced by U+FFFD.
func appendJSONString(b, s []byte) []byte {
	const hex = "0123456789abcdef"
	b = append(b, '"')
	for len(s) > 0 {
		c := s[0]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
		case c < utf8.RuneSelf:
			b = append(b, c)
		default:
			r, n := utf8.DecodeRune(s)
			if r == utf8.RuneError && n == 1 {
				b = append(b, "\ufffd"...)
			} else {
				b = append(b, s[:n]...)
			}
			s = s[n:]
			continue
		}
		s = s[1:]
	}
	return append(b, '"')
}

// The W3C Trace Context header (https://www.w3.org/TR/trace-context/):
// "00-TRACEID-PARENTID-FLAGS", 32 and 16 lowercase hex digits.
var strTraceparent = []byte("traceparent")

const traceparentLen = 55

// newTraceparent writes a new traceparent into dst: a random trace id and
// parent id, version 00, flags 00 (the gateway records no spans: the
// replica decides whether to sample). It allocates nothing.
func newTraceparent(dst *[traceparentLen]byte) {
	const hex = "0123456789abcdef"
	put := func(at int, v uint64) {
		for i := 15; i >= 0; i-- {
			dst[at+i] = hex[v&0xf]
			v >>= 4
		}
	}
	hi, lo, parent := rand.Uint64(), rand.Uint64(), rand.Uint64()
	if hi|lo == 0 {
		lo = 1 // an all-zero trace id is invalid
	}
	if parent == 0 {
		parent = 1
	}
	dst[0], dst[1], dst[2] = '0', '0', '-'
	put(3, hi)
	put(19, lo)
	dst[35] = '-'
	put(36, parent)
	dst[52], dst[53], dst[54] = '-', '0', '0'
}

// traceID returns the trace id of a traceparent value, or nil when it is
// not one of version 00.
func traceID(tp []byte) []byte {
	if len(tp) != traceparentLen || tp[0] != '0' || tp[1] != '0' || tp[2] != '-' || tp[35] != '-' || tp[52] != '-' {
		return nil
	}
	for _, c := range tp[3:35] {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return nil
		}
	}
	return tp[3:35]
}

// ParseAccessLogMode parses a mode's name, for flags.
func ParseAccessLogMode(s string) (AccessLogMode, error) {
	switch m := AccessLogMode(s); m {
	case AccessLogOff, AccessLogSampled, AccessLogFull:
		return m, nil
	}
	return "", fmt.Errorf("access log mode %q: want off, sampled or full", s)
}
