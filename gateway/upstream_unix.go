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
