package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
)

// TestJournalPriorities: when stderr is the journal stream systemd names
// in JOURNAL_STREAM, every line starts with its record's syslog priority,
// also when goroutines log at once; to any other file, no prefix.
func TestJournalPriorities(t *testing.T) {
	for _, format := range []string{"", "json"} {
		path := filepath.Join(t.TempDir(), "stderr")
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		var st syscall.Stat_t
		if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
			t.Fatal(err)
		}
		t.Setenv("JOURNAL_STREAM", fmt.Sprintf("%d:%d", st.Dev, st.Ino))
		log := newLogger(f, slog.LevelDebug, format).With("component", "test")
		var wg sync.WaitGroup
		for g := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 50 {
					switch (g + i) % 4 {
					case 0:
						log.Debug("d")
					case 1:
						log.Info("i")
					case 2:
						log.Warn("w")
					case 3:
						log.Error("e")
					}
				}
			}()
		}
		wg.Wait()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		if len(lines) != 200 {
			t.Fatalf("format %q: %d lines, want 200", format, len(lines))
		}
		want := map[string]string{"DEBUG": "<7>", "INFO": "<6>", "WARN": "<4>", "ERROR": "<3>"}
		for _, l := range lines {
			ok := false
			for level, prefix := range want {
				if strings.Contains(l, level) {
					ok = strings.HasPrefix(l, prefix) && strings.Count(l, "<") == 1
				}
			}
			if !ok {
				t.Fatalf("format %q: line %q lacks its priority prefix", format, l)
			}
		}

		// Another file (a terminal, a redirect): no prefix.
		other, err := os.Create(filepath.Join(t.TempDir(), "other"))
		if err != nil {
			t.Fatal(err)
		}
		newLogger(other, slog.LevelInfo, format).Warn("w")
		other.Close()
		b, _ = os.ReadFile(other.Name())
		if strings.HasPrefix(string(b), "<") || len(b) == 0 {
			t.Errorf("format %q: to another file: %q, want the line without prefix", format, b)
		}
	}
}
