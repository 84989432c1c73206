//go:build unix

package gateway

import (
	"net"
	"syscall"
)

// connAlive peeks at an idle connection without blocking: an instance that
// closed it shows as end of file, one that wrote to it unasked (nothing
// should) as data; either way it is not reused.
func connAlive(conn net.Conn) bool {
	sc, ok := conn.(syscall.Conn)
	if !ok {
		return true
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	alive := false
	var buf [1]byte
	err = raw.Read(func(fd uintptr) bool {
		_, _, rerr := syscall.Recvfrom(int(fd), buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		alive = rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK
		return true // one look, never wait
	})
	return err == nil && alive
}

// offerSocket lets the request's last write wait for the answer
// (sendThenAwait) when the connection is a socket.
func (c *upstreamConn) offerSocket() {
	sc, ok := c.conn.(syscall.Conn)
	if !ok {
		return
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return
	}
	c.raw = raw
	c.awaitFn = func(fd uintptr) bool {
		p := c.pending
		if p == nil {
			return true // written, and readable or woken early: the read that follows then waits as usual
		}
		c.pending = nil
		for {
			n, err := syscall.Write(int(fd), p)
			if err == syscall.EINTR {
				continue
			}
			c.sent = max(n, 0)
			// Sent whole: wait. Short or failed: the caller goes on.
			return err != nil || c.sent < len(p)
		}
	}
}

// sendThenAwait writes p straight to the socket and, when all of it went,
// waits until the connection has something to read: the answer. It
// returns how much of p it wrote; the caller writes the rest the usual way.
//
// Go's own read of the answer would first try the socket, which just after
// the request went nearly always holds nothing yet: a system call per
// request, for nothing. Waiting first is safe because the write happens
// inside the wait. Go's poller forgets a readiness that came before a wait
// began, but the answer comes after the request, and so does the reset
// that a request to a closed connection draws. (An instance that shut only
// its side of an idle connection within StaleCheckAfter, and then kept
// still, would be waited for until the try's timeout.)
func (c *upstreamConn) sendThenAwait(p []byte) int {
	c.pending, c.sent = p, 0
	// An error of the wait itself (the connection cut while waiting, or
	// before awaitFn ran) is the next read's or write's to report.
	_ = c.raw.Read(c.awaitFn)
	c.pending = nil
	return c.sent
}
