package main

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
	"testing"
)

// recorder keeps every Write separately, to see that lines arrive whole.
type recorder struct {
	mu     sync.Mutex
	writes []string
}

func (r *recorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.writes = append(r.writes, string(p))
	return len(p), nil
}

func (r *recorder) String() string { return strings.Join(r.writes, "") }

func TestLineWriter(t *testing.T) {
	for _, tc := range []struct {
		name   string
		writes []string
		close  bool
		want   string
	}{
		{"one line", []string{"hello\n"}, false, "x | hello\n"},
		{"partial writes", []string{"hel", "lo\nwor", "ld\n"}, false, "x | hello\nx | world\n"},
		{"partial held until newline", []string{"hel", "lo"}, false, ""},
		{"many lines in one write", []string{"a\nb\nc\n"}, false, "x | a\nx | b\nx | c\n"},
		{"empty lines kept", []string{"a\n\n\nb\n"}, false, "x | a\nx | \nx | \nx | b\n"},
		{"last line flushed at close", []string{"a\nb"}, true, "x | a\nx | b\n"},
		{"last line split over writes flushed at close", []string{"a\nb", "c"}, true, "x | a\nx | bc\n"},
		{"close with nothing pending", []string{"a\n"}, true, "x | a\n"},
		{"CRLF", []string{"a\r\nb\r\n"}, false, "x | a\nx | b\n"},
		{"empty write", []string{"", "a\n", ""}, false, "x | a\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			w := newLineWriter(&out, "x | ")
			for _, s := range tc.writes {
				n, err := w.Write([]byte(s))
				if n != len(s) || err != nil {
					t.Fatalf("Write(%q) = %d, %v; want %d, nil", s, n, err, len(s))
				}
			}
			if tc.close {
				if err := w.Close(); err != nil {
					t.Fatal(err)
				}
			}
			if got := out.String(); got != tc.want {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestLineWriterCloseTwice(t *testing.T) {
	var out bytes.Buffer
	w := newLineWriter(&out, "x | ")
	w.Write([]byte("tail"))
	w.Close()
	w.Close()
	if got, want := out.String(), "x | tail\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestLineWriterCutsEndlessLine(t *testing.T) {
	var out bytes.Buffer
	w := newLineWriter(&out, "> ")
	chunk := strings.Repeat("a", 1000)
	for written := 0; written < maxLine+500; written += len(chunk) {
		w.Write([]byte(chunk))
	}
	lines := strings.Split(out.String(), "\n")
	if len(lines) != 2 || lines[1] != "" {
		t.Fatalf("want one line written so far, got %d pieces", len(lines))
	}
	if got, want := len(lines[0]), len("> ")+maxLine; got != want {
		t.Errorf("first line is %d bytes, want %d", got, want)
	}
	if len(w.buf) >= maxLine {
		t.Errorf("%d bytes still buffered", len(w.buf))
	}
}

// One Write of many lines reaches the terminal as one write, so another
// child's lines cannot land in between.
func TestLineWriterOneWritePerCall(t *testing.T) {
	rec := &recorder{}
	w := newLineWriter(rec, "x | ")
	w.Write([]byte("a\nb\nc"))
	if len(rec.writes) != 1 || rec.writes[0] != "x | a\nx | b\n" {
		t.Errorf("writes = %q", rec.writes)
	}
}

func TestLineWritersShareATerminal(t *testing.T) {
	rec := &recorder{}
	out := &syncWriter{w: rec}
	a, b := newLineWriter(out, "a | "), newLineWriter(out, "b | ")
	var wg sync.WaitGroup
	for _, w := range []*lineWriter{a, b} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 200 {
				// Split mid-line on purpose.
				fmt.Fprintf(w, "line %d ", i)
				fmt.Fprintf(w, "end\n")
			}
		}()
	}
	wg.Wait()
	lines := strings.Split(strings.TrimSuffix(rec.String(), "\n"), "\n")
	if len(lines) != 400 {
		t.Fatalf("%d lines, want 400", len(lines))
	}
	for _, l := range lines {
		if !(strings.HasPrefix(l, "a | line ") || strings.HasPrefix(l, "b | line ")) || !strings.HasSuffix(l, " end") {
			t.Fatalf("mangled line %q", l)
		}
	}
}

func TestPrefix(t *testing.T) {
	for _, tc := range []struct {
		name  string
		width int
		color string
		want  string
	}{
		{"consul", 9, "", "consul   | "},
		{"gateway", 9, "", "gateway  | "},
		{"hello-1", 9, "", "hello-1  | "},
		{"hello-10", 9, "", "hello-10 | "},
		{"jaeger", 9, "\x1b[33m", "\x1b[33mjaeger   |\x1b[0m "},
	} {
		if got := prefix(tc.name, tc.width, tc.color); got != tc.want {
			t.Errorf("prefix(%q) = %q, want %q", tc.name, got, tc.want)
		}
	}
}
