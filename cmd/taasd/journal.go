package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Under systemd, stderr is a stream into the journal, which reads a
// "<N>" prefix on each line as the line's syslog priority (sd-daemon(3)):
// with it, `journalctl -u taasd -p warning` shows warnings and errors only.
// systemd names the stream in JOURNAL_STREAM ("device:inode"); the prefix
// is written only when stderr is that very stream, so a terminal or a file
// never sees it.

// journalStream reports whether f is the journal stream systemd gave us.
func journalStream(f *os.File) bool {
	dev, ino, ok := strings.Cut(os.Getenv("JOURNAL_STREAM"), ":")
	if !ok {
		return false
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return false
	}
	return dev == strconv.FormatUint(st.Dev, 10) && ino == strconv.FormatUint(st.Ino, 10)
}

// priority is the syslog priority of a slog level: debug 7, info 6,
// warning 4, error 3.
func priority(l slog.Level) byte {
	switch {
	case l >= slog.LevelError:
		return '3'
	case l >= slog.LevelWarn:
		return '4'
	case l >= slog.LevelInfo:
		return '6'
	default:
		return '7'
	}
}

// journalHandler writes each record of its inner handler (which writes a
// record as one line, in one Write, to out) behind its priority prefix.
type journalHandler struct {
	inner slog.Handler
	out   *prefixWriter
}

// prefixWriter puts prefix in front of each Write; the journalHandler that
// owns it holds mu from setting the prefix to the Write.
type prefixWriter struct {
	mu     sync.Mutex
	w      io.Writer
	prefix [3]byte
	buf    []byte
}

func (p *prefixWriter) Write(b []byte) (int, error) {
	p.buf = append(append(p.buf[:0], p.prefix[:]...), b...)
	if _, err := p.w.Write(p.buf); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.prefix = [3]byte{'<', priority(r.Level), '>'}
	return h.inner.Handle(ctx, r)
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(as), out: h.out}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), out: h.out}
}
