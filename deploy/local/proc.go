package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// proc is one child process of the stack.
type proc struct {
	name string
	path string
	args []string
	env  []string
	out  *lineWriter // the child's stdout and stderr, one pipe

	cmd      *exec.Cmd
	done     chan struct{} // closed once the child has exited and its output is flushed
	waitErr  error         // valid after done
	stopping atomic.Bool   // the stack asked it to stop; its exit is expected
}

// start starts the child in its own process group, so a Ctrl-C at the
// terminal reaches only the runner, which then stops the children in order.
// When the child exits, p is sent on exited.
func (p *proc) start(exited chan<- *proc) error {
	cmd := exec.Command(p.path, p.args...)
	cmd.Env = p.env
	cmd.Stdout = p.out // the same writer twice: exec gives both one pipe,
	cmd.Stderr = p.out // so their lines keep their order
	cmd.SysProcAttr = sysProcAttr()
	// A grandchild that keeps the pipe open must not hold up Wait.
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd = cmd
	p.done = make(chan struct{})
	go func() {
		p.waitErr = cmd.Wait()
		p.out.Close()
		close(p.done)
		exited <- p
	}()
	return nil
}

// running reports whether the child started and has not exited.
func (p *proc) running() bool {
	if p == nil || p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// signal sends sig to the child's whole process group, so whatever it
// started goes too.
func (p *proc) signal(sig syscall.Signal) {
	if p.running() {
		_ = syscall.Kill(-p.cmd.Process.Pid, sig)
	}
}

// status describes how the child exited; call it after done.
func (p *proc) status() string {
	var ee *exec.ExitError
	switch {
	case p.waitErr == nil:
		return "exit status 0"
	case errors.As(p.waitErr, &ee):
		return ee.Error() // "exit status 1", "signal: killed"
	default:
		return p.waitErr.Error()
	}
}

// commandLine is the child's command for the log.
func (p *proc) commandLine() string {
	return strings.Join(append([]string{p.path}, p.args...), " ")
}

// syncWriter serialises whole writes from many goroutines, so lines from
// different children never interleave.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
	// status is the live status line drawn below the output, if any
	// (status.go); statusOff once it was removed for good.
	status    []byte
	statusOff bool
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.status) == 0 {
		return s.w.Write(p)
	}
	_, _ = s.w.Write([]byte("\r\x1b[K"))
	n, err := s.w.Write(p)
	_, _ = s.w.Write(s.status)
	return n, err
}

// maxLine is where a line without a newline is cut and written anyway, so a
// child cannot make the runner buffer without bound.
const maxLine = 64 << 10

// lineWriter writes each line it is given to out with a prefix. It keeps a
// partial line until its newline arrives (or Close), so lines from children
// writing at the same time stay whole. Write errors are dropped: a child
// must never stall or die because the terminal went away.
type lineWriter struct {
	mu     sync.Mutex
	out    io.Writer
	prefix []byte
	buf    []byte // the partial line
	scr    []byte // scratch for the prefixed lines of one Write
}

func newLineWriter(out io.Writer, prefix string) *lineWriter {
	return &lineWriter{out: out, prefix: []byte(prefix)}
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := len(p)
	w.scr = w.scr[:0]
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			for len(w.buf) >= maxLine {
				w.line(w.buf[:maxLine])
				w.buf = append(w.buf[:0], w.buf[maxLine:]...)
			}
			break
		}
		if len(w.buf) > 0 {
			w.buf = append(w.buf, p[:i]...)
			w.line(w.buf)
			w.buf = w.buf[:0]
		} else {
			w.line(p[:i])
		}
		p = p[i+1:]
	}
	if len(w.scr) > 0 {
		_, _ = w.out.Write(w.scr)
	}
	return n, nil
}

// line appends one prefixed line to the scratch buffer.
func (w *lineWriter) line(l []byte) {
	l = bytes.TrimSuffix(l, []byte("\r"))
	w.scr = append(w.scr, w.prefix...)
	w.scr = append(w.scr, l...)
	w.scr = append(w.scr, '\n')
}

// Close writes a final line that has no newline.
func (w *lineWriter) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.buf) > 0 {
		w.scr = w.scr[:0]
		w.line(w.buf)
		w.buf = w.buf[:0]
		_, _ = w.out.Write(w.scr)
	}
	return nil
}

// Printf writes one message as whole lines.
func (w *lineWriter) Printf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if !strings.HasSuffix(msg, "\n") {
		msg += "\n"
	}
	_, _ = w.Write([]byte(msg))
}

// ANSI colors for the name column, used only on a terminal.
const (
	ansiReset   = "\x1b[0m"
	ansiBold    = "\x1b[1m"
	ansiBoldRed = "\x1b[1;31m"
	ansiGreen   = "\x1b[1;32m"
)

var helloColors = []string{"\x1b[32m", "\x1b[34m", "\x1b[92m", "\x1b[94m", "\x1b[96m", "\x1b[95m"}

// prefix is the fixed-width name column: "consul   | ".
func prefix(name string, width int, color string) string {
	col := fmt.Sprintf("%-*s|", width, name)
	if color == "" {
		return col + " "
	}
	return color + col + ansiReset + " "
}

// colorWanted reports whether w is a terminal that wants colors.
func colorWanted(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" || os.Getenv("TERM") == "dumb" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
